"""Write a synthetic RockFrag dataset: images, COCO train/val/test JSON (RLE masks), preview.

Layout written under ``out_dir``::

    train/000000.png ...   val/...   test/...
    train.json  val.json  test.json      (COCO; info.statistics holds the numbers below)
    preview.png                          (first train images above their instance overlays)

Image i of split s is drawn from ``np.random.default_rng([seed, s_index, i])``, so every image
is reproducible on its own and does not depend on how many images the other splits have.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Tuple

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from .masks import encode_mask
from .stats import instance_statistics
from .synthetic import SynthConfig, render_image

SPLITS = ("train", "val", "test")
CATEGORY = {"id": 1, "name": "fragment", "supercategory": "rock"}
PREVIEW_COLUMNS = 4


def image_seed(seed: int, split: str, index: int) -> List[int]:
    """Entropy for image ``index`` of ``split``."""
    return [int(seed), SPLITS.index(split), int(index)]


def instances_to_annotations(
    instances: np.ndarray, image_id: int, first_ann_id: int, category_id: int = 1
) -> List[Dict[str, Any]]:
    """COCO annotations (RLE masks, tight XYWH boxes) for every id > 0 of an instance map."""
    anns = []
    slices = ndimage.find_objects(instances)
    for label, sl in enumerate(slices, start=1):
        if sl is None:
            continue
        mask = instances == label
        area = int(mask[sl].sum())
        y, x = sl[0].start, sl[1].start
        h, w = sl[0].stop - y, sl[1].stop - x
        anns.append(
            {
                "id": first_ann_id + len(anns),
                "image_id": image_id,
                "category_id": category_id,
                "segmentation": encode_mask(mask),
                "area": area,
                "bbox": [float(x), float(y), float(w), float(h)],
                "iscrowd": 0,
            }
        )
    return anns


def _overlay(image: np.ndarray, instances: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Image with each instance tinted a random colour and outlined in black."""
    colours = rng.integers(40, 255, size=(int(instances.max()) + 1, 3)).astype(np.float64)
    inside = instances > 0
    out = image.astype(np.float64)
    out[inside] = 0.45 * out[inside] + 0.55 * colours[instances[inside]]
    edge = np.zeros_like(inside)
    edge[:, 1:] |= instances[:, 1:] != instances[:, :-1]
    edge[1:, :] |= instances[1:, :] != instances[:-1, :]
    out[edge & inside] = 0
    return out.astype(np.uint8)


def write_preview(path: str, samples: List[Tuple[np.ndarray, np.ndarray]]) -> None:
    """Grid: images in one row, their instance overlays in the row below."""
    if not samples:
        return
    cols = min(PREVIEW_COLUMNS, len(samples))
    rng = np.random.default_rng(0)
    top = np.concatenate([s[0] for s in samples[:cols]], axis=1)
    bottom = np.concatenate([_overlay(s[0], s[1], rng) for s in samples[:cols]], axis=1)
    Image.fromarray(np.concatenate([top, bottom], axis=0)).save(path)


def generate_rockfrag_synth(
    out_dir: str,
    *,
    num_images: Dict[str, int],
    config: SynthConfig,
    seed: int = 0,
    preview: bool = True,
    progress: bool = True,
) -> Dict[str, Dict[str, Any]]:
    """Generate the splits in ``num_images`` (e.g. {"train": 40, "val": 10, "test": 10}).

    Returns split -> statistics (see ``sard.data.stats.instance_statistics``); the same
    numbers are stored in each JSON's ``info.statistics``.
    """
    config.validate()
    unknown = set(num_images) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; use {SPLITS}")
    os.makedirs(out_dir, exist_ok=True)
    total = sum(num_images.values())
    bar = tqdm(total=total, desc="rockfrag_synth", unit="img", disable=not progress)
    results, preview_samples = {}, []
    for split in SPLITS:
        count = int(num_images.get(split, 0))
        if count <= 0:
            continue
        os.makedirs(os.path.join(out_dir, split), exist_ok=True)
        images, annotations, areas = [], [], []
        for index in range(count):
            rng = np.random.default_rng(image_seed(seed, split, index))
            pixels, instances = render_image(rng, config)
            file_name = f"{index:06d}.png"
            Image.fromarray(pixels).save(os.path.join(out_dir, split, file_name))
            image_id = index + 1
            images.append(
                {
                    "id": image_id,
                    "file_name": file_name,
                    "height": config.image_size,
                    "width": config.image_size,
                }
            )
            anns = instances_to_annotations(instances, image_id, len(annotations) + 1)
            annotations.extend(anns)
            areas.append([a["area"] for a in anns])
            if split == "train" and len(preview_samples) < PREVIEW_COLUMNS:
                preview_samples.append((pixels, instances))
            bar.update(1)
        stats = instance_statistics(areas, [config.image_size**2] * count)
        coco = {
            "info": {
                "description": "Synthetic RockFrag-style rock fragments (sard.data.synthetic)",
                "version": "1.0",
                "split": split,
                "seed": int(seed),
                "config": config.as_dict(),
                "statistics": stats,
            },
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": [dict(CATEGORY)],
        }
        with open(os.path.join(out_dir, f"{split}.json"), "w", encoding="utf-8") as f:
            json.dump(coco, f)
        results[split] = stats
    bar.close()
    if preview:
        if not preview_samples:  # no train split: preview whatever came first
            preview_samples = _first_samples(out_dir, results, config, seed)
        write_preview(os.path.join(out_dir, "preview.png"), preview_samples)
    return results


def _first_samples(out_dir: str, results: Dict[str, Any], config: SynthConfig, seed: int):
    if not results:
        return []
    split = next(iter(results))
    samples = []
    for index in range(min(PREVIEW_COLUMNS, results[split]["images"])):
        samples.append(render_image(np.random.default_rng(image_seed(seed, split, index)), config))
    return samples

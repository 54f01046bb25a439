"""The ``mnfinder`` package's microscopy data -> COCO (nuclei and micronuclei).

mnfinder ships real annotated DAPI images (``pip install --no-deps mnfinder``, ~68 MB wheel,
~95 MB installed). Its package is NEVER imported here (that pulls in TensorFlow): the data
folder is located with ``importlib.util.find_spec``, which does not run the package.

Layout inside the package: ``{training,validation,test}-data/<experiment>/`` with
``images/<stem>.tif`` (8- or 16-bit grayscale), ``nucleus_masks/<stem>.png`` and
``mn_masks/<stem>.png`` (RGBA). Meaning of the masks, as mnfinder's own loader reads them:

* nucleus k = pixels whose blue channel is k (k > 0);
* a micronucleus = pixels of one (blue, green) pair with blue > 0 (blue = its parent nucleus),
  split into 8-connected pieces (mnfinder labels them the same way).

Micronucleus pixels are removed from the nuclei (mnfinder's ground truth does the same), so
instances do not overlap. Output: ``<out>/{train,val,test}/<experiment>__<stem>.png`` (8-bit
RGB, 16-bit stretched by percentiles) and ``<out>/{train,val,test}.json`` with categories
1 "nucleus" and 2 "micronucleus".
"""

from __future__ import annotations

import importlib.util
import os
import re
from glob import glob
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from .converters import mask_annotation, write_coco_split
from .image_io import read_image
from .problems import DatasetError, ProblemLog

MNFINDER_SPLITS = {"train": "training-data", "val": "validation-data", "test": "test-data"}
MNFINDER_CATEGORIES = [
    {"id": 1, "name": "nucleus", "supercategory": "cell"},
    {"id": 2, "name": "micronucleus", "supercategory": "cell"},
]
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def find_mnfinder_package() -> str | None:
    """Directory of the installed mnfinder package, or None; does not import it."""
    spec = importlib.util.find_spec("mnfinder")
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return list(spec.submodule_search_locations)[0]
    return os.path.dirname(spec.origin) if spec.origin else None


def list_mnfinder_samples(package_dir: str, split: str) -> List[Tuple[str, str, str, str]]:
    """[(name, image .tif, nucleus mask, mn mask)] of a split, sorted, as mnfinder lists them."""
    root = os.path.join(package_dir, MNFINDER_SPLITS[split])
    if not os.path.isdir(root):
        raise FileNotFoundError(f"mnfinder data folder not found: {root}")
    samples = []
    for experiment in sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))):
        folder = os.path.join(root, experiment)
        for mn_path in sorted(glob(os.path.join(folder, "mn_masks", "*"))):
            name = os.path.basename(mn_path)
            if name.startswith("."):
                continue
            stem = os.path.splitext(name)[0]
            image = os.path.join(folder, "images", stem + ".tif")
            nucleus = os.path.join(folder, "nucleus_masks", name)
            for path in (image, nucleus):
                if not os.path.isfile(path):
                    raise DatasetError(f"mnfinder sample {mn_path}: missing {path}")
            safe = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{experiment}__{stem}")
            samples.append((safe, image, nucleus, mn_path))
    return samples


def _read_rgba(path: str) -> np.ndarray:
    array = np.asarray(Image.open(path))
    if array.ndim != 3 or array.shape[2] < 3:
        raise DatasetError(f"{path}: expected an RGB(A) mnfinder mask, got shape {array.shape}")
    return array


def mnfinder_instances(nucleus_path: str, mn_path: str) -> List[Tuple[int, np.ndarray]]:
    """[(category id, bool mask)]: nuclei (1) then micronuclei (2), see the module docstring."""
    nuclei, mn = _read_rgba(nucleus_path), _read_rgba(mn_path)
    if nuclei.shape[:2] != mn.shape[:2]:
        raise DatasetError(f"{mn_path}: size {mn.shape[:2]} differs from {nucleus_path}")
    mn_parent, mn_colour = mn[..., 2].astype(np.int64), mn[..., 1].astype(np.int64)
    mn_pixels = mn_parent > 0
    out = []
    nucleus_ids = nuclei[..., 2].astype(np.int64)
    for value in np.unique(nucleus_ids[nucleus_ids > 0]):
        mask = (nucleus_ids == value) & ~mn_pixels
        if mask.any():
            out.append((1, mask))
    keys = mn_parent * 256 + mn_colour
    for key in np.unique(keys[mn_pixels]):
        pieces, count = ndimage.label(keys == key, structure=_EIGHT_CONNECTED)
        for piece in range(1, count + 1):
            out.append((2, pieces == piece))
    return out


def mnfinder_to_coco(
    out_dir: str,
    *,
    package_dir: str | None = None,
    splits: Sequence[str] = ("train", "val", "test"),
    progress: bool = True,
) -> Dict[str, Dict[str, Any]]:
    """Convert mnfinder's splits; returns split -> statistics."""
    package_dir = package_dir or find_mnfinder_package()
    if package_dir is None:
        raise ModuleNotFoundError("mnfinder is not installed: pip install --no-deps mnfinder")
    results = {}
    for split in splits:
        if split not in MNFINDER_SPLITS:
            raise ValueError(f"unknown mnfinder split {split!r}; use {tuple(MNFINDER_SPLITS)}")
        samples = list_mnfinder_samples(package_dir, split)
        log = ProblemLog(source=f"mnfinder_to_coco({split})")
        image_dir = os.path.join(out_dir, split)
        os.makedirs(image_dir, exist_ok=True)
        images, annotations = [], []
        for image_id, (name, image_path, nucleus_path, mn_path) in enumerate(
            tqdm(samples, desc=f"mnfinder {split}", unit="img", disable=not progress), start=1
        ):
            pixels = read_image(image_path)
            instances = mnfinder_instances(nucleus_path, mn_path)
            if instances and instances[0][1].shape != pixels.shape[:2]:
                raise DatasetError(
                    f"{image_path}: image size {pixels.shape[:2]} differs from "
                    f"its masks {instances[0][1].shape}"
                )
            file_name = name + ".png"
            Image.fromarray(pixels).save(os.path.join(image_dir, file_name))
            height, width = pixels.shape[:2]
            images.append(
                {"id": image_id, "file_name": file_name, "height": height, "width": width}
            )
            if not instances:
                log.warn("images without instances (kept)", image_path)
            for category_id, mask in instances:
                annotations.append(
                    mask_annotation(mask, len(annotations) + 1, image_id, category_id)
                )
        log.emit_warnings()
        results[split] = write_coco_split(
            out_dir,
            split,
            images,
            annotations,
            [dict(c) for c in MNFINDER_CATEGORIES],
            "mnfinder microscopy data (nuclei, micronuclei)",
        )
    return results

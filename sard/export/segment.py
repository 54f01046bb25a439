"""Segment every object of one image from many prompts, and write COCO results.

Prompts come from a COCO file's annotations of that image (boxes, or one interior point per
object) or from a regular grid of points. Boxes are taken as inclusive pixel bounds,
``[x, y, x + w - 1, y + h - 1]`` for a COCO ``[x, y, w, h]``: the convention of the boxes the
student was trained on (``sard.data.prompts``: the tight box of the mask's pixel indices).
Interior points are the training mapper's evaluation points (``sample_prompts``, most interior
pixel of the mask).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
import torch

from sard.data.masks import decode_instances, encode_mask, segmentation_problem
from sard.data.prompts import sample_prompts
from sard.prompt_labels import LABEL_POS

from .predictor import trained_multimask

logger = logging.getLogger(__name__)

PROMPT_KINDS = ("box", "point")


@dataclass
class PromptSet:
    """Q prompts for one image, in original-image pixels: boxes (Q, 4) xyxy or points
    (Q, N, 2) + labels (Q, N); ``category_ids`` (Q,) for the results."""

    image_id: Any
    category_ids: np.ndarray
    boxes: Optional[np.ndarray] = None
    points: Optional[np.ndarray] = None
    labels: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.category_ids)


def find_coco_image(coco: Dict[str, Any], image_path: str, image_id: Any = None) -> Dict:
    """The ``images`` entry for ``image_id``, else the one whose file_name ends like the image."""
    images = coco.get("images", [])
    if image_id is not None:
        found = [im for im in images if str(im.get("id")) == str(image_id)]
        if not found:
            raise KeyError(f"image id {image_id!r} is not in the COCO file's images")
        return found[0]
    name = os.path.basename(image_path)
    found = [im for im in images if os.path.basename(str(im.get("file_name", ""))) == name]
    if len(found) != 1:
        what = "no image" if not found else f"{len(found)} images"
        raise KeyError(
            f"{what} named {name!r} in the COCO file ({len(images)} images); pass --image-id"
        )
    return found[0]


def prompts_from_coco(
    coco: Dict[str, Any], image: Dict[str, Any], kind: str, hw: Tuple[int, int]
) -> PromptSet:
    """One prompt per non-crowd annotation of ``image``: its box, or its most interior point
    (annotations whose mask is empty fall back to their box centre)."""
    if kind not in PROMPT_KINDS:
        raise ValueError(f"prompt kind must be one of {PROMPT_KINDS}, got {kind!r}")
    anns = [
        a
        for a in coco.get("annotations", [])
        if a.get("image_id") == image["id"] and not a.get("iscrowd", 0)
    ]
    cats = np.array([int(a.get("category_id", 1)) for a in anns], dtype=np.int64)
    boxes = np.zeros((len(anns), 4), dtype=np.float64)
    for i, a in enumerate(anns):
        if "bbox" not in a:
            raise KeyError(f"annotation {a.get('id')} of image {image['id']} has no bbox")
        bbox = a["bbox"]
        if not (
            isinstance(bbox, list)
            and len(bbox) == 4
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)
        ):
            raise ValueError(
                f"annotation {a.get('id')} of image {image['id']} has bbox {bbox!r}; expected "
                "[x, y, width, height] of 4 finite numbers"
            )
        x, y, w, h = (float(v) for v in bbox)
        boxes[i] = (x, y, x + max(w - 1.0, 0.0), y + max(h - 1.0, 0.0))
    if kind == "box":
        return PromptSet(image["id"], cats, boxes=boxes)
    points = ((boxes[:, :2] + boxes[:, 2:]) / 2)[:, None]
    with_mask = [i for i, a in enumerate(anns) if a.get("segmentation")]
    for i in with_mask:  # pycocotools would write out of bounds on corrupt RLE counts
        problem = segmentation_problem(anns[i]["segmentation"], *hw)
        if problem is not None:
            raise ValueError(f"annotation {anns[i].get('id')} of image {image['id']}: {problem}")
    if with_mask:
        masks, _, areas = decode_instances([anns[i]["segmentation"] for i in with_mask], *hw)
        keep = np.flatnonzero(areas > 0)
        if keep.size:
            _, inner, _ = sample_prompts(
                np.ascontiguousarray(masks[keep]),
                hw,
                prompt_type="point",
                num_points=1,
                num_neg_points=0,
                box_jitter=0.0,
                rng=np.random.default_rng(0),
                deterministic=True,
            )
            points[np.asarray(with_mask)[keep]] = inner
    labels = np.full(points.shape[:2], LABEL_POS, dtype=np.int64)
    return PromptSet(image["id"], cats, points=points, labels=labels)


def grid_prompts(n: int, hw: Tuple[int, int], image_id: Any = 0) -> PromptSet:
    """n x n foreground points at the cell centres, x = (i + 0.5) W / n - 0.5 (pixel index)."""
    if n < 1:
        raise ValueError(f"grid size must be >= 1, got {n}")
    h, w = hw
    xs = (np.arange(n) + 0.5) * w / n - 0.5
    ys = (np.arange(n) + 0.5) * h / n - 0.5
    gx, gy = np.meshgrid(xs, ys)
    points = np.stack([gx.ravel(), gy.ravel()], axis=1)[:, None].clip(0, None)
    labels = np.full(points.shape[:2], LABEL_POS, dtype=np.int64)
    return PromptSet(image_id, np.ones(n * n, dtype=np.int64), points=points, labels=labels)


def prompt_chunks(prompts: PromptSet, chunk: int) -> Iterator[slice]:
    """Consecutive slices of at most ``chunk`` prompts."""
    for start in range(0, len(prompts), chunk):
        yield slice(start, min(start + chunk, len(prompts)))


def segment_chunk(predictor, prompts: PromptSet, sl: slice) -> Tuple[np.ndarray, np.ndarray]:
    """Best-scoring multimask output per prompt of ``prompts[sl]`` (the single mask for a model
    trained without, ``sard.multimask``): masks (q, H, W) bool and scores (q,) (the predicted
    IoU), as the distiller's evaluation picks them."""
    size = predictor.original_size
    to = predictor.transform
    coords = labels = boxes = None
    if prompts.points is not None:
        coords = torch.as_tensor(to.apply_coords(prompts.points[sl], size), dtype=torch.float32)
        labels = torch.as_tensor(prompts.labels[sl])
    if prompts.boxes is not None:
        boxes = torch.as_tensor(to.apply_boxes(prompts.boxes[sl], size), dtype=torch.float32)
    multimask = trained_multimask(predictor, labels, boxes)
    masks, iou, _ = predictor.predict_torch(coords, labels, boxes, multimask_output=multimask)
    best = iou.argmax(dim=1)
    idx = torch.arange(best.numel(), device=best.device)
    return masks[idx, best].cpu().numpy(), iou[idx, best].cpu().numpy()


def coco_results(
    image_id: Any, category_ids: Sequence[int], masks: Sequence[np.ndarray], scores: Sequence[float]
) -> List[Dict[str, Any]]:
    """COCO results entries, one per mask: image_id, category_id, segmentation (compressed
    RLE), bbox (xywh), area, score."""
    results = []
    for cat, mask, score in zip(category_ids, masks, scores):
        rle = encode_mask(mask)
        coded = {"size": rle["size"], "counts": rle["counts"].encode()}
        results.append(
            {
                "image_id": image_id,
                "category_id": int(cat),
                "segmentation": rle,
                "bbox": [float(v) for v in mask_util.toBbox(coded)],
                "area": float(mask_util.area(coded)),
                "score": float(score),
            }
        )
    return results


def suppress_duplicates(results: List[Dict[str, Any]], iou_threshold: float) -> List[Dict]:
    """Greedy non-maximum suppression on mask IoU (for grid prompts, where several points
    land on the same object): keep results by descending score, drop any whose mask IoU with a
    kept one exceeds ``iou_threshold``. Empty masks are dropped."""
    order = sorted((r for r in results if r["area"] > 0), key=lambda r: r["score"], reverse=True)
    kept: List[Dict[str, Any]] = []
    kept_rles: List[Dict[str, Any]] = []
    for r in order:
        seg = r["segmentation"]
        rle = {"size": seg["size"], "counts": seg["counts"].encode()}
        if kept_rles:
            ious = mask_util.iou([rle], kept_rles, [0] * len(kept_rles))
            if np.max(ious) > iou_threshold:
                continue
        kept.append(r)
        kept_rles.append(rle)
    return kept

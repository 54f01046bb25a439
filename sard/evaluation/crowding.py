"""Crowding of GT instances: how many other instances each one touches."""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from .boundary import MaskLike, as_bool_masks
from .paired import mask_bboxes

_KERNEL_3X3 = np.ones((3, 3), dtype=np.uint8)
# Half of the 8-neighbourhood: every unordered pair of adjacent pixels is seen exactly once.
_HALF_NEIGHBOURHOOD = ((0, 1), (1, 0), (1, 1), (1, -1))


def touching_neighbour_counts(masks: MaskLike, boxes: Optional[np.ndarray] = None) -> np.ndarray:
    """n_i = #{j != i : dilate_3x3(M_i) & M_j is not empty} for a (Q, H, W) stack of GT masks.

    Two instances touch when some pixels of theirs are 8-connected neighbours or overlap. Only
    instances in the stack are counted (for the promptable evaluator: the GT instances that were
    prompted in that image). `boxes` are the masks' `mask_bboxes`, passed in to avoid a rescan.
    """
    m = as_bool_masks(masks, "touching_neighbour_counts(masks)", 3)
    q = m.shape[0]
    if q < 2:
        return np.zeros(q, dtype=np.int64)
    if boxes is None:
        boxes = mask_bboxes(m)
    labels = _paint_labels(m, boxes)
    if labels is None:  # overlapping masks cannot share one label map
        return _touching_counts_pairwise(m, boxes)
    return _touching_counts_from_labels(labels, q)


def _paint_labels(m: np.ndarray, boxes: np.ndarray) -> Optional[np.ndarray]:
    """Label map with i + 1 on the pixels of mask i, or None if two masks share a pixel."""
    labels = np.zeros(m.shape[1:], dtype=np.int32)
    painted = 0
    for i in np.flatnonzero(boxes[:, 1] > 0).tolist():
        y0, y1, x0, x1 = boxes[i].tolist()
        mine = m[i, y0:y1, x0:x1]
        np.copyto(labels[y0:y1, x0:x1], i + 1, where=mine)
        painted += cv2.countNonZero(mine.view(np.uint8))
    # A later mask overwrites shared pixels, so overlap shows as fewer labelled pixels.
    return labels if np.count_nonzero(labels) == painted else None


def _touching_counts_from_labels(labels: np.ndarray, q: int) -> np.ndarray:
    """Count distinct labelled neighbours per label over all 8-adjacent pixel pairs."""
    h, w = labels.shape
    keys = []
    for dy, dx in _HALF_NEIGHBOURHOOD:
        a = labels[: h - dy, max(0, -dx) : w - max(0, dx)]
        b = labels[dy:, max(0, dx) : w - max(0, -dx)]
        changes = a != b
        a, b = a[changes], b[changes]
        both = (a > 0) & (b > 0)
        a, b = a[both].astype(np.int64), b[both].astype(np.int64)
        keys.append(np.minimum(a, b) * (q + 1) + np.maximum(a, b))
    pairs = np.unique(np.concatenate(keys))
    ends = np.concatenate([pairs // (q + 1), pairs % (q + 1)]) - 1
    return np.bincount(ends, minlength=q).astype(np.int64)


def _touching_counts_pairwise(m: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """General (overlap-safe) path: dilate each mask on its grown box and test later masks."""
    q, h, w = m.shape
    counts = np.zeros(q, dtype=np.int64)
    nonempty = boxes[:, 1] > 0
    grown = boxes + np.array([-1, 1, -1, 1])
    grown[:, 0::2] = np.maximum(grown[:, 0::2], 0)
    grown[:, 1] = np.minimum(grown[:, 1], h)
    grown[:, 3] = np.minimum(grown[:, 3], w)
    # Box test for all pairs at once; the mask test below only runs on the survivors.
    near = (
        (boxes[None, :, 0] < grown[:, None, 1])
        & (boxes[None, :, 1] > grown[:, None, 0])
        & (boxes[None, :, 2] < grown[:, None, 3])
        & (boxes[None, :, 3] > grown[:, None, 2])
        & nonempty[None, :]
        & nonempty[:, None]
    )
    near = np.triu(near, k=1)
    for i in np.flatnonzero(near.any(axis=1)).tolist():
        y0, y1, x0, x1 = grown[i].tolist()
        candidates = np.flatnonzero(near[i])
        reach = cv2.dilate(m[i, y0:y1, x0:x1].view(np.uint8), _KERNEL_3X3).astype(bool)
        touching = candidates[(m[candidates, y0:y1, x0:x1] & reach).any(axis=(1, 2))]
        counts[i] += touching.size
        counts[touching] += 1
    return counts

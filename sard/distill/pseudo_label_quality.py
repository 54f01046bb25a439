"""How good are the teacher's pseudo-labels? Pseudo-masks against ground-truth instances.

For one image with P pseudo-masks and G ground-truth masks, IoU(p, g) = |p ∩ g| / |p ∪ g|.

* matches: one-to-one, greedily by decreasing IoU, pairs with IoU >= ``iou_thresh`` (0.5);
  precision = matches / P, recall = matches / G (COCO's notion of a detected object);
* best IoU of each ground-truth object: max_p IoU(p, g) (0 without pseudo-masks); its mean over
  the objects (x100) says how well the teacher's masks cover the objects, even when split or
  merged.

``accumulate`` sums the counts over images, so dataset precision and recall weigh every mask
and object equally.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np


def iou_matrix(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(P, G) IoUs of bool masks pred (P, H, W) and gt (G, H, W); 0 where both are empty."""
    pixels = int(np.prod(gt.shape[1:]))
    p = pred.reshape(len(pred), pixels).astype(np.float32)
    g = gt.reshape(len(gt), pixels).astype(np.float32)
    inter = p @ g.T
    union = p.sum(1)[:, None] + g.sum(1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def greedy_matches(ious: np.ndarray, iou_thresh: float) -> int:
    """Number of one-to-one pairs with IoU >= ``iou_thresh``, matched by decreasing IoU."""
    if ious.size == 0:
        return 0
    order = np.argsort(-ious, axis=None, kind="stable")
    used_p, used_g, count = set(), set(), 0
    for flat in order:
        i, j = np.unravel_index(flat, ious.shape)
        if ious[i, j] < iou_thresh:
            break
        if i in used_p or j in used_g:
            continue
        used_p.add(i)
        used_g.add(j)
        count += 1
    return count


@dataclass
class LabelQuality:
    """Counts over images: pseudo-masks, objects, matches, and every object's best IoU."""

    iou_thresh: float = 0.5
    pseudo: int = 0
    objects: int = 0
    matches: int = 0
    best_ious: List[float] = field(default_factory=list)
    images: int = 0

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one image: pred (P, H, W) and gt (G, H, W) bool masks."""
        ious = iou_matrix(pred, gt)
        self.images += 1
        self.pseudo += len(pred)
        self.objects += len(gt)
        self.matches += greedy_matches(ious, self.iou_thresh)
        best = ious.max(axis=0) if len(pred) else np.zeros(len(gt))
        self.best_ious.extend(float(v) for v in best)

    def summary(self) -> Dict[str, float]:
        """precision, recall (x100, at iou_thresh), best-mask mIoU (x100), masks and objects per
        image."""
        n = max(self.images, 1)
        return {
            "precision": 100.0 * self.matches / max(self.pseudo, 1),
            "recall": 100.0 * self.matches / max(self.objects, 1),
            "best_mIoU": 100.0 * float(np.mean(self.best_ious)) if self.best_ious else 0.0,
            "masks_per_image": self.pseudo / n,
            "objects_per_image": self.objects / n,
            "images": float(self.images),
        }

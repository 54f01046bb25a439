"""Trivial answers to box prompts: what a model must beat before it has learned from the image.

Two answers that never look at the image, scored with the evaluator's IoU and boundary IoU:

- ``box``: the prompt box filled, the floor every results table shows (``box_fill_scores``;
  the evaluator's ``box_mIoU`` / ``box_bIoU``);
- ``ellipse``: the ellipse inscribed in the prompt box, filled. Pixel (y, x) is inside when its
  centre satisfies ((y + ½ − c_y) / r_y)² + ((x + ½ − c_x) / r_x)² ≤ 1 with c = the box centre
  and r = half the box side (box [y0, y1) × [x0, x1): c_y = (y0 + y1)/2, r_y = (y1 − y0)/2).
  A shape prior for compact objects (rock fragments, grains, nuclei): a model that beats the
  filled box but not this ellipse may have learned a shape, not the image.

The prompt box is each ground-truth mask's tight box, as the evaluator's box prompts are without
jitter.
"""

from __future__ import annotations

from typing import Dict

import numpy as np

from .boundary import MaskLike, as_bool_masks
from .paired import PairScores, box_fill_scores, mask_bboxes, paired_mask_scores

FLOORS = ("box", "ellipse")


def inscribed_ellipse_masks(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """(Q, H, W) bool: the filled ellipse inscribed in each box (y0, y1, x0, x1), half-open, as
    in the module docstring; an empty box gives an empty mask."""
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    out = np.zeros((len(boxes), height, width), dtype=bool)
    for q, (y0, y1, x0, x1) in enumerate(boxes):
        if y1 <= y0 or x1 <= x0:
            continue
        ys = (np.arange(y0, y1) + 0.5 - (y0 + y1) / 2) / ((y1 - y0) / 2)
        xs = (np.arange(x0, x1) + 0.5 - (x0 + x1) / 2) / ((x1 - x0) / 2)
        out[q, y0:y1, x0:x1] = ys[:, None] ** 2 + xs[None, :] ** 2 <= 1.0
    return out


def prompt_floor_scores(gt_masks: MaskLike, dilation_ratio: float = 0.02) -> Dict[str, PairScores]:
    """{"box": ..., "ellipse": ...}: per-instance IoU and boundary IoU of each trivial answer
    against its own ground-truth mask (Q, H, W), d = ``dilation_ratio`` of the diagonal."""
    gt = as_bool_masks(gt_masks, "prompt_floor_scores(gt_masks)", 3)
    boxes = mask_bboxes(gt)
    ellipses = inscribed_ellipse_masks(boxes, *gt.shape[1:])
    return {
        "box": box_fill_scores(gt, dilation_ratio, boxes),
        "ellipse": paired_mask_scores(gt, ellipses, dilation_ratio),
    }

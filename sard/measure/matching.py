"""How many ground-truth objects a segmentation found: recall at a mask-IoU threshold.

With ground truth that labels only some of the objects (as real grain photos often do), the
precision of an automatic segmentation cannot be measured, but its recall can: the fraction of
labelled objects that some predicted mask covers with IoU >= t, IoU = |G ∩ P| / |G ∪ P|.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util

from sard.data.masks import to_compressed_rle


def matched_objects(
    gt: Sequence, pred: Sequence, hw: Sequence[int], threshold: float = 0.5
) -> Tuple[int, int]:
    """(matched, total): ground-truth segmentations (COCO polygons or RLE) of an (H, W) image
    with a predicted segmentation at IoU >= ``threshold`` (a prediction may match several)."""
    h, w = (int(v) for v in hw)
    if not gt:
        return 0, 0
    if not pred:
        return 0, len(gt)
    g = [to_compressed_rle(s, h, w) for s in gt]
    p = [to_compressed_rle(s, h, w) for s in pred]
    iou = np.asarray(mask_util.iou(p, g, [0] * len(g))).reshape(len(p), len(g))
    return int((iou.max(axis=0) >= threshold).sum()), len(g)

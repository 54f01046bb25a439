"""Fast, exact IoU and boundary IoU for many (GT, prediction) mask pairs of one image.

Each pair is cut to the bounding box of its two masks, and all crops are packed side by side into
one atlas with a one-pixel zero gutter around every crop, so a single erosion serves all pairs.
The gutter is enough: a pixel survives erosion only if its whole (2d+1)-square is foreground, and
any square that leaves its crop crosses the surrounding gutter, exactly as it would cross zeros
(outside the mask or outside the image) in the full-image computation. Per-pair counts come from
one histogram of (pair id, pixel code). Numbers are identical to `mask_iou` / `boundary_iou`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import cv2
import numpy as np
import torch

from .boundary import MaskLike, as_bool_masks, boundary_dilation, erode_zero_border


@dataclass
class PairScores:
    """Per-pair results of `paired_mask_scores`, one entry per (GT, prediction) pair.

    gt_area: |G| in pixels (int64); iou and boundary_iou in [0, 1] (float64); gt_boxes: the GT
    masks' `mask_bboxes` (Q, 4), kept so callers need not scan the masks again.
    """

    gt_area: np.ndarray
    iou: np.ndarray
    boundary_iou: np.ndarray
    gt_boxes: np.ndarray


def mask_bboxes(masks: np.ndarray) -> np.ndarray:
    """Tight boxes (y0, y1, x0, x1), half-open, of a (Q, H, W) bool stack; empty masks -> zeros.

    Only the row scan touches every pixel; columns are scanned inside each mask's row band.
    """
    q, h, w = masks.shape
    boxes = np.zeros((q, 4), dtype=np.int64)
    if q == 0 or h == 0 or w == 0:
        return boxes
    m8 = np.ascontiguousarray(masks).view(np.uint8)
    # The row scan reads every pixel, so it is memory-bound: read eight pixels per int64 word
    # (0/1 bytes never set the sign bit). torch's amax streams this at memory speed, about
    # twice as fast as numpy's integer max-reduction along the last axis.
    words = torch.from_numpy(m8.view(np.int64) if w % 8 == 0 else m8)
    row_any = (words.amax(dim=2) != 0).numpy()
    y0s = row_any.argmax(axis=1)
    y1s = h - row_any[:, ::-1].argmax(axis=1)
    for i in np.flatnonzero(row_any.any(axis=1)).tolist():
        y0, y1 = int(y0s[i]), int(y1s[i])
        x, _, bw, _ = cv2.boundingRect(m8[i, y0:y1])  # SIMD scan of the row band only
        boxes[i] = (y0, y1, x, x + bw)
    return boxes


def pack_shelves(
    heights: np.ndarray, widths: np.ndarray
) -> Tuple[np.ndarray, np.ndarray, int, int]:
    """Place boxes on shelves of a roughly square atlas: (ys, xs, atlas_height, atlas_width).

    Boxes are taken tallest first so each shelf wastes little height; they never overlap.
    """
    n = len(heights)
    ys, xs = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    if n == 0:
        return ys, xs, 0, 0
    area = int((heights * widths).sum())
    atlas_w = max(int(widths.max()), int(np.ceil(np.sqrt(area))))
    x = y = shelf_h = 0
    for i in np.argsort(-heights, kind="stable").tolist():
        h, w = int(heights[i]), int(widths[i])
        if x + w > atlas_w:
            x, y, shelf_h = 0, y + shelf_h, 0
        ys[i], xs[i] = y, x
        x += w
        shelf_h = max(shelf_h, h)
    return ys, xs, y + shelf_h, atlas_w


# Pixel code bits in the atlas histogram.
_G, _P, _BG, _BP = 1, 2, 4, 8
# Crop pixels per atlas: bounds memory (about 15 bytes per atlas pixel) when masks are large.
_ATLAS_PIXELS = 1 << 22


def _atlas_counts(
    g8: np.ndarray, p8: np.ndarray, pairs: np.ndarray, boxes: np.ndarray, dilation: int
) -> np.ndarray:
    """(n, 16) histogram of pixel codes (G, P, B(G), B(P) bits) per pair, from one atlas.

    boxes: (n, 4) union boxes (y0, y1, x0, x1) of the n pairs `pairs` (indices into g8/p8).
    """
    # +1: each crop owns the zero gutter on its right and bottom; the atlas edge is zero-padded.
    ys, xs, atlas_h, atlas_w = pack_shelves(
        boxes[:, 1] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 2] + 1
    )
    g_atlas = np.zeros((atlas_h, atlas_w), dtype=np.uint8)
    p_atlas = np.zeros_like(g_atlas)
    ids = np.zeros((atlas_h, atlas_w), dtype=np.int32)
    places = zip(pairs.tolist(), ys.tolist(), xs.tolist(), boxes.tolist())
    for k, (i, ay, ax, (y0, y1, x0, x1)) in enumerate(places):
        window = (slice(ay, ay + y1 - y0), slice(ax, ax + x1 - x0))
        g_atlas[window] = g8[i, y0:y1, x0:x1]
        p_atlas[window] = p8[i, y0:y1, x0:x1]
        ids[window] = k
    bg = g_atlas - erode_zero_border(g_atlas, dilation)
    bp = p_atlas - erode_zero_border(p_atlas, dilation)
    code = g_atlas * _G + p_atlas * _P + bg * _BG + bp * _BP
    # Gutter pixels land in pair 0's histogram with code 0, which no count reads.
    keys = ids.astype(np.int64) * 16 + code
    return np.bincount(keys.ravel(), minlength=16 * len(pairs)).reshape(len(pairs), 16)


def paired_mask_scores(
    gt_masks: MaskLike, pred_masks: MaskLike, dilation_ratio: float = 0.02
) -> PairScores:
    """IoU and boundary IoU of pairs (gt_masks[i], pred_masks[i]), both (Q, H, W) full-image masks.

    Identical to `mask_iou` and `boundary_iou` per pair (both empty -> 1.0, one empty -> 0.0),
    with d from the full image size; the work scales with the instances' size, not the image's.
    """
    gt = as_bool_masks(gt_masks, "paired_mask_scores(gt_masks)", 3)
    pred = as_bool_masks(pred_masks, "paired_mask_scores(pred_masks)", 3)
    if gt.shape != pred.shape:
        raise ValueError(f"paired_mask_scores: gt {gt.shape} and pred {pred.shape} differ")
    q, h, w = gt.shape
    area = np.zeros(q, dtype=np.int64)
    iou, biou = np.ones(q, dtype=np.float64), np.ones(q, dtype=np.float64)
    if q == 0:
        return PairScores(area, iou, biou, np.zeros((0, 4), dtype=np.int64))
    d = boundary_dilation(h, w, dilation_ratio)
    tight_gt_boxes = mask_bboxes(gt)
    gt_boxes, pred_boxes = tight_gt_boxes.copy(), mask_bboxes(pred)
    # Give empty masks an inverted box (y0 = H, y1 = 0, ...) so min/max ignore them.
    for boxes in (gt_boxes, pred_boxes):
        boxes[boxes[:, 1] == 0] = (h, 0, w, 0)
    lo, hi = np.minimum(gt_boxes, pred_boxes), np.maximum(gt_boxes, pred_boxes)
    union_boxes = np.stack([lo[:, 0], hi[:, 1], lo[:, 2], hi[:, 3]], axis=1)
    pairs = np.flatnonzero(union_boxes[:, 1] > 0)  # pairs with both masks empty keep 1.0
    if pairs.size == 0:
        return PairScores(area, iou, biou, tight_gt_boxes)
    union_boxes = union_boxes[pairs]
    crop_pixels = (union_boxes[:, 1] - union_boxes[:, 0]) * (union_boxes[:, 3] - union_boxes[:, 2])
    chunk = np.cumsum(crop_pixels) // _ATLAS_PIXELS
    g8, p8 = gt.view(np.uint8), pred.view(np.uint8)
    hist = np.concatenate(
        [
            _atlas_counts(g8, p8, pairs[chunk == c], union_boxes[chunk == c], d)
            for c in np.unique(chunk)
        ]
    )
    area[pairs], iou[pairs], biou[pairs] = _pair_counts(hist)
    return PairScores(area, iou, biou, tight_gt_boxes)


def _pair_counts(hist: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(|G|, IoU, boundary IoU) per pair from the (n, 16) pixel-code histogram of `_atlas_counts`.

    Every pair here has at least one non-empty mask, so union > 0, and a non-empty mask has a
    non-empty boundary (its outermost pixels never survive erosion), so b_union > 0.
    """
    codes = np.arange(16)

    def count(bits: int) -> np.ndarray:
        return hist[:, (codes & bits) == bits].sum(axis=1)

    inter, b_inter = count(_G | _P), count(_BG | _BP)
    union = count(_G) + count(_P) - inter
    b_union = count(_BG) + count(_BP) - b_inter
    return count(_G), inter / union, b_inter / b_union


def box_fill_scores(
    gt_masks: MaskLike, dilation_ratio: float = 0.02, gt_boxes: np.ndarray | None = None
) -> PairScores:
    """The prompt-box floor: IoU and boundary IoU of each GT mask against its own tight box,
    filled, as a full-image prediction (Q, H, W).

    Equal to ``paired_mask_scores(gt, boxes_filled)`` with boxes_filled[i] = 1 on
    [y0, y1) x [x0, x1) of ``mask_bboxes(gt)[i]``, without building that stack: the filled box
    is a constant view, so the cost is the GT crops' size. A box-prompted model scoring below
    this has learned nothing beyond its prompt. Empty GT masks score 1.0 (both masks empty).
    ``gt_boxes``: the masks' `mask_bboxes`, when the caller has them already.
    """
    gt = as_bool_masks(gt_masks, "box_fill_scores(gt_masks)", 3)
    q, h, w = gt.shape
    boxes = mask_bboxes(gt) if gt_boxes is None else np.asarray(gt_boxes, dtype=np.int64)
    if boxes.shape != (q, 4):
        raise ValueError(f"box_fill_scores: gt_boxes must be ({q}, 4), got {boxes.shape}")
    area = np.zeros(q, dtype=np.int64)
    iou, biou = np.ones(q, dtype=np.float64), np.ones(q, dtype=np.float64)
    pairs = np.flatnonzero(boxes[:, 1] > boxes[:, 0])
    if pairs.size:
        d = boundary_dilation(h, w, dilation_ratio)
        # The filled box of pair i is all ones on its own crop: one broadcast view serves all.
        ones = np.broadcast_to(np.ones((1, 1, 1), dtype=np.uint8), gt.shape)
        crops = boxes[pairs]
        crop_pixels = (crops[:, 1] - crops[:, 0]) * (crops[:, 3] - crops[:, 2])
        chunk = np.cumsum(crop_pixels) // _ATLAS_PIXELS
        hist = np.concatenate(
            [
                _atlas_counts(gt.view(np.uint8), ones, pairs[chunk == c], crops[chunk == c], d)
                for c in np.unique(chunk)
            ]
        )
        area[pairs], iou[pairs], biou[pairs] = _pair_counts(hist)
    return PairScores(area, iou, biou, boxes)

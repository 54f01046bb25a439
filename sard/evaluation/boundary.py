"""Mask IoU and boundary IoU (Cheng et al., CVPR 2021) for binary masks.

Definitions (as in the official boundary-iou-api):

* d = max(1, round(ratio * sqrt(H^2 + W^2))), ratio = 0.02, H x W the IMAGE size.
* erode_d(M): pad M with one ring of zeros, erode d times with a 3x3 kernel of ones, crop the ring.
  Equivalently a pixel survives iff the (2d+1) x (2d+1) square around it lies inside the image
  and inside M, so pixels within d of the image border are always boundary.
* B(M) = M - erode_d(M);  boundary IoU = |B(G) & B(P)| / |B(G) | B(P)|.

Conventions where the official code divides by zero: both masks empty -> IoU = bIoU = 1.0
(nothing to find and nothing found); exactly one mask empty -> 0.0.

`mask_boundary` / `boundary_iou` work on the full image (the reference). `erode_zero_border` on
any crop holding the whole mask gives identical numbers without a margin: outside its bounding
box a mask is zero, and outside the image the padded mask is zero too, so eroding the crop with a
zero border reads exactly the values the full-image erosion reads. The border value must be
passed explicitly because cv2.erode's default border counts as foreground.
`sard.evaluation.paired` builds the fast batched instance path on this.
"""
from __future__ import annotations

import math
from typing import Union

import cv2
import numpy as np
import torch

MaskLike = Union[np.ndarray, torch.Tensor]

_KERNEL_3X3 = np.ones((3, 3), dtype=np.uint8)


def boundary_dilation(height: int, width: int, dilation_ratio: float = 0.02) -> int:
    """Boundary width d = max(1, round(dilation_ratio * sqrt(height^2 + width^2))).

    Python's round (half to even) is used, as in the official code.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"boundary_dilation: image size must be positive, got {height}x{width}")
    if not dilation_ratio > 0:
        raise ValueError(f"boundary_dilation: dilation_ratio must be > 0, got {dilation_ratio}")
    return max(1, int(round(dilation_ratio * math.sqrt(height**2 + width**2))))


def as_bool_masks(masks: MaskLike, name: str, ndim: int) -> np.ndarray:
    """Convert a bool/integer mask array or tensor to a C-contiguous numpy bool array.

    Nonzero means foreground. Floating masks are rejected: thresholding scores or logits is the
    caller's decision, and guessing it here would silently change the metric.
    """
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    masks = np.asarray(masks)
    if masks.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D mask array, got shape {masks.shape}")
    if masks.dtype.kind in "fc":
        raise TypeError(
            f"{name}: masks must be bool or integer (threshold scores first), not {masks.dtype}"
        )
    if masks.dtype != np.bool_:
        masks = masks != 0
    return np.ascontiguousarray(masks)


def erode_zero_border(mask_u8: np.ndarray, dilation: int) -> np.ndarray:
    """erode_d of a 0/1 uint8 array with everything outside it counted as background (zero)."""
    return cv2.erode(
        mask_u8,
        _KERNEL_3X3,
        iterations=dilation,
        borderType=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


def mask_boundary(mask: MaskLike, dilation: int) -> np.ndarray:
    """Boundary B(M) = M - erode_d(pad_0(M)) of a full-image binary mask (H, W), as a bool array.

    This is the official algorithm verbatim: one ring of zero padding so the image border counts
    as boundary, `dilation` erosions with a 3x3 kernel, crop, subtract.
    """
    if int(dilation) != dilation or dilation < 1:
        raise ValueError(f"mask_boundary: dilation must be a positive integer, got {dilation}")
    m = as_bool_masks(mask, "mask_boundary(mask)", 2).view(np.uint8)
    padded = cv2.copyMakeBorder(m, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, _KERNEL_3X3, iterations=int(dilation))[1:-1, 1:-1]
    return (m - eroded).astype(bool)


def ratio_or_one(intersection: int, union: int) -> float:
    """intersection / union, with 0 / 0 = 1.0 (two empty sets agree perfectly)."""
    return 1.0 if union == 0 else intersection / union


def mask_iou(gt: MaskLike, pred: MaskLike) -> float:
    """IoU = |G & P| / |G | P| of two binary masks; both empty -> 1.0."""
    g = as_bool_masks(gt, "mask_iou(gt)", 2)
    p = as_bool_masks(pred, "mask_iou(pred)", 2)
    if g.shape != p.shape:
        raise ValueError(f"mask_iou: gt {g.shape} and pred {p.shape} differ in shape")
    return ratio_or_one(int(np.count_nonzero(g & p)), int(np.count_nonzero(g | p)))


def boundary_iou(gt: MaskLike, pred: MaskLike, dilation_ratio: float = 0.02) -> float:
    """Boundary IoU |B(G) & B(P)| / |B(G) | B(P)| on the full image; both empty -> 1.0.

    d is derived from the mask shape, which must be the full image (see `boundary_dilation`).
    """
    g = as_bool_masks(gt, "boundary_iou(gt)", 2)
    p = as_bool_masks(pred, "boundary_iou(pred)", 2)
    if g.shape != p.shape:
        raise ValueError(f"boundary_iou: gt {g.shape} and pred {p.shape} differ in shape")
    d = boundary_dilation(g.shape[0], g.shape[1], dilation_ratio)
    bg, bp = mask_boundary(g, d), mask_boundary(p, d)
    return ratio_or_one(int(np.count_nonzero(bg & bp)), int(np.count_nonzero(bg | bp)))

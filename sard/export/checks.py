"""Input checks of the predictor, each failing with a message that names the argument."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

# Prompts may sit on the image border (an xyxy box's right edge is x = W); beyond that by more
# than rounding error they are a caller's mistake (wrong image, swapped x/y, normalised coords).
BORDER_SLACK = 1e-3


def check_image(image: object) -> None:
    """An (H, W, 3) uint8 array, as SamPredictor.set_image takes."""
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"set_image expects a numpy array (H, W, 3) uint8, got {type(image).__name__}; "
            "for a tensor already resized use set_torch_image"
        )
    if image.dtype != np.uint8:
        hint = " (scale 0-1 floats with (image * 255).round().astype(np.uint8))"
        raise TypeError(
            f"set_image expects dtype uint8, got {image.dtype}"
            + (hint if np.issubdtype(image.dtype, np.floating) else "")
        )
    if image.ndim != 3 or image.shape[2] != 3:
        hint = " (grayscale: np.repeat(image[..., None], 3, axis=2))" if image.ndim == 2 else ""
        raise ValueError(f"set_image expects shape (H, W, 3), got {image.shape}{hint}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"set_image got an empty image of shape {image.shape}")


def check_points(points: object, what: str) -> np.ndarray:
    """(N, 2) finite float array with N >= 1."""
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"{what} must be (N, 2) xy, got shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"{what} is empty: give at least one point")
    if not np.isfinite(array).all():
        raise ValueError(f"{what} holds NaN or infinite values")
    return array


def check_labels(labels: object, count: int, what: str) -> np.ndarray:
    """(N,) integer labels in -1..3 matching ``count`` points."""
    array = np.asarray(labels)
    if array.shape != (count,):
        raise ValueError(
            f"{what} must have shape ({count},) to match the points, got {array.shape}"
        )
    if array.size and not np.all(np.isin(array, (-1, 0, 1, 2, 3))):
        raise ValueError(
            f"{what} must be 1 (foreground), 0 (background), -1 (padding) or 2/3 (box corners), "
            f"got {sorted(set(array.tolist()))}"
        )
    return array.astype(np.int64)


def check_inside(
    xy: np.ndarray,
    original_size: Optional[Sequence[int]],
    what: str,
    lo: Optional[np.ndarray] = None,
    hi: Optional[np.ndarray] = None,
) -> None:
    """Every (x, y) within [lo, hi] (default the image [0, W] x [0, H] of ``original_size``)."""
    if xy.size == 0:
        return
    if lo is None or hi is None:
        h, w = original_size
        lo, hi = np.zeros(2), np.array([w, h], dtype=np.float64)
    outside = np.flatnonzero(((xy < lo - BORDER_SLACK) | (xy > hi + BORDER_SLACK)).any(axis=1))
    if outside.size:
        i = int(outside[0])
        raise ValueError(
            f"{what}: {outside.size} point(s) outside the image, e.g. #{i} = "
            f"({xy[i, 0]:.2f}, {xy[i, 1]:.2f}) not in x [{lo[0]:.2f}, {hi[0]:.2f}], "
            f"y [{lo[1]:.2f}, {hi[1]:.2f}] (pixel coordinates, x = column)"
        )

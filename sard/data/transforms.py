"""One geometric plan applied identically to an image, its masks, label maps and points.

A plan is: resize (H, W) -> (h', w') [scale jitter included], optional horizontal/vertical
flip of the resized image, crop at (y0, x0) when it is larger than the output canvas, and
zero padding at the bottom/right up to the canvas (Ho, Wo). The valid (unpadded) region is
``input_hw``.

Masks and label maps are resampled with exact centre-aligned nearest neighbour: output pixel
j of the resized image takes source pixel ``floor((j + 0.5) * H / h')``, the same grid as
cv2's area/bilinear resize of the image, so masks stay aligned with the image. Points use
pixel-index coordinates (pixel centres at integers, as SAM's prompt encoder expects before it
adds 0.5) and map as ``x' = (x + 0.5) * w' / W - 0.5``, then flip ``x' -> w' - 1 - x'``, then
``x' - x0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import cv2
import numpy as np


@dataclass(frozen=True)
class GeometryPlan:
    """Resize -> flip -> crop -> pad, from a source of ``src_hw`` to a canvas of ``out_hw``."""

    src_hw: Tuple[int, int]
    scaled_hw: Tuple[int, int]
    out_hw: Tuple[int, int]
    hflip: bool = False
    vflip: bool = False
    crop_yx: Tuple[int, int] = (0, 0)

    @property
    def input_hw(self) -> Tuple[int, int]:
        """(h, w) of the valid region of the canvas, top-left aligned."""
        return (
            min(self.scaled_hw[0] - self.crop_yx[0], self.out_hw[0]),
            min(self.scaled_hw[1] - self.crop_yx[1], self.out_hw[1]),
        )

    def _sources(self, axis: int) -> np.ndarray:
        """Source index of every valid output row (axis 0) or column (axis 1)."""
        src, scaled = self.src_hw[axis], self.scaled_hw[axis]
        flip = self.vflip if axis == 0 else self.hflip
        positions = self.crop_yx[axis] + np.arange(self.input_hw[axis])
        if flip:
            positions = scaled - 1 - positions
        return np.minimum(np.floor((positions + 0.5) * src / scaled).astype(np.int64), src - 1)

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """(H, W, C) uint8 -> (Ho, Wo, C) uint8 canvas (zero padded bottom/right)."""
        h, w = self.scaled_hw
        # cv2's INTER_AREA is centre-aligned only when both axes shrink; otherwise its sampling
        # grid drifts from the masks' by up to half a pixel, so use bilinear there.
        shrink = h < image.shape[0] and w < image.shape[1]
        resized = cv2.resize(
            image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        )
        if resized.ndim == 2:
            resized = resized[..., None]
        if self.hflip:
            resized = resized[:, ::-1]
        if self.vflip:
            resized = resized[::-1]
        (y0, x0), (vh, vw) = self.crop_yx, self.input_hw
        canvas = np.zeros((*self.out_hw, resized.shape[2]), dtype=image.dtype)
        canvas[:vh, :vw] = resized[y0 : y0 + vh, x0 : x0 + vw]
        return canvas

    def apply_masks(self, masks: np.ndarray, boxes: np.ndarray | None = None) -> np.ndarray:
        """(Q, H, W) bool -> (Q, Ho, Wo) bool, nearest neighbour, False in the padding.

        With ``boxes`` (Q, 4) inclusive source bounds [c0, r0, c1, r1] only each object's box is
        resampled: the cost follows the objects' size, not the image's (tiny objects, big images).
        """
        rows, cols = self._sources(0), self._sources(1)
        out = np.zeros((masks.shape[0], *self.out_hw), dtype=bool)
        if boxes is None:
            out[:, : rows.size, : cols.size] = masks[:, rows][:, :, cols]
            return out
        for q, (c0, r0, c1, r1) in enumerate(np.asarray(boxes)):
            rsel = np.flatnonzero((rows >= r0) & (rows <= r1))
            csel = np.flatnonzero((cols >= c0) & (cols <= c1))
            if rsel.size == 0 or csel.size == 0:
                continue  # the object is cropped away or too small to hit a sample point
            # Source indices are monotonic, so the selected output rows/cols are contiguous.
            block = masks[q][np.ix_(rows[rsel], cols[csel])]
            out[q, rsel[0] : rsel[-1] + 1, csel[0] : csel[-1] + 1] = block
        return out

    def apply_labels(self, labels: np.ndarray, pad_value: int) -> np.ndarray:
        """(H, W) label map -> (Ho, Wo), nearest neighbour, ``pad_value`` in the padding."""
        rows, cols = self._sources(0), self._sources(1)
        out = np.full(self.out_hw, pad_value, dtype=labels.dtype)
        out[: rows.size, : cols.size] = labels[rows][:, cols]
        return out

    def apply_points(self, xy: np.ndarray) -> np.ndarray:
        """(..., 2) source (x, y) pixel-index coordinates -> canvas coordinates."""
        out = np.asarray(xy, dtype=np.float64).copy()
        for axis, coord in ((1, 0), (0, 1)):  # image axis 1 is x, axis 0 is y
            src, scaled = self.src_hw[axis], self.scaled_hw[axis]
            flip = self.hflip if axis == 1 else self.vflip
            value = (out[..., coord] + 0.5) * scaled / src - 0.5
            if flip:
                value = scaled - 1 - value
            out[..., coord] = value - self.crop_yx[axis]
        return out


def scaled_size(src_hw: Tuple[int, int], out_hw: Tuple[int, int], mode: str, scale: float):
    """Size of the resized image before crop/pad.

    longest_pad: factor S / max(H, W) (S = out side; SAM's rounding ``int(x + 0.5)``);
    fit_pad: factor min(Ho / H, Wo / W); stretch: (Ho, Wo). All times the jitter ``scale``.
    """
    (h, w), (oh, ow) = src_hw, out_hw
    if mode == "stretch":
        return max(1, int(oh * scale + 0.5)), max(1, int(ow * scale + 0.5))
    if mode == "longest_pad":
        factor = max(oh, ow) / max(h, w)
    elif mode == "fit_pad":
        factor = min(oh / h, ow / w)
    else:
        raise ValueError(f"unknown resize mode {mode!r}; use longest_pad, fit_pad or stretch")
    factor *= scale
    return max(1, int(h * factor + 0.5)), max(1, int(w * factor + 0.5))


def make_plan(
    src_hw: Tuple[int, int],
    out_hw: Tuple[int, int],
    mode: str,
    *,
    scale: float = 1.0,
    hflip: bool = False,
    vflip: bool = False,
    rng: np.random.Generator | None = None,
) -> GeometryPlan:
    """Plan for one image; the crop (only when the resized image exceeds the canvas) is random
    when ``rng`` is given, else anchored at the top-left."""
    scaled = scaled_size(src_hw, out_hw, mode, scale)
    crop = [0, 0]
    for axis in (0, 1):
        excess = scaled[axis] - out_hw[axis]
        if excess > 0 and rng is not None:
            crop[axis] = int(rng.integers(0, excess + 1))
    return GeometryPlan(
        src_hw=tuple(src_hw),
        scaled_hw=scaled,
        out_hw=tuple(out_hw),
        hflip=hflip,
        vflip=vflip,
        crop_yx=(crop[0], crop[1]),
    )

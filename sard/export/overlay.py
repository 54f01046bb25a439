"""Overlay picture: each predicted mask tinted a colour and outlined, prompts drawn on top."""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Union

import cv2
import numpy as np

from sard.data.masks import decode_segmentation

MIN_SIDE = 512  # small images are enlarged (nearest neighbour) so outlines stay visible


def render_overlay(
    image: np.ndarray,
    masks: Sequence[Union[np.ndarray, Dict[str, Any]]],
    *,
    boxes: Optional[np.ndarray] = None,
    points: Optional[np.ndarray] = None,
    alpha: float = 0.5,
    seed: int = 0,
) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> uint8 RGB picture, enlarged by an integer factor k so that
    max(kH, kW) >= 512. Each pixel takes the colour of the smallest mask covering it (so small
    objects stay visible over large ones): (1 - alpha) * image + alpha * colour, blended once;
    mask outlines in the mask's colour darkened; box prompts as white rectangles, point prompts
    as white dots (boxes xyxy and points (..., 2) xy in original pixels).

    masks: (H, W) bool arrays or COCO RLE dicts; RLEs are decoded one at a time, so hundreds of
    objects on a large image need no more than a few full-size arrays of memory."""
    k = max(1, int(np.ceil(MIN_SIDE / max(image.shape[:2]))))
    colours = np.random.default_rng(seed).integers(60, 256, size=(max(len(masks), 1), 3))
    hw = image.shape[:2]

    def decode(i: int) -> np.ndarray:
        m = masks[i]
        return decode_segmentation(m, *hw) if isinstance(m, dict) else np.asarray(m, dtype=bool)

    areas = [int(decode(i).sum()) for i in range(len(masks))]
    owner = np.full(hw, -1, dtype=np.int64)
    outlines = []
    for i in sorted(range(len(masks)), key=lambda j: -areas[j]):
        if areas[i] == 0:
            continue
        mask = decode(i)
        owner[mask] = i  # larger masks first, smaller ones overwrite them
        # Outlines are traced on the enlarged mask (at most ~512 px a side when k > 1), so they
        # follow pixel edges; only the contours are kept, not the masks.
        big = np.repeat(np.repeat(mask.astype(np.uint8), k, axis=0), k, axis=1)
        contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        outlines.append((contours, colours[i]))
    canvas = image.astype(np.float32)
    covered = owner >= 0
    canvas[covered] = (1 - alpha) * canvas[covered] + alpha * colours[owner[covered]]
    out = np.repeat(np.repeat(canvas.round().astype(np.uint8), k, axis=0), k, axis=1)
    for contours, colour in outlines:
        cv2.drawContours(out, contours, -1, tuple(int(c * 0.6) for c in colour), 1)
    white = (255, 255, 255)
    if boxes is not None:
        for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.float64):
            p0 = (int(round(x0 * k)), int(round(y0 * k)))
            p1 = (int(round((x1 + 1) * k)) - 1, int(round((y1 + 1) * k)) - 1)
            cv2.rectangle(out, p0, p1, white, 1)
    if points is not None:
        for x, y in np.asarray(points, dtype=np.float64).reshape(-1, 2):
            centre = (int(round((x + 0.5) * k)), int(round((y + 0.5) * k)))
            cv2.circle(out, centre, max(2, k // 2), white, -1)
    return out

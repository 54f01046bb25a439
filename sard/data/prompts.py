"""Prompts sampled from ground-truth instance masks in the model-input frame.

Coordinates are pixel indices (x = column, y = row; SAM's prompt encoder adds 0.5 itself).

* Box: the tight box [c_min, r_min, c_max, r_max] of the mask. With jitter j > 0 (training)
  each side moves OUTWARD by |N(0, (j * side)^2)| pixels, at most ``MAX_JITTER_PX``, clipped to
  the valid region: a jittered box is looser, never cuts the object (for objects a few pixels
  wide an inward shift would remove most of them), so a box always encloses its mask.
* Positive points: mask pixels drawn with probability proportional to d^2, d = distance to the
  mask border (interior bias). At evaluation the first point is the most interior pixel
  (argmax d; among ties the one nearest the mask centroid), further points are drawn from the
  seeded generator.
* Negative points: uniform among non-mask pixels of the valid region inside the box enlarged by
  half its size (and at least 2 px) on every side; padded (label -1) when there is none.

Layout per prompt: "box" -> [TL(2), BR(3)]; "point" -> [pos(1) x n, neg(0) x m];
"box+point" -> [TL, BR, pos x n, neg x m]; missing points are (0, 0) with label -1.
"""

from __future__ import annotations

import zlib
from typing import Any, Tuple

import cv2
import numpy as np

from sard.prompt_labels import LABEL_BOX_BR, LABEL_BOX_TL, LABEL_NEG, LABEL_PAD, LABEL_POS

PROMPT_TYPES = ("box", "point", "box+point")
MAX_JITTER_PX = 20.0


def eval_rng(image_id: Any, eval_seed: int) -> np.random.Generator:
    """Generator seeded by (eval_seed, crc32(repr(image_id))): the same in every run/process."""
    digest = zlib.crc32(repr(image_id).encode("utf-8"))
    return np.random.default_rng([int(eval_seed), digest])


def points_per_prompt(prompt_type: str, num_points: int, num_neg_points: int) -> int:
    """N, the number of point slots of one prompt."""
    if prompt_type not in PROMPT_TYPES:
        raise ValueError(f"prompt_type must be one of {PROMPT_TYPES}, got {prompt_type!r}")
    n = num_points + num_neg_points if prompt_type != "box" else 0
    return n + (2 if prompt_type != "point" else 0)


def _interior_points(mask_crop: np.ndarray, count: int, rng, deterministic: bool) -> np.ndarray:
    """``count`` (x, y) points inside a cropped bool mask, biased to the interior."""
    padded = np.pad(mask_crop.astype(np.uint8), 1)  # so the crop border counts as mask border
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    ys, xs = np.nonzero(mask_crop)
    weights = dist[ys, xs].astype(np.float64) ** 2
    chosen = []
    if deterministic and count > 0:
        # The most interior pixel; along a ridge of equal depth, the one nearest the centroid.
        ridge = np.flatnonzero(weights == weights.max())
        offset = (xs[ridge] - xs.mean()) ** 2 + (ys[ridge] - ys.mean()) ** 2
        chosen.append(int(ridge[np.argmin(offset)]))
        count -= 1
    if count > 0:
        replace = count > xs.size
        chosen.extend(rng.choice(xs.size, size=count, replace=replace, p=weights / weights.sum()))
    return np.stack([xs[chosen], ys[chosen]], axis=1).astype(np.float32)


def _negative_points(mask: np.ndarray, box: np.ndarray, valid_hw, count: int, rng) -> np.ndarray:
    """Up to ``count`` (x, y) background points near the box; fewer when there is no room."""
    if count <= 0:
        return np.zeros((0, 2), dtype=np.float32)
    vh, vw = valid_hw
    margin_x = max(2.0, 0.5 * (box[2] - box[0] + 1))
    margin_y = max(2.0, 0.5 * (box[3] - box[1] + 1))
    x0, x1 = int(max(0, box[0] - margin_x)), int(min(vw - 1, box[2] + margin_x))
    y0, y1 = int(max(0, box[1] - margin_y)), int(min(vh - 1, box[3] + margin_y))
    ys, xs = np.nonzero(~mask[y0 : y1 + 1, x0 : x1 + 1])
    if xs.size == 0:
        return np.zeros((0, 2), dtype=np.float32)
    pick = rng.choice(xs.size, size=min(count, xs.size), replace=False)
    return np.stack([xs[pick] + x0, ys[pick] + y0], axis=1).astype(np.float32)


def _jitter_box(box: np.ndarray, jitter: float, valid_hw, rng) -> np.ndarray:
    """Move every side outward by |N(0, (jitter * side)^2)| <= MAX_JITTER_PX, clip to the image."""
    vh, vw = valid_hw
    width, height = box[2] - box[0] + 1, box[3] - box[1] + 1
    sigma = np.array([width, height, width, height], dtype=np.float64) * jitter
    shift = np.minimum(np.abs(rng.normal(0.0, 1.0, size=4)) * sigma, MAX_JITTER_PX)
    out = box + shift * np.array([-1, -1, 1, 1])
    return np.clip(out, 0, [vw - 1, vh - 1, vw - 1, vh - 1]).astype(np.float32)


def sample_prompts(
    masks: np.ndarray,
    valid_hw: Tuple[int, int],
    *,
    prompt_type: str,
    num_points: int,
    num_neg_points: int,
    box_jitter: float,
    rng: np.random.Generator,
    deterministic: bool,
    fallback_xy: np.ndarray | None = None,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (Q, 4) xyxy, points (Q, N, 2) xy and labels (Q, N) for masks (Q, H, W).

    An empty mask (an object too small to survive the resize, evaluation only) gets a
    degenerate box and points at ``fallback_xy[q]`` (its interior point mapped to this frame).
    No jitter is applied when ``deterministic``.
    """
    q = masks.shape[0]
    n = points_per_prompt(prompt_type, num_points, num_neg_points)
    boxes = np.zeros((q, 4), dtype=np.float32)
    points = np.zeros((q, n, 2), dtype=np.float32)
    labels = np.full((q, n), LABEL_PAD, dtype=np.int64)
    use_box = prompt_type != "point"
    use_points = prompt_type != "box"
    for i in range(q):
        rows = np.flatnonzero(masks[i].any(axis=1))
        cols = np.flatnonzero(masks[i].any(axis=0))
        if rows.size == 0:
            if fallback_xy is None:
                raise ValueError("sample_prompts: empty mask and no fallback point")
            fx, fy = (float(v) for v in fallback_xy[i])
            boxes[i] = (fx, fy, fx, fy)
            pos = np.tile(np.array([[fx, fy]], dtype=np.float32), (num_points, 1))
            neg = np.zeros((0, 2), dtype=np.float32)
        else:
            boxes[i] = (cols[0], rows[0], cols[-1], rows[-1])
            if box_jitter > 0 and not deterministic:
                boxes[i] = _jitter_box(boxes[i], box_jitter, valid_hw, rng)
            crop = masks[i, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
            pos = _interior_points(crop, num_points if use_points else 0, rng, deterministic)
            pos = pos + np.array([cols[0], rows[0]], dtype=np.float32)
            neg = _negative_points(masks[i], boxes[i], valid_hw, num_neg_points, rng)
        slot = 0
        if use_box:
            points[i, 0], points[i, 1] = boxes[i, :2], boxes[i, 2:]
            labels[i, :2] = (LABEL_BOX_TL, LABEL_BOX_BR)
            slot = 2
        if use_points:
            points[i, slot : slot + len(pos)] = pos
            labels[i, slot : slot + len(pos)] = LABEL_POS
            slot += num_points
            points[i, slot : slot + len(neg)] = neg
            labels[i, slot : slot + len(neg)] = LABEL_NEG
    return boxes, points, labels

"""Mask encodings: COCO RLE / polygons <-> boolean arrays, boxes from masks.

Coordinates follow COCO: a pixel (row r, column c) covers [c, c+1) x [r, r+1); polygon
vertices are in those continuous pixel-edge coordinates; an XYWH box is (x0, y0, w, h) with
x0 = first covered column and w = number of covered columns.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pycocotools.mask as mask_util

Segmentation = Union[Dict[str, Any], List[List[float]]]

# Polygons are clipped to the image grown by this many pixels before rasterising: pycocotools
# allocates and walks memory in proportion to the coordinates (a vertex at 1e8 px costs GBs,
# one at 1e30 crashes it), while the pixels inside the image depend only on the part of the
# polygon within the image, which clipping to a slightly larger window keeps.
CLIP_MARGIN = 1.0


def encode_mask(mask: np.ndarray) -> Dict[str, Any]:
    """Boolean (H, W) mask -> compressed RLE dict {"size": [H, W], "counts": str} (JSON-ready)."""
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode()}


# COCO's compressed RLE stores each count in 5-bit groups, one character (48 + 6 bits) each;
# seven groups (35 bits) exceed any image's pixel count, so a longer run is corrupt data.
RLE_CHAR_OFFSET = 48
RLE_MAX_GROUPS = 7


def compressed_rle_counts(counts: Union[str, bytes]) -> Optional[np.ndarray]:
    """The run lengths (int64) of a COCO compressed RLE string, or None if it is malformed.

    The format (pycocotools' rleToString): each count is written as 5-bit groups, low first,
    in characters ``48 + (group | 0x20 if more groups follow)``, the last group's bit 0x10
    giving the sign; counts from the third on are stored as differences to the count two
    places before.
    """
    raw = counts.encode() if isinstance(counts, str) else counts
    if not isinstance(raw, (bytes, bytearray)):
        return None
    c = np.frombuffer(bytes(raw), dtype=np.uint8).astype(np.int64) - RLE_CHAR_OFFSET
    if c.size == 0:
        return np.zeros(0, np.int64)
    if c.min() < 0 or c.max() > 63 or c[-1] & 0x20:
        return None  # characters outside '0'..'o', or the last count is cut off
    ends = np.flatnonzero((c & 0x20) == 0)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if lengths.max() > RLE_MAX_GROUPS:
        return None
    group = np.repeat(np.arange(ends.size), lengths)
    shift = 5 * (np.arange(c.size) - starts[group])
    values = np.zeros(ends.size, np.int64)
    np.add.at(values, group, (c & 0x1F) << shift)
    negative = (c[ends] & 0x10) != 0
    values[negative] -= np.int64(1) << (5 * lengths[negative])
    runs = values.copy()
    runs[3::2] = np.cumsum(values[1::2])[1:] if values.size > 3 else runs[3::2]
    runs[4::2] = np.cumsum(values[2::2])[1:] if values.size > 4 else runs[4::2]
    return runs


def rle_problem(rle: Dict[str, Any], height: int, width: int) -> Optional[str]:
    """Why an RLE dict cannot be a (height, width) mask, or None when it is sound.

    Checked before any pycocotools call: pycocotools trusts the counts and writes past its
    buffer when they do not add up to H*W (garbage counts crash training). Counts must be
    non-negative integers summing to H*W, in a list (uncompressed) or a compressed string.
    """
    size = rle.get("size")
    if not (isinstance(size, (list, tuple)) and list(size) == [height, width]):
        return f"size {size!r} is not the image's [{height}, {width}]"
    counts = rle.get("counts")
    if isinstance(counts, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
            return "uncompressed counts hold non-integers"
        runs = np.asarray(counts, dtype=np.int64) if counts else np.zeros(0, np.int64)
    elif isinstance(counts, (str, bytes)):
        runs = compressed_rle_counts(counts)
        if runs is None:
            return "compressed counts are not a valid COCO RLE string"
    else:
        return f"counts is a {type(counts).__name__}, not a list or a string"
    if runs.size and runs.min() < 0:
        return "counts hold negative run lengths"
    total = int(runs.sum())
    if total != height * width:
        return f"counts add up to {total} pixels, not H*W = {height * width}"
    return None


def segmentation_problem(segmentation: Any, height: int, width: int) -> Optional[str]:
    """Why ``segmentation`` cannot be decoded as a (height, width) mask, or None: an RLE dict
    is checked by :func:`rle_problem`; polygons must be lists of >= 6 finite numbers."""
    if isinstance(segmentation, dict):
        return rle_problem(segmentation, height, width)
    if not isinstance(segmentation, list):
        return f"segmentation is a {type(segmentation).__name__}, not polygons or an RLE dict"
    for poly in segmentation:
        if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
            return "a polygon is not a flat list of at least 3 (x, y) points"
        if not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in poly
        ):
            return "a polygon holds non-numeric, NaN or infinite coordinates"
    return None


def _clip_edge(points: List[Tuple[float, float]], axis: int, bound: float, keep_below: bool):
    """One Sutherland-Hodgman step: the polygon ``points`` clipped to one half-plane
    (coordinate ``axis`` <= ``bound`` if ``keep_below`` else >= ``bound``)."""

    def inside(p: Tuple[float, float]) -> bool:
        return p[axis] <= bound if keep_below else p[axis] >= bound

    out: List[Tuple[float, float]] = []
    for i, cur in enumerate(points):
        prev = points[i - 1]
        if inside(cur) != inside(prev):
            t = (bound - prev[axis]) / (cur[axis] - prev[axis])
            cross = [prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])]
            cross[axis] = bound  # exact on the clipping line despite rounding
            out.append((cross[0], cross[1]))
        if inside(cur):
            out.append(cur)
    return out


def clip_polygon(
    polygon: Sequence[float], height: int, width: int, margin: float = CLIP_MARGIN
) -> List[float]:
    """A flat [x0, y0, x1, y1, ...] polygon clipped to [-m, W + m] x [-m, H + m].

    Sutherland-Hodgman against the (convex) window: the part of the polygon inside the window
    is kept exactly, so the pixels of the image rasterise as before up to pycocotools' rounding
    of boundary pixels (on random polygons the clipped ones are no further from centre
    sampling than the unclipped). A polygon already inside is returned unchanged, one entirely
    outside as []. Coordinates must be finite.
    """
    xs, ys = polygon[0::2], polygon[1::2]
    lo_x, lo_y, hi_x, hi_y = -margin, -margin, width + margin, height + margin
    if min(xs) >= lo_x and min(ys) >= lo_y and max(xs) <= hi_x and max(ys) <= hi_y:
        return list(polygon)
    points = [(float(x), float(y)) for x, y in zip(xs, ys)]
    for axis, bound, keep_below in (
        (0, lo_x, False),
        (0, hi_x, True),
        (1, lo_y, False),
        (1, hi_y, True),
    ):
        points = _clip_edge(points, axis, bound, keep_below)
        if len(points) < 3:
            return []
    return [v for p in points for v in p]


def polygons_to_rle(polygons: Sequence[Sequence[float]], height: int, width: int) -> Dict[str, Any]:
    """Union of flat polygons -> one compressed RLE, each polygon clipped first (see
    :func:`clip_polygon`); polygons with fewer than 3 points are ignored."""
    clipped = [clip_polygon(p, height, width) for p in polygons if len(p) >= 6]
    clipped = [p for p in clipped if len(p) >= 6]
    if not clipped:
        return mask_util.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
    return mask_util.merge(mask_util.frPyObjects(clipped, height, width))


def to_compressed_rle(segmentation: Segmentation, height: int, width: int) -> Dict[str, Any]:
    """Any COCO segmentation (polygons, uncompressed or compressed RLE) -> compressed RLE."""
    if isinstance(segmentation, dict):
        if isinstance(segmentation.get("counts"), list):
            return mask_util.frPyObjects(segmentation, height, width)
        counts = segmentation["counts"]
        return {
            "size": list(segmentation["size"]),
            "counts": counts.encode() if isinstance(counts, str) else counts,
        }
    return polygons_to_rle(segmentation, height, width)


def decode_segmentation(segmentation: Segmentation, height: int, width: int) -> np.ndarray:
    """Any COCO segmentation -> bool (H, W) mask."""
    return mask_util.decode(to_compressed_rle(segmentation, height, width)).astype(bool)


def decode_many(segmentations: Sequence[Segmentation], height: int, width: int) -> np.ndarray:
    """Several segmentations -> bool (Q, H, W); one pycocotools call for the decode."""
    if len(segmentations) == 0:
        return np.zeros((0, height, width), dtype=bool)
    rles = [to_compressed_rle(s, height, width) for s in segmentations]
    return np.ascontiguousarray(mask_util.decode(rles).transpose(2, 0, 1).astype(bool))


# pycocotools 2.0.11's area() raises OverflowError on a list of more than 255 RLEs (it sizes an
# internal array with uint8), so areas are asked for in chunks of at most this many.
_AREA_CHUNK = 255


def rle_areas(rles: Sequence[Dict[str, Any]]) -> np.ndarray:
    """Pixel counts (int64, (Q,)) of compressed RLEs, for any number of them."""
    parts = [
        np.asarray(mask_util.area(list(rles[i : i + _AREA_CHUNK])), dtype=np.int64)
        for i in range(0, len(rles), _AREA_CHUNK)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def decode_instances(
    segmentations: Sequence[Segmentation], height: int, width: int
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode several segmentations without copying: (masks, boxes, areas).

    masks: bool (Q, H, W) view of pycocotools' column-major output (index it, or copy with
    np.ascontiguousarray when a C-contiguous array is needed); boxes: int (Q, 4) inclusive
    pixel bounds [c_min, r_min, c_max, r_max] read from the RLE (no scan of the pixels);
    areas: int (Q,) pixel counts.
    """
    if len(segmentations) == 0:
        return (
            np.zeros((0, height, width), bool),
            np.zeros((0, 4), np.int64),
            np.zeros(0, np.int64),
        )
    rles = [to_compressed_rle(s, height, width) for s in segmentations]
    areas = rle_areas(rles)
    xywh = mask_util.toBbox(rles).astype(np.int64)
    boxes = np.stack(
        [xywh[:, 0], xywh[:, 1], xywh[:, 0] + xywh[:, 2] - 1, xywh[:, 1] + xywh[:, 3] - 1], axis=1
    )
    masks = mask_util.decode(rles).transpose(2, 0, 1).view(bool)
    return masks, boxes, areas


def segmentation_area(segmentation: Segmentation, height: int, width: int) -> float:
    """Pixel count of the rasterised segmentation (no full decode)."""
    return float(mask_util.area(to_compressed_rle(segmentation, height, width)))


def segmentation_bbox(segmentation: Segmentation, height: int, width: int) -> List[float]:
    """Tight XYWH box of the rasterised segmentation ([0, 0, 0, 0] when empty)."""
    box = mask_util.toBbox(to_compressed_rle(segmentation, height, width))
    return [float(v) for v in box]

"""Mask encodings: COCO RLE / polygons <-> boolean arrays, boxes from masks.

Coordinates follow COCO: a pixel (row r, column c) covers [c, c+1) x [r, r+1); polygon
vertices are in those continuous pixel-edge coordinates; an XYWH box is (x0, y0, w, h) with
x0 = first covered column and w = number of covered columns.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple, Union

import numpy as np
import pycocotools.mask as mask_util

Segmentation = Union[Dict[str, Any], List[List[float]]]


def encode_mask(mask: np.ndarray) -> Dict[str, Any]:
    """Boolean (H, W) mask -> compressed RLE dict {"size": [H, W], "counts": str} (JSON-ready)."""
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode()}


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
    polygons = [p for p in segmentation if len(p) >= 6]
    if not polygons:
        return mask_util.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
    return mask_util.merge(mask_util.frPyObjects(polygons, height, width))


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


def mask_to_xyxy_inclusive(mask: np.ndarray) -> np.ndarray:
    """Box of a non-empty bool (H, W) mask as pixel indices [c_min, r_min, c_max, r_max]."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("mask_to_xyxy_inclusive: empty mask")
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.float32)

"""Per-object size and shape from masks, with scikit-image's ``regionprops``.

Each object is measured alone on its bounding-box crop (objects of an automatic segmentation
may overlap, so they are never painted into one label image). With ``mm_per_px = s`` the
pixels are s x s mm squares (``regionprops(spacing=(s, s))``): lengths are in mm, areas in mm².

Columns (``SIZE_COLUMNS``; regionprops names in brackets):

- ``area`` [area]: pixel count x s².
- ``equivalent_diameter`` [equivalent_diameter_area]: diameter of the circle of equal area,
  sqrt(4 area / pi).
- ``major_axis``, ``minor_axis`` [axis_major_length, axis_minor_length]: axes of the ellipse with
  the same second moments, 4 sqrt(eigenvalue of the inertia tensor).
- ``feret_diameter_max`` [feret_diameter_max]: longest distance between points of the convex
  hull of the object's outline.
- ``orientation_deg`` [orientation]: angle from the image's row axis (downwards) to the major
  axis, in degrees, -90..90, scikit-image's convention.
- ``centroid_x_px``, ``centroid_y_px``: where the object is, in image pixels (not scaled).
- ``touches_border``: True when the object has a pixel on the image's outer rows or columns
  (its size is then cut short by the image edge).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
from skimage.measure import regionprops

from sard.data.masks import decode_segmentation

SIZE_MEASURES = ("equivalent_diameter", "minor_axis", "major_axis", "feret_diameter_max")
LENGTHS = SIZE_MEASURES
SIZE_COLUMNS = (
    "id",
    "area",
    *SIZE_MEASURES,
    "orientation_deg",
    "centroid_x_px",
    "centroid_y_px",
    "touches_border",
)
MaskLike = Union[np.ndarray, Dict[str, Any], list]


@dataclass
class ObjectTable:
    """Measured objects: ``columns[name]`` is an (N,) array for each of ``SIZE_COLUMNS``;
    lengths in ``unit`` ("px" or "mm"), areas in unit²."""

    columns: Dict[str, np.ndarray]
    unit: str

    def __len__(self) -> int:
        return int(len(self.columns["id"]))

    def sizes(self, measure: str = "equivalent_diameter") -> np.ndarray:
        """(N,) sizes by one of ``SIZE_MEASURES``."""
        if measure not in SIZE_MEASURES:
            raise ValueError(f"size measure must be one of {SIZE_MEASURES}, got {measure!r}")
        return self.columns[measure]

    def select(self, keep: np.ndarray) -> "ObjectTable":
        """The rows where ``keep`` (bool (N,)) is True."""
        return ObjectTable({k: v[keep] for k, v in self.columns.items()}, self.unit)

    def header(self) -> list:
        """CSV column names with their units, e.g. ``area_mm2``, ``minor_axis_mm``."""
        names = []
        for name in SIZE_COLUMNS:
            if name == "area":
                names.append(f"area_{self.unit}2")
            elif name in LENGTHS:
                names.append(f"{name}_{self.unit}")
            else:
                names.append(name)
        return names

    def to_csv(self, path: str) -> None:
        """One row per object, the header from ``header()``; floats to 6 significant digits."""
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(self.header())
            for i in range(len(self)):
                row = []
                for name in SIZE_COLUMNS:
                    value = self.columns[name][i]
                    if name == "touches_border":
                        row.append(int(bool(value)))
                    elif name == "id":
                        row.append(int(value))
                    else:
                        row.append(f"{float(value):.6g}")
                writer.writerow(row)


def _as_mask(segmentation: MaskLike, hw: Sequence[int]) -> np.ndarray:
    if isinstance(segmentation, np.ndarray):
        if segmentation.shape != tuple(hw):
            raise ValueError(f"mask of shape {segmentation.shape} for an image of {tuple(hw)}")
        return segmentation.astype(bool, copy=False)
    return decode_segmentation(segmentation, int(hw[0]), int(hw[1]))


def object_sizes(
    segmentations: Sequence[MaskLike],
    hw: Sequence[int],
    mm_per_px: Optional[float] = None,
    ids: Optional[Sequence[int]] = None,
) -> ObjectTable:
    """Measure every object (a bool (H, W) mask, a COCO RLE or polygons) of an (H, W) image.

    ``ids`` name the rows (default 1..N, the order given). Empty masks are skipped. With
    ``mm_per_px`` lengths are in mm and areas in mm², else in px and px².
    """
    if mm_per_px is not None and not mm_per_px > 0:
        raise ValueError(f"mm_per_px must be a positive number, got {mm_per_px}")
    scale = float(mm_per_px) if mm_per_px else 1.0
    h, w = (int(v) for v in hw)
    ids = list(ids) if ids is not None else list(range(1, len(segmentations) + 1))
    if len(ids) != len(segmentations):
        raise ValueError(f"{len(ids)} ids for {len(segmentations)} objects")
    rows = {name: [] for name in SIZE_COLUMNS}
    for obj_id, segmentation in zip(ids, segmentations):
        mask = _as_mask(segmentation, (h, w))
        ys, xs = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if ys.size == 0:
            continue
        y0, y1, x0, x1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
        crop = mask[y0:y1, x0:x1].astype(np.uint8)
        (props,) = regionprops(crop, spacing=(scale, scale))
        rows["id"].append(obj_id)
        rows["area"].append(props.area)
        rows["equivalent_diameter"].append(props.equivalent_diameter_area)
        rows["major_axis"].append(props.axis_major_length)
        rows["minor_axis"].append(props.axis_minor_length)
        rows["feret_diameter_max"].append(props.feret_diameter_max)
        rows["orientation_deg"].append(np.degrees(props.orientation))
        cy, cx = props.centroid
        rows["centroid_x_px"].append(x0 + cx / scale)
        rows["centroid_y_px"].append(y0 + cy / scale)
        rows["touches_border"].append(bool(y0 == 0 or x0 == 0 or y1 == h or x1 == w))
    columns = {
        name: np.asarray(values, dtype=np.int64 if name == "id" else None)
        for name, values in rows.items()
    }
    columns["touches_border"] = columns["touches_border"].astype(bool)
    for name in SIZE_COLUMNS[1:-1]:
        columns[name] = columns[name].astype(np.float64)
    return ObjectTable(columns, "mm" if mm_per_px else "px")

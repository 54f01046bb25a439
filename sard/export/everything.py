"""Segment every object of an image and measure it: the files ``tools/segment_everything.py``
writes for each image.

- ``<stem>_results.json``: COCO results (image_id, category_id 1, segmentation as compressed
  RLE, bbox XYWH in COCO's convention, area, score = predicted IoU, stability_score).
- ``<stem>_objects.csv``: one row per object, ``sard.measure.object_sizes`` (regionprops).
- ``<stem>_summary.json``: count, d10, d50, d80, d90 of the chosen size measure, the basis
  ("number" or "area") and unit, the filters, and what tiling did.
- ``<stem>_psd.png``: the cumulative size distribution, % finer against size on a log axis.
- ``<stem>_overlay.png``: every object tinted and outlined over the image.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional

import numpy as np
import pycocotools.mask as mask_util

from sard.measure import distribution_summary, object_sizes, plot_cumulative
from sard.measure.distribution import basis_weights
from sard.measure.sizes import SIZE_MEASURES

from .overlay import render_overlay

OUTPUT_SUFFIXES = ("_results.json", "_objects.csv", "_summary.json", "_psd.png", "_overlay.png")


@dataclass
class MeasureSettings:
    """How objects become a size distribution: ``min_area`` (px; smaller objects are dropped
    everywhere), ``exclude_border`` (objects touching the image border are left out of the
    measurements, not of the results: their size is cut short), the ``size_measure`` (one of
    ``SIZE_MEASURES``), the ``basis`` ("number" or "area") and ``mm_per_px`` (None: pixels)."""

    min_area: int = 0
    exclude_border: bool = False
    size_measure: str = "equivalent_diameter"
    basis: str = "number"
    mm_per_px: Optional[float] = None

    def __post_init__(self) -> None:
        if self.size_measure not in SIZE_MEASURES:
            raise ValueError(
                f"size measure must be one of {SIZE_MEASURES}, got {self.size_measure!r}"
            )
        basis_weights(np.zeros(0), self.basis)  # validates the basis
        if self.mm_per_px is not None and not self.mm_per_px > 0:
            raise ValueError(f"--mm-per-px must be a positive number, got {self.mm_per_px}")
        if self.min_area < 0:
            raise ValueError(f"--min-area must be >= 0 px, got {self.min_area}")


def coco_rle(segmentation: Any, hw) -> Dict[str, Any]:
    """A record's segmentation as a JSON-ready compressed RLE (counts as str)."""
    if isinstance(segmentation, np.ndarray):
        rle = mask_util.encode(np.asfortranarray(segmentation.astype(np.uint8)))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_util.frPyObjects(segmentation, int(hw[0]), int(hw[1]))
    else:
        return {"size": list(segmentation["size"]), "counts": segmentation["counts"]}
    counts = rle["counts"]
    return {
        "size": [int(v) for v in rle["size"]],
        "counts": counts.decode() if isinstance(counts, bytes) else counts,
    }


def records_to_results(records: List[Dict[str, Any]], image_id: Any, hw) -> List[Dict[str, Any]]:
    """SAM-style records -> COCO results entries (bbox and area recomputed from the RLE, in
    COCO's convention: w = number of columns)."""
    results = []
    for record in records:
        rle = coco_rle(record["segmentation"], hw)
        coded = {"size": rle["size"], "counts": rle["counts"].encode()}
        results.append(
            {
                "image_id": image_id,
                "category_id": 1,
                "segmentation": rle,
                "bbox": [float(v) for v in mask_util.toBbox(coded)],
                "area": float(mask_util.area(coded)),
                "score": float(record.get("predicted_iou", record.get("score", 1.0))),
                "stability_score": float(record.get("stability_score", 1.0)),
            }
        )
    return results


def write_image_outputs(
    out_dir: str,
    stem: str,
    image: np.ndarray,
    results: List[Dict[str, Any]],
    settings: MeasureSettings,
    extra_summary: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Filter by ``min_area``, measure, and write the five files of one image; returns the
    summary. ``results`` are COCO results of this image (``records_to_results``)."""
    os.makedirs(out_dir, exist_ok=True)
    hw = image.shape[:2]
    found = len(results)
    results = [r for r in results if r["area"] >= max(settings.min_area, 1)]
    with open(os.path.join(out_dir, f"{stem}_results.json"), "w") as f:
        json.dump(results, f)
    table = object_sizes([r["segmentation"] for r in results], hw, settings.mm_per_px)
    table.to_csv(os.path.join(out_dir, f"{stem}_objects.csv"))
    measured = table.select(~table.columns["touches_border"]) if settings.exclude_border else table
    sizes = measured.sizes(settings.size_measure)
    areas = measured.columns["area"]
    summary: Dict[str, Any] = {
        "image": stem,
        "height": int(hw[0]),
        "width": int(hw[1]),
        **distribution_summary(sizes, areas, settings.basis),
        "size_measure": settings.size_measure,
        "unit": table.unit,
        "objects_found": found,
        "objects_kept": len(results),
        "objects_touching_border": int(table.columns["touches_border"].sum()),
        "settings": asdict(settings),
    }
    summary.update(extra_summary or {})
    with open(os.path.join(out_dir, f"{stem}_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    plot_cumulative(
        {stem: (sizes, basis_weights(areas, settings.basis))},
        os.path.join(out_dir, f"{stem}_psd.png"),
        xlabel=f"{settings.size_measure.replace('_', ' ')} ({table.unit})",
        basis=settings.basis,
        title=f"{stem}: {len(sizes)} objects",
    )
    from PIL import Image

    picture = render_overlay(image, [r["segmentation"] for r in results])
    Image.fromarray(picture).save(os.path.join(out_dir, f"{stem}_overlay.png"))
    return summary

"""Numbers that say how tiny and dense a set of instances is.

"Tiny" follows the tiny-object literature (AI-TOD): an object is tiny when sqrt(area) < 16 px,
small when sqrt(area) < 32 px, at the resolution the dataset is stored at.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

TINY_SIDE_PX = 16.0
SMALL_SIDE_PX = 32.0
# Bin edges (in px of sqrt(area)) of the object-size histogram.
SIZE_BIN_EDGES = (0, 4, 8, 16, 32, 64, 128, 256, float("inf"))


def instance_statistics(
    areas_per_image: Sequence[Sequence[float]], image_areas: Sequence[float]
) -> Dict[str, float]:
    """Summary of instance areas (px) per image.

    Returns images, instances, instances_per_image_{mean,median,min,max}, median_area_px,
    median_area_fraction (median area / image area), tiny_fraction, small_fraction and
    coverage (summed instance area / summed image area).
    """
    counts = np.array([len(a) for a in areas_per_image], dtype=np.float64)
    areas = np.concatenate([np.asarray(a, dtype=np.float64) for a in areas_per_image] or [[]])
    total_image_area = float(np.sum(image_areas)) if len(image_areas) else 0.0
    sides = np.sqrt(areas)
    mean_image_area = total_image_area / max(1, len(image_areas))
    has = areas.size > 0
    return {
        "images": int(counts.size),
        "instances": int(areas.size),
        "instances_per_image_mean": float(counts.mean()) if counts.size else 0.0,
        "instances_per_image_median": float(np.median(counts)) if counts.size else 0.0,
        "instances_per_image_min": int(counts.min()) if counts.size else 0,
        "instances_per_image_max": int(counts.max()) if counts.size else 0,
        "median_area_px": float(np.median(areas)) if has else 0.0,
        "median_area_fraction": float(np.median(areas) / mean_image_area) if has else 0.0,
        "tiny_fraction": float(np.mean(sides < TINY_SIDE_PX)) if has else 0.0,
        "small_fraction": float(np.mean(sides < SMALL_SIDE_PX)) if has else 0.0,
        "coverage": float(areas.sum() / total_image_area) if total_image_area else 0.0,
    }


def size_histogram(areas: Sequence[float]) -> List[tuple]:
    """[(label, count)] of instances by sqrt(area) over SIZE_BIN_EDGES."""
    sides = np.sqrt(np.asarray(areas, dtype=np.float64))
    rows = []
    for lo, hi in zip(SIZE_BIN_EDGES[:-1], SIZE_BIN_EDGES[1:]):
        label = f"{lo:g}-{hi:g} px" if np.isfinite(hi) else f">={lo:g} px"
        rows.append((label, int(np.sum((sides >= lo) & (sides < hi)))))
    return rows


def format_statistics(stats: Dict[str, float]) -> str:
    """One human-readable line of the main numbers."""
    return (
        f"{stats['images']} images, {stats['instances']} instances, "
        f"{stats['instances_per_image_mean']:.1f} per image "
        f"(min {stats['instances_per_image_min']}, max {stats['instances_per_image_max']}), "
        f"median area {stats['median_area_px']:.0f} px "
        f"({100 * stats['median_area_fraction']:.3f}% of the image), "
        f"tiny (<{TINY_SIDE_PX:g}px side) {100 * stats['tiny_fraction']:.1f}%, "
        f"coverage {100 * stats['coverage']:.1f}%"
    )

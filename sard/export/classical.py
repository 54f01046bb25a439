"""A learning-free "segment everything" floor: Felzenszwalb's graph-based segmentation.

Any model worth deploying must beat the trivial answer; for automatic masks of grains and
fragments the classical answer is an over-segmentation of the photo into regions of similar
colour. ``FelzenszwalbMaskGenerator`` wraps ``skimage.segmentation.felzenszwalb`` (Felzenszwalb
and Huttenlocher 2004: regions merge while the colour difference across their boundary is below
their internal variation + scale / size) behind the generators' interface,
``generate(image) -> SAM-style records``, so it runs through the same tiling, measurement and
comparison as a student. Regions covering more than ``max_area_fraction`` of the image are taken
as background and dropped.
"""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
from skimage.segmentation import felzenszwalb

from .checks import check_image


class FelzenszwalbMaskGenerator:
    """One record per Felzenszwalb region (``scale``, ``sigma``, ``min_size`` as in scikit-image)
    with ``predicted_iou`` = ``stability_score`` = 1 (there is no score)."""

    def __init__(
        self,
        scale: float = 100.0,
        sigma: float = 0.8,
        min_size: int = 20,
        max_area_fraction: float = 0.25,
    ) -> None:
        if scale <= 0 or sigma < 0 or min_size < 1:
            raise ValueError(
                f"need scale > 0, sigma >= 0, min_size >= 1; got {scale}, {sigma}, {min_size}"
            )
        if not 0 < max_area_fraction <= 1:
            raise ValueError(f"max_area_fraction must be in (0, 1], got {max_area_fraction}")
        self.scale = float(scale)
        self.sigma = float(sigma)
        self.min_size = int(min_size)
        self.max_area_fraction = float(max_area_fraction)

    def generate(self, image: np.ndarray) -> List[Dict[str, Any]]:
        """(H, W, 3) uint8 -> records (segmentation (H, W) bool, area, bbox XYWH in SAM's
        convention, predicted_iou, point_coords (the region's centroid), stability_score,
        crop_box)."""
        check_image(image)
        h, w = image.shape[:2]
        labels = felzenszwalb(image, scale=self.scale, sigma=self.sigma, min_size=self.min_size)
        records = []
        for label in range(int(labels.max()) + 1):
            mask = labels == label
            area = int(mask.sum())
            if area == 0 or area > self.max_area_fraction * h * w:
                continue
            ys, xs = np.nonzero(mask)
            records.append(
                {
                    "segmentation": mask,
                    "area": area,
                    "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs)), int(np.ptp(ys))],
                    "predicted_iou": 1.0,
                    "point_coords": [[float(xs.mean()), float(ys.mean())]],
                    "stability_score": 1.0,
                    "crop_box": [0, 0, w, h],
                }
            )
        return records

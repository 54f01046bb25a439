"""The automatic mask generator's settings: one home for their names and defaults.

``SardAutomaticMaskGenerator`` (``sard.export.automatic``) takes them, the label-free
pseudo-labeler (``sard.distill.pseudo_labels``) extends them, and MODEL.SARD.PSEUDO_LABELS
(``sard.config.sard_config``) takes its defaults from here. The names and defaults are
segment_anything's ``SamAutomaticMaskGenerator``'s (tuned for SAM ViT-H: a small student
predicts lower IoUs, so lower ``pred_iou_thresh`` for it).

A module of its own with no torch or numpy import, so the config can read the defaults
without loading segment_anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


@dataclass(frozen=True)
class AmgSettings:
    """How masks are found from a point grid (see ``sard.export.automatic`` for the algorithm).

    points_per_side: the grid is points_per_side² points per crop (None: ``point_grids``).
    points_per_batch: point prompts decoded at once (memory, not results).
    pred_iou_thresh: keep masks whose predicted IoU exceeds it (0: no filter).
    stability_score_thresh: keep masks with IoU(logits > +offset, logits > -offset) >= it.
    stability_score_offset: the logit offset of the stability score.
    box_nms_thresh: box IoU above which the lower-scored of two masks of a crop is dropped.
    crop_n_layers: layers of smaller crops besides the whole image (each costs encoder passes).
    crop_nms_thresh: box NMS across crops, smaller crops preferred.
    crop_overlap_ratio: overlap of neighbouring crops, as a share of the crop side at layer 1.
    crop_n_points_downscale_factor: grid side divided by this power of the layer in crops.
    point_grids: explicit normalised (N, 2) grids, one per layer (instead of points_per_side).
    min_mask_region_area: fill holes / remove islands below this many px (0: off).
    output_mode: "binary_mask", "uncompressed_rle" or "coco_rle" segmentations.
    """

    points_per_side: Optional[int] = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    point_grids: Optional[Sequence[Any]] = None
    min_mask_region_area: int = 0
    output_mode: str = "binary_mask"

    def __post_init__(self) -> None:
        if (self.points_per_side is None) == (self.point_grids is None):
            raise ValueError("give exactly one of points_per_side and point_grids")
        if self.points_per_side is not None and self.points_per_side < 1:
            raise ValueError(f"points_per_side must be >= 1, got {self.points_per_side}")
        if self.points_per_batch < 1:
            raise ValueError(f"points_per_batch must be >= 1, got {self.points_per_batch}")
        if self.crop_n_layers < 0:
            raise ValueError(f"crop_n_layers must be >= 0, got {self.crop_n_layers}")
        if self.output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {self.output_mode!r}")

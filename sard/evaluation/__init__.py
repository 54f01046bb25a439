"""Evaluation: mIoU and boundary IoU for promptable instance masks and for semantic maps.

Boundary IoU follows Cheng et al. (CVPR 2021) exactly; see `sard.evaluation.boundary`.
"""
from .base import DatasetEvaluator
from .boundary import boundary_dilation, boundary_iou, mask_boundary, mask_iou
from .paired import PairScores, box_fill_scores, mask_bboxes, paired_mask_scores
from .crowding import touching_neighbour_counts
from .prompt_floors import inscribed_ellipse_masks, prompt_floor_scores
from .instance_evaluator import PromptableInstanceEvaluator
from .semantic_evaluator import SemSegBoundaryEvaluator, class_boundary_counts, semseg_metrics

__all__ = [
    "DatasetEvaluator",
    "PairScores",
    "PromptableInstanceEvaluator",
    "SemSegBoundaryEvaluator",
    "box_fill_scores",
    "boundary_dilation",
    "boundary_iou",
    "class_boundary_counts",
    "inscribed_ellipse_masks",
    "mask_bboxes",
    "mask_boundary",
    "mask_iou",
    "paired_mask_scores",
    "prompt_floor_scores",
    "semseg_metrics",
    "touching_neighbour_counts",
]

"""The contracts every teacher and student in `sard.models` follows.

Two kinds of model exist, and the distiller only ever talks to them through these contracts:

* **Promptable** (SAM, EfficientSAM): ``extract_features(images) -> {tap: tensor}`` then
  ``predict_masks(features, prompts) -> PromptableOutput``.
* **Semantic** (Mask2Former, ViT + light decoder): ``forward_semantic(images, targets) ->
  SemanticOutput`` with taps, per-pixel class scores and, when targets are given, the model's own
  task losses.

Images entering ``extract_features`` / ``forward_semantic`` are float tensors (B, 3, H, W) in
0-255 RGB at the model's input size; each model normalises them itself (``preprocess``) so the
data pipeline never needs to know a family's mean and std.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import torch

# Families that take prompts (points, boxes) and return one mask per prompt; every other family
# is semantic. The one list of them.
PROMPTABLE_FAMILIES = ("sam", "efficient_sam")


def is_promptable_family(family: str) -> bool:
    """True for SAM-like families (``PROMPTABLE_FAMILIES``), False for semantic ones."""
    return family in PROMPTABLE_FAMILIES


@dataclass
class Prompts:
    """A batch of prompts, Q per image, N points per prompt.

    points: (B, Q, N, 2) float, (x, y) in model-input pixels (after the mapper's resize).
    labels: (B, Q, N) long, one of ``sard.prompt_labels.LABEL_*``. A box is two points labelled 2 and 3.
    """

    points: torch.Tensor
    labels: torch.Tensor

    def to(self, device: torch.device | str) -> "Prompts":
        return Prompts(self.points.to(device), self.labels.to(device))


@dataclass
class PromptableOutput:
    """mask_logits: (B, Q, M, h, w) low-resolution logits (h = H/4); iou_pred: (B, Q, M)."""

    mask_logits: torch.Tensor
    iou_pred: torch.Tensor


@dataclass
class SemanticOutput:
    """Output of a semantic model.

    features: named taps, e.g. {"mask_features": (B, 256, H/4, W/4)}.
    sem_logits: (B, K, h, w) per-pixel class scores (logits or log-probabilities; what each
        family returns is stated in its docstring), K = number of classes, no void class.
    losses: the model's own task losses (already weighted) when targets were given, else None.
    """

    features: Dict[str, torch.Tensor]
    sem_logits: torch.Tensor
    losses: Optional[Dict[str, torch.Tensor]] = None


def encode(
    model: torch.nn.Module, images: torch.Tensor, valid_hw: Optional[List] = None
) -> Dict[str, torch.Tensor]:
    """``model.extract_features``; a model that pads (SAM, "longest_pad") is told where each
    image's valid region ends, so its padding is zero after normalisation, as in official SAM.

    The mapper pads with 0 in 0-255 units, which SAM's normalisation would turn into about -2.
    """
    if valid_hw is not None and getattr(model, "resize_mode", None) == "longest_pad":
        return model.extract_features(images, valid_hw=valid_hw)
    return model.extract_features(images)

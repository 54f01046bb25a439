"""Turn a list of mapper dicts (detectron2's batch format) into padded tensors for the models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import torch

from sard.models.base import Prompts
from sard.prompt_labels import LABEL_PAD


@dataclass
class PromptBatch:
    """A promptable training batch, prompts padded to the largest count Q in the batch.

    images: (B, 3, S, S) float 0-255; prompts: points (B, Q, N, 2), labels (B, Q, N);
    valid: (B, Q) bool, False on padding prompts; gt_masks: (B, Q, S, S) float in {0, 1}.
    """

    images: torch.Tensor
    prompts: Prompts
    valid: torch.Tensor
    gt_masks: Optional[torch.Tensor]


def stack_images(batched_inputs: List[Dict], device: torch.device) -> torch.Tensor:
    """(B, 3, H, W) float tensor of the mapper's already resized images."""
    return torch.stack([x["image"].to(device=device, dtype=torch.float32) for x in batched_inputs])


def collate_prompts(
    batched_inputs: List[Dict], device: torch.device, with_masks: bool = True
) -> PromptBatch:
    """Pad every image's prompts (and GT masks) to the batch's largest prompt count."""
    images = stack_images(batched_inputs, device)
    size = images.shape[-2:]
    q_max = max(1, max(int(x["points"].shape[0]) for x in batched_inputs))
    n_max = max(1, max(int(x["points"].shape[1]) for x in batched_inputs))
    b = len(batched_inputs)
    points = torch.zeros(b, q_max, n_max, 2, device=device)
    labels = torch.full((b, q_max, n_max), LABEL_PAD, dtype=torch.long, device=device)
    valid = torch.zeros(b, q_max, dtype=torch.bool, device=device)
    masks = torch.zeros(b, q_max, *size, device=device) if with_masks else None
    for i, x in enumerate(batched_inputs):
        q, n = x["points"].shape[:2]
        points[i, :q, :n] = x["points"].to(device)
        labels[i, :q, :n] = x["point_labels"].to(device)
        valid[i, :q] = True
        if masks is not None and q:
            masks[i, :q] = x["gt_masks"].to(device=device, dtype=torch.float32)
    # A batch in which no image has a prompt still needs one (ignored) prompt per image.
    return PromptBatch(images, Prompts(points, labels), valid, masks)

"""The call every distillation loss of one student/teacher pair answers.

    loss(student, teacher, weight=None, targets=None, valid_mask=None) -> {name: weighted term}

``student`` / ``teacher``: the pair the loss ``consumes`` (features (B, C, H, W) or logits, see
``sard.losses.factory``); the teacher is detached here, once, so no loss can send a gradient
into it. ``weight``: W (B, 1, Ht, Wt) for losses that weigh positions (the others ignore it).
``targets``: labels for the logit losses that use them. ``valid_mask``: (B, 1, h, w) bool, the
cells that show the image; only losses with ``handles_padding`` take it. A subclass implements
``terms(pair, **options)``; ``options`` are its own extra keywords (e.g. MGD's fixed ``mask``).
ReviewKD, which compares lists of stages, has a call of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
import torch.nn as nn


@dataclass(frozen=True)
class DistillationPair:
    """One call's inputs, the teacher already detached (see the module docstring)."""

    student: torch.Tensor
    teacher: torch.Tensor
    weight: Optional[torch.Tensor] = None
    targets: Optional[torch.Tensor] = None
    valid_mask: Optional[torch.Tensor] = None


class DistillationLoss(nn.Module):
    """Base of the single-pair distillation losses: ``forward`` detaches the teacher, refuses a
    ``valid_mask`` the loss cannot honour, and hands a ``DistillationPair`` to ``terms``."""

    consumes = "features"
    handles_padding = False  # True: terms leave the padded cells of valid_mask out

    def forward(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        weight: Optional[torch.Tensor] = None,
        targets: Optional[torch.Tensor] = None,
        valid_mask: Optional[torch.Tensor] = None,
        **options: Any,
    ) -> Dict[str, torch.Tensor]:
        if valid_mask is not None and not self.handles_padding:
            raise TypeError(
                f"{type(self).__name__} does not handle padding: call it without valid_mask"
            )
        if isinstance(teacher, torch.Tensor):  # anything else is for terms' checks to name
            teacher = teacher.detach()
        pair = DistillationPair(student, teacher, weight, targets, valid_mask)
        return self.terms(pair, **options)

    def terms(self, pair: DistillationPair) -> Dict[str, torch.Tensor]:
        """The loss's named, already weighted terms for ``pair``."""
        raise NotImplementedError

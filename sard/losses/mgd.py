"""Masked generative distillation (MGD) baseline."""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn as nn

from ._common import check_feature_pair, resize_to, valid_on_grid
from .base import DistillationLoss, DistillationPair
from .registry import need_int, register_method


class MGDLoss(DistillationLoss):
    """MGD (Yang et al., "Masked Generative Distillation", ECCV 2022).

        S' = A(F_S)                         (1x1 conv Cs → Ct, only when Cs != Ct)
        M(i) = 0 with probability λ, else 1 (one draw per position, shared over channels)
        G = Conv3x3(Ct→Ct) → ReLU → Conv3x3(Ct→Ct)
        L = α · Σ_{n,c,i} (G(M ⊙ S')(n,c,i) − F_T(n,c,i))² / N        (N = batch size)

    The student is resized bilinearly to the teacher grid after alignment when sizes differ
    (the official code assumes equal sizes). M is drawn with ``torch.rand`` from the global RNG
    (follows the seed); ``forward(..., mask=M)`` takes a fixed (B, 1, Ht, Wt) mask instead
    (tests, or reproducing a draw). ``weight`` is ignored: MGD is spatially uniform.
    ``valid_mask`` (B, 1, Ht, Wt) bool: padded cells are zeroed in the generator's input (as
    dropped ones) and left out of the sum, so a padded image's padding is neither a cue nor a
    target.

    Defaults: α = 2e-5, λ = 0.75, the paper's semantic-segmentation setting (the sum over
    C·H·W is large, hence the tiny α). Returns {"loss_mgd"}.
    """

    handles_padding = True

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        alpha: float = 2e-5,
        lambda_mask: float = 0.75,
    ) -> None:
        super().__init__()
        if not 0.0 <= lambda_mask < 1.0:
            raise ValueError(f"MGD lambda_mask must be in [0, 1), got {lambda_mask}")
        self.student_channels = int(student_channels)
        self.teacher_channels = int(teacher_channels)
        self.alpha = float(alpha)
        self.lambda_mask = float(lambda_mask)
        self.align: Optional[nn.Module] = None
        if self.student_channels != self.teacher_channels:
            self.align = nn.Conv2d(self.student_channels, self.teacher_channels, kernel_size=1)
        c = self.teacher_channels
        self.generation = nn.Sequential(
            nn.Conv2d(c, c, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, kernel_size=3, padding=1),
        )

    def random_mask(self, reference: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) of 0 (dropped, probability λ) and 1 (kept), in reference's dtype."""
        b, _, h, w = reference.shape
        draw = torch.rand((b, 1, h, w), device=reference.device)
        return (draw >= self.lambda_mask).to(reference.dtype)

    def terms(
        self, pair: DistillationPair, mask: Optional[torch.Tensor] = None
    ) -> Dict[str, torch.Tensor]:
        """{"loss_mgd"}; ``mask`` (B, 1, Ht, Wt) of 0/1 replaces the random draw (tests)."""
        student, teacher = pair.student, pair.teacher
        check_feature_pair(student, teacher, self.student_channels, self.teacher_channels)
        aligned = self.align(student) if self.align is not None else student
        aligned = resize_to(aligned, teacher.shape[-2:])
        if mask is None:
            mask = self.random_mask(aligned)
        elif tuple(mask.shape) != (aligned.shape[0], 1, *aligned.shape[-2:]):
            raise ValueError(
                f"MGD mask must be (B, 1, Ht, Wt) = {(aligned.shape[0], 1, *aligned.shape[-2:])}, "
                f"got {tuple(mask.shape)}"
            )
        valid = valid_on_grid(pair.valid_mask, teacher)
        if valid is not None:
            mask = mask * valid.to(mask.dtype)
        generated = self.generation(aligned * mask.to(aligned.dtype))
        sq = (generated.float() - teacher.float()).pow(2)
        sq_sum = (sq if valid is None else sq * valid).sum()
        return {"loss_mgd": self.alpha * sq_sum / teacher.shape[0]}


register_method(
    "mgd",
    keys={
        "ALPHA": (2e-5, "loss weight for segmentation (official)"),
        "LAMBDA": (0.75, "masking ratio of the student features"),
    },
    build=lambda cs, ct, **kwargs: MGDLoss(need_int(cs), need_int(ct), **kwargs),
    kwargs=lambda hp, inputs: dict(alpha=hp.ALPHA, lambda_mask=hp.LAMBDA),
)

"""SARD's two representation losses on projected features: L_FC and L_DA.

Both take the projected student map F̂_S and projected teacher map F̂_T, (B, D, H, W) on the
teacher's grid, and a spatial weight W (B, 1, H, W) that sums to 1 over each image (the
structure map of ``sard.structure``, or 1/(H*W) for uniform feature distillation). The
projections themselves live in ``SARDDistillationHead`` so that both losses share them.

Paper: "Structure-Aware Representation Distillation for Tiny-Dense Object Segmentation"
(SARD, CVPR 2026), Sec. "Feature Consistency + Distribution Alignment".
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn


def _check_pair(fs: torch.Tensor, ft: torch.Tensor, weight: torch.Tensor) -> None:
    if fs.dim() != 4 or fs.shape != ft.shape:
        raise ValueError(
            f"projected student {tuple(fs.shape)} and teacher {tuple(ft.shape)} maps must both "
            f"be (B, D, H, W) on the same grid"
        )
    b, _, h, w = ft.shape
    if tuple(weight.shape) != (b, 1, h, w):
        raise ValueError(f"weight must be (B, 1, H, W) = {(b, 1, h, w)}, got {tuple(weight.shape)}")


def weighted_position_sum(per_position: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(1/B) Σ_b Σ_i W_b(i) · v_b(i) for per-position values v (B, 1, H, W), in float32.

    A position with W(i) = 0 contributes an exact zero to the value and to every gradient.
    """
    return (weight.float() * per_position.float()).flatten(1).sum(1).mean()


class FeatureConsistencyLoss(nn.Module):
    """L_FC = (1/B) Σ_b Σ_i W_b(i) · ‖F̂_S(i) − F̂_T(i)‖² / D  (SARD, CVPR 2026, Eq. L_FC).

    Point-wise alignment of projected student and teacher features, weighted by the structure
    map. Dividing by D makes the value a per-channel mean squared error, so with W summing to
    1 per image it is on the scale of one channel's variance (≈1 with the normalised teacher
    target of ``SARDDistillationHead``) whatever D is. No parameters.
    """

    def forward(
        self, student_proj: torch.Tensor, teacher_proj: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        _check_pair(student_proj, teacher_proj, weight)
        diff = student_proj.float() - teacher_proj.float()
        per_position = diff.pow(2).mean(dim=1, keepdim=True)
        return weighted_position_sum(per_position, weight)


class DistributionAlignmentLoss(nn.Module):
    """L_DA: W-weighted denoising score matching (SARD, CVPR 2026, Eq. L_DA).

        F̃_T = √α · F̂_T + √(1−α) · ε,     ε ~ N(0, I)
        L_DA = (1/B) Σ_b Σ_i W_b(i) · ‖g_θ(F̂_S, F̃_T)(i) − ε(i)‖² / D

    g_θ is a lightweight denoiser on the channel concatenation [F̂_S, F̃_T]:
    3x3 conv (2D → hidden) → GELU → 1x1 conv (hidden → D); hidden = D by default, the
    smallest width that still lets it carry D channels of signal through the GELU.

    Predicting ε well needs F̂_T, which only the student branch can supply: the loss therefore
    pulls F̂_S towards the teacher's (noisy) feature distribution. ε is drawn with
    ``torch.randn`` from ``generator`` (default: torch's global RNG, so ``torch.manual_seed``
    makes runs repeatable), always in float32 so the draw does not depend on precision.

    Args:
        dim: D, channels of the projected maps.
        alpha: signal level α in (0, 1); 0.5 (paper) gives equal signal and noise power on a
            unit-variance target. A sequence of levels turns on the multi-scale variant the
            paper suggests as future work (off by default): each level draws its own ε, the
            denoiser gets α as one extra constant input channel, and L_DA is the mean over
            levels.
        hidden: denoiser width (default D).
        generator: optional ``torch.Generator`` for ε (default None = global RNG).

    Gradient note: the 3x3 conv mixes neighbours, so the student map at position j receives
    gradient from every position i of its 3x3 neighbourhood with W(i) > 0; positions whose
    whole neighbourhood has W = 0 receive exactly none. ``valid_mask`` (B, 1, H, W) bool zeroes
    both inputs on padded cells before g_θ (as the conv's own zero padding at the map border),
    so padded cells reach neither the loss nor, through the conv, any gradient.
    """

    def __init__(
        self,
        dim: int,
        alpha: Union[float, Sequence[float]] = 0.5,
        hidden: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
    ) -> None:
        super().__init__()
        alphas: Tuple[float, ...] = (
            (float(alpha),) if isinstance(alpha, (int, float)) else tuple(map(float, alpha))
        )
        if not alphas or any(not 0.0 < a < 1.0 for a in alphas):
            raise ValueError(f"alpha must be a level (or levels) in (0, 1), got {alpha!r}")
        self.dim = int(dim)
        self.alphas = alphas
        self.condition_on_alpha = len(alphas) > 1
        hidden = int(hidden or dim)
        in_channels = 2 * self.dim + int(self.condition_on_alpha)
        self.denoiser = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size=3, padding=1),
            nn.GELU(),
            nn.Conv2d(hidden, self.dim, kernel_size=1),
        )
        self.generator = generator

    def forward(
        self,
        student_proj: torch.Tensor,
        teacher_proj: torch.Tensor,
        weight: torch.Tensor,
        valid_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        _check_pair(student_proj, teacher_proj, weight)
        if student_proj.shape[1] != self.dim:
            raise ValueError(f"L_DA was built for D={self.dim}, got {student_proj.shape[1]}")
        level_losses = []
        for alpha in self.alphas:
            eps = torch.randn(
                teacher_proj.shape,
                generator=self.generator,
                device=teacher_proj.device,
                dtype=torch.float32,
            )
            noisy = math.sqrt(alpha) * teacher_proj.float() + math.sqrt(1.0 - alpha) * eps
            inputs = [student_proj, noisy.to(student_proj.dtype)]
            if valid_mask is not None:
                inputs = [x * valid_mask.to(x.dtype) for x in inputs]
            if self.condition_on_alpha:
                inputs.append(torch.full_like(student_proj[:, :1], alpha))
            eps_pred = self.denoiser(torch.cat(inputs, dim=1))
            per_position = (eps_pred.float() - eps).pow(2).mean(dim=1, keepdim=True)
            level_losses.append(weighted_position_sum(per_position, weight))
        return torch.stack(level_losses).mean()

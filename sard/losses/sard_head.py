"""SARDDistillationHead: projections P_S, P_T shared by L_FC and L_DA, plus the weight map W.

Paper: "Structure-Aware Representation Distillation for Tiny-Dense Object Segmentation"
(SARD, CVPR 2026): L_repr = λ_f · L_FC + λ_d · L_DA with W(i) from the teacher's features.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._common import (
    check_feature_pair,
    resize_to,
    uniform_weight,
    valid_on_grid,
)
from sard.config.sard_config import STRUCTURE_MAP_SETTINGS, structure_map_kwargs

from .base import DistillationLoss, DistillationPair
from .registry import MethodInputs, need_int, register_method
from .representation import DistributionAlignmentLoss, FeatureConsistencyLoss

WEIGHTINGS = ("structure", "uniform")
TEACHER_PROJECTIONS = ("frozen", "learnable")


def normalize_per_position(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """LayerNorm over channels at every position, no affine: (x − mean_c) / sqrt(var_c + eps)."""
    x = x.float()
    mean = x.mean(dim=1, keepdim=True)
    var = x.var(dim=1, keepdim=True, unbiased=False)
    return (x - mean) * torch.rsqrt(var + eps)


class TeacherProjection(nn.Module):
    """P_T, a 1x1 conv teacher_channels → dim, either learnable or frozen.

    Frozen (default): weight and bias are buffers (saved in the state dict, never handed to an
    optimizer, immune to ``requires_grad_``). Weight = identity when teacher_channels == dim,
    so the target is the teacher's own features; otherwise a random (semi-)orthogonal matrix
    drawn from the global RNG, which keeps the teacher's feature geometry (an isometry when
    dim >= teacher_channels, a random subspace otherwise).
    """

    def __init__(self, teacher_channels: int, dim: int, learnable: bool) -> None:
        super().__init__()
        self.learnable = learnable
        if learnable:
            self.conv: Optional[nn.Conv2d] = nn.Conv2d(teacher_channels, dim, kernel_size=1)
            return
        self.conv = None
        weight = torch.empty(dim, teacher_channels)
        if dim == teacher_channels:
            nn.init.eye_(weight)
        else:
            nn.init.orthogonal_(weight)
        self.register_buffer("weight", weight[:, :, None, None])
        self.register_buffer("bias", torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is not None:
            return self.conv(x)
        return F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype))


class SARDDistillationHead(DistillationLoss):
    """SARD's representation loss: {"loss_fc": λ_f·L_FC, "loss_da": λ_d·L_DA}.

        F̂_S = resize(P_S(F_S)) to the teacher grid (bilinear) when the sizes differ
        F̂_T = LN_c(P_T(F_T))               (per-position LayerNorm, no affine)
        L_FC = (1/B) Σ_b Σ_i W_b(i) ‖F̂_S(i) − F̂_T(i)‖² / D
        L_DA = (1/B) Σ_b Σ_i W_b(i) ‖g_θ(F̂_S, √α F̂_T + √(1−α) ε)(i) − ε(i)‖² / D

    W: ``weight`` when given (B, 1, Ht, Wt), e.g. cached structure maps; else for
    ``weighting="structure"`` ``sard.structure.compute_structure_map(F_T, beta_e, beta_c,
    beta_d, radius, sigma).weight`` (no grad), for ``weighting="uniform"`` 1/(Ht·Wt) (uniform
    feature distillation, the paper's "Uniform SARD (W=1)" ablation; a passed ``weight`` is
    ignored). The W ablations (E only, D only, ...) are betas set to 0.

    Collapse guard (why P_T is frozen and its output normalised): with P_T learnable, both
    losses reach 0 without the student learning anything: P_T shrinks (or turns constant),
    F̂_S copies that constant through its bias, and g_θ reads ε straight off F̃_T. A per-position
    LayerNorm alone does not stop it either: P_T can map every position to the same vector,
    whose normalised image is still one constant. So the default freezes P_T (identity or a
    random orthogonal map: the target is a fixed function of the teacher) and normalises it
    per position, which (a) keeps the target off any trainable parameter and (b) fixes its
    scale at 1 per channel, the scale α = 0.5 assumes (equal signal and noise power); raw SAM
    embeddings are far smaller, where ε would be readable from F̃_T. With an uninformative
    student the floors are then L_FC ≈ 1 and L_DA ≈ α (the posterior variance of ε given F̃_T
    alone); ``tests/losses/test_losses_sard.py`` checks both and shows the unguarded head collapsing.
    ``teacher_projection="learnable"`` with ``normalize_teacher=False`` is the literal,
    unguarded reading of the paper, kept for ablations only.

    Defaults: D = 256, λ_f = 1, λ_d = 0.5, α = 0.5, β_e = 2, β_c = 1, β_d = 1, r = 7 (paper);
    σ = 1 feature pixel for the structure tensor window (the structure helper's default).
    No gradient reaches the teacher features or W.

    Args:
        student_channels, teacher_channels: channels of F_S and F_T.
        dim: D, channels of the shared projection space.
        lambda_f, lambda_d: weights of L_FC and L_DA (already applied to the returned terms).
        alpha: noise level(s) of L_DA (see ``DistributionAlignmentLoss``).
        weighting: "structure" or "uniform".
        teacher_projection: "frozen" (guard, default) or "learnable".
        normalize_teacher: per-position LayerNorm on P_T's output (guard, default True).
        denoiser_hidden: width of g_θ (default D).
        **structure: beta_e, beta_c, beta_d, radius, sigma, border_cells (any subset),
            forwarded to ``compute_structure_map``, whose defaults apply to the rest.
    """

    handles_padding = True

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        dim: int = 256,
        lambda_f: float = 1.0,
        lambda_d: float = 0.5,
        alpha: Union[float, Sequence[float]] = 0.5,
        weighting: str = "structure",
        teacher_projection: str = "frozen",
        normalize_teacher: bool = True,
        denoiser_hidden: Optional[int] = None,
        **structure: Any,
    ) -> None:
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        if teacher_projection not in TEACHER_PROJECTIONS:
            raise ValueError(
                f"teacher_projection must be one of {TEACHER_PROJECTIONS}, "
                f"got {teacher_projection!r}"
            )
        self.student_channels = int(student_channels)
        self.teacher_channels = int(teacher_channels)
        self.dim = int(dim)
        self.lambda_f = float(lambda_f)
        self.lambda_d = float(lambda_d)
        self.weighting = weighting
        unknown = sorted(set(structure) - set(STRUCTURE_MAP_SETTINGS))
        if unknown:
            raise TypeError(
                f"SARDDistillationHead got unexpected keyword argument(s) {unknown}; the "
                f"structure map takes {list(STRUCTURE_MAP_SETTINGS)}"
            )
        # compute_structure_map's signature holds the defaults (imported here for the reason
        # weight_map gives); all six are kept, as they key the teacher cache.
        from sard.structure import compute_structure_map

        defaults = inspect.signature(compute_structure_map).parameters
        self.structure_kwargs = {
            name: structure.get(name, defaults[name].default) for name in STRUCTURE_MAP_SETTINGS
        }
        self.normalize_teacher = bool(normalize_teacher)
        self.student_proj = nn.Conv2d(self.student_channels, self.dim, kernel_size=1)
        self.teacher_proj = TeacherProjection(
            self.teacher_channels, self.dim, learnable=teacher_projection == "learnable"
        )
        self.feature_consistency = FeatureConsistencyLoss()
        self.distribution_alignment = DistributionAlignmentLoss(
            self.dim, alpha=alpha, hidden=denoiser_hidden
        )

    @property
    def structure_settings(self) -> Optional[Dict]:
        """What W depends on besides the teacher features (beta_e, beta_c, beta_d, radius,
        sigma, border_cells) when W is a structure map, which the distiller then caches with
        the teacher's taps (``weight_map`` of them) and keys the cache on; None for uniform
        weighting, whose W needs no teacher."""
        return dict(self.structure_kwargs) if self.weighting == "structure" else None

    def weight_map(
        self, teacher: torch.Tensor, valid_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """W (B, 1, Ht, Wt) in float32, no grad: structure map or uniform, per ``weighting``;
        with ``valid_mask`` (B, 1, Ht, Wt) both are 0 on padded cells and sum to 1 on the rest.

        The one place W is computed (the distiller asks here too): in float32 with autocast
        off whatever the caller's precision, as every loss reduction here is (see _common)."""
        if self.weighting == "uniform":
            return uniform_weight(teacher, valid_mask)
        # Imported here so sard.losses imports even where sard.structure is not installed yet.
        from sard.structure import compute_structure_map

        with torch.no_grad(), torch.autocast(device_type=teacher.device.type, enabled=False):
            smap = compute_structure_map(
                teacher.detach().float(), valid_mask=valid_mask, **self.structure_kwargs
            )
        return smap.weight.detach().float()

    def project_teacher(self, teacher: torch.Tensor) -> torch.Tensor:
        """F̂_T = LN_c(P_T(F_T)) (LN only with ``normalize_teacher``); no grad when P_T is frozen."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.teacher_proj.learnable):
            projected = self.teacher_proj(teacher.detach())
            return normalize_per_position(projected) if self.normalize_teacher else projected

    def project_student(self, student: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """F̂_S = P_S(F_S), resized bilinearly to ``size`` (the teacher grid) when it differs."""
        return resize_to(self.student_proj(student), size)

    def terms(self, pair: DistillationPair) -> Dict[str, torch.Tensor]:
        """Student (B, Cs, Hs, Ws), teacher (B, Ct, Ht, Wt) → {"loss_fc", "loss_da"} (weighted).

        ``valid_mask`` (B, 1, Ht, Wt) bool marks the cells that show the image (padded ones are
        False, see ``sard.structure.valid_region``): W is 0 on the others (a given ``weight``
        must be, e.g. ``compute_structure_map(..., valid_mask=...)``), and L_DA's denoiser sees
        zeros there. ``targets`` is accepted for the common loss interface and unused.
        """
        student, teacher, weight = pair.student, pair.teacher, pair.weight
        check_feature_pair(student, teacher, self.student_channels, self.teacher_channels)
        valid = valid_on_grid(pair.valid_mask, teacher)
        if self.weighting == "uniform" or weight is None:
            weight = self.weight_map(teacher, valid)
        else:
            weight = weight.detach().float()
            if valid is not None and bool((weight.masked_select(~valid) != 0).any()):
                raise ValueError(
                    "weight is not 0 on the padded cells of valid_mask: compute it with "
                    "compute_structure_map(..., valid_mask=valid_mask)"
                )
        expected = (teacher.shape[0], 1, *teacher.shape[-2:])
        if tuple(weight.shape) != expected:
            raise ValueError(
                f"weight must be (B, 1, Ht, Wt) = {expected} on the teacher grid, "
                f"got {tuple(weight.shape)}"
            )
        fs = self.project_student(student, teacher.shape[-2:])
        ft = self.project_teacher(teacher)
        return {
            "loss_fc": self.lambda_f * self.feature_consistency(fs, ft, weight),
            "loss_da": self.lambda_d * self.distribution_alignment(fs, ft, weight, valid),
        }


def _sard_kwargs(s, inputs: MethodInputs) -> dict:
    """SARD's head from MODEL.SARD's own keys (see sard.config.sard_config)."""
    alphas = [float(a) for a in s.DA_ALPHAS]
    return dict(
        dim=s.PROJ_DIM,
        lambda_f=s.LAMBDA_F,
        lambda_d=s.LAMBDA_D,
        alpha=alphas or s.ALPHA,
        **structure_map_kwargs(s),
    )


def _sard_builder(weighting: str):
    def build(cs, ct, **kwargs) -> SARDDistillationHead:
        if "weighting" in kwargs:
            raise ValueError(f"weighting={weighting!r} is fixed by the method; do not pass it")
        return SARDDistillationHead(need_int(cs), need_int(ct), weighting=weighting, **kwargs)

    return build


register_method("sard", build=_sard_builder("structure"), kwargs=_sard_kwargs)
register_method("uniform", build=_sard_builder("uniform"), kwargs=_sard_kwargs)

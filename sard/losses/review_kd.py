"""ReviewKD ("multi-layer review") baseline: ABF top-down fusion + hierarchical context loss."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._common import check_feature_pair
from .registry import need_list, register_method

HCL_LEVELS = (4, 2, 1)


def hierarchical_context_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """HCL of one stage pair (B, C, H, W):

        HCL = (MSE(S, T) + Σ_k 2^-k · MSE(pool_{l_k}(S), pool_{l_k}(T))) / (1 + Σ_k 2^-k)

    pool_l is adaptive average pooling to l x l; the levels l_k run over 4, 2, 1, keeping those
    smaller than min(H, W), and the k-th kept level gets weight 2^-k (k = 1, 2, ...).
    """
    loss = F.mse_loss(student.float(), teacher.float())
    level_weight, total = 1.0, 1.0
    for level in HCL_LEVELS:
        if level >= min(student.shape[-2:]):
            continue
        level_weight /= 2.0
        pooled_s = F.adaptive_avg_pool2d(student.float(), (level, level))
        pooled_t = F.adaptive_avg_pool2d(teacher.float(), (level, level))
        loss = loss + level_weight * F.mse_loss(pooled_s, pooled_t)
        total += level_weight
    return loss / total


class AttentionBasedFusion(nn.Module):
    """ABF: x = BN(Conv1x1(F_S)); with a deeper residual y (nearest-resized to x),
    [a, b] = sigmoid(Conv1x1([x, y])) and x ← a·x + b·y; then x is nearest-resized to the
    teacher stage's size, out = BN(Conv3x3(x)) (teacher channels), and x is handed on as the
    residual of the next shallower stage.
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool) -> None:
        super().__init__()
        self.reduce = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(mid_channels),
        )
        self.output = nn.Sequential(
            nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.attention: Optional[nn.Module] = None
        if fuse:
            self.attention = nn.Sequential(
                nn.Conv2d(2 * mid_channels, 2, kernel_size=1), nn.Sigmoid()
            )
        # Same init as the official code (a = 1: a linear-friendly Kaiming uniform).
        nn.init.kaiming_uniform_(self.reduce[0].weight, a=1)
        nn.init.kaiming_uniform_(self.output[0].weight, a=1)

    def forward(
        self, x: torch.Tensor, residual: Optional[torch.Tensor], out_size: Sequence[int]
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.reduce(x)
        if self.attention is not None:
            if residual is None:
                raise ValueError("a fusing ABF stage needs the deeper stage's residual")
            y = F.interpolate(residual, size=x.shape[-2:], mode="nearest")
            att = self.attention(torch.cat([x, y], dim=1))
            x = x * att[:, :1] + y * att[:, 1:2]
        if tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, size=tuple(out_size), mode="nearest")
        return self.output(x), x


class ReviewKDLoss(nn.Module):
    """ReviewKD (Chen et al., "Distilling Knowledge via Knowledge Review", CVPR 2021).

    Student stage features S_1..S_L (shallow → deep; any channels and sizes) are fused top-down
    by attention-based fusion: the deepest stage is reduced alone, each shallower stage is fused
    with the residual from the stage below it, and each fused map is mapped to the matching
    teacher stage's channels and size. The loss compares each output with its teacher stage
    by the hierarchical context loss:

        L = w · Σ_l HCL(ABF_l(S_l, residual_{l+1}), T_l)

    ABF and HCL follow the official code (nearest resizing, BatchNorm, levels 4/2/1 with halving
    weights), except that HCL keeps levels below min(H, W) rather than below H.

    Args:
        student_channels, teacher_channels: per-stage channels, same number of stages.
        mid_channels: width of the fused maps (256, the official ImageNet/COCO value).
        weight: w (1.0, the official default; its warm-up: MODEL.SARD.DISTILL_WARMUP_ITERS).

    ``forward(student: list, teacher: list)``, lists of (B, C_l, H_l, W_l) maps in the stage
    order given at construction; ``weight`` / ``targets`` are ignored. Returns
    {"loss_reviewkd"}.
    """

    consumes = "multi_features"

    def __init__(
        self,
        student_channels: Sequence[int],
        teacher_channels: Sequence[int],
        mid_channels: int = 256,
        weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.student_channels = [int(c) for c in student_channels]
        self.teacher_channels = [int(c) for c in teacher_channels]
        if not self.student_channels or len(self.student_channels) != len(self.teacher_channels):
            raise ValueError(
                f"ReviewKD needs the same non-zero number of student and teacher stages, got "
                f"{self.student_channels} and {self.teacher_channels}"
            )
        self.weight = float(weight)
        last = len(self.student_channels) - 1
        self.fusions = nn.ModuleList(
            AttentionBasedFusion(cs, mid_channels, ct, fuse=i < last)
            for i, (cs, ct) in enumerate(zip(self.student_channels, self.teacher_channels))
        )

    def review(
        self, student: Sequence[torch.Tensor], out_sizes: Sequence[Sequence[int]]
    ) -> List[torch.Tensor]:
        """Top-down ABF outputs, one per stage (shallow → deep), at the given sizes."""
        outputs: List[Optional[torch.Tensor]] = [None] * len(student)
        residual: Optional[torch.Tensor] = None
        for i in reversed(range(len(student))):
            outputs[i], residual = self.fusions[i](student[i], residual, out_sizes[i])
        return [o for o in outputs if o is not None]

    def forward(
        self,
        student: Sequence[torch.Tensor],
        teacher: Sequence[torch.Tensor],
        weight: Optional[torch.Tensor] = None,
        targets: Optional[torch.Tensor] = None,
    ) -> Dict[str, torch.Tensor]:
        n = len(self.student_channels)
        if len(student) != n or len(teacher) != n:
            raise ValueError(
                f"ReviewKD was built for {n} stages, got {len(student)} student and "
                f"{len(teacher)} teacher maps"
            )
        for i, (s, t) in enumerate(zip(student, teacher)):
            check_feature_pair(
                s, t, self.student_channels[i], self.teacher_channels[i], f"stage {i}"
            )
        teacher = [t.detach() for t in teacher]
        outputs = self.review(student, [t.shape[-2:] for t in teacher])
        loss = sum(hierarchical_context_loss(o, t) for o, t in zip(outputs, teacher))
        return {"loss_reviewkd": self.weight * loss}


def _review_taps(cfg) -> list:
    taps = list(cfg.MODEL.SARD.REVIEWKD.TAPS)
    if not taps:
        raise ValueError("MODEL.SARD.METHOD='reviewkd' needs MODEL.SARD.REVIEWKD.TAPS")
    return taps


register_method(
    "reviewkd",
    keys={
        "WEIGHT": (1.0, "loss weight"),
        "TAPS": ([], "stage taps, the same names on teacher and student"),
    },
    build=lambda cs, ct, **kwargs: ReviewKDLoss(need_list(cs), need_list(ct), **kwargs),
    kwargs=lambda hp, inputs: dict(weight=hp.WEIGHT),
    taps=_review_taps,
)

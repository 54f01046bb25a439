"""Channel-wise distillation (CWD) baseline."""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._common import (
    check_feature_pair,
    check_logit_form,
    class_logit_pair,
    mask_logit_pair,
    masked_mean,
    resize_to,
    valid_on_grid,
)
from .base import DistillationLoss, DistillationPair
from .registry import need_int, register_method

CWD_INPUTS = ("logits", "features")


def channel_wise_kl(
    student: torch.Tensor,
    teacher: torch.Tensor,
    tau: float,
    valid: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """τ² · KL(φ(t/τ) ‖ φ(s/τ)) per channel, φ = softmax over the last two dims: shape (...).

    ``valid`` (bool, broadcastable to the maps): the softmax and the sum run over valid
    positions only (padded cells of a padded image are no positions of the scene).
    """
    t = teacher.float() / tau
    s = student.float() / tau
    if valid is None:
        log_p_t = F.log_softmax(t.flatten(-2), dim=-1)
        log_p_s = F.log_softmax(s.flatten(-2), dim=-1)
        return tau**2 * (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)
    keep = valid.expand_as(t).flatten(-2)
    log_p_t = F.log_softmax(t.flatten(-2).masked_fill(~keep, float("-inf")), dim=-1)
    log_p_s = F.log_softmax(s.flatten(-2).masked_fill(~keep, float("-inf")), dim=-1)
    # Padded positions: p_T = 0, and both logs -inf; zero them so neither value nor gradient
    # picks up 0 * (inf - inf).
    diff = torch.where(keep, log_p_t - log_p_s, 0.0)
    return tau**2 * (log_p_t.exp() * diff).sum(-1)


class ChannelWiseDistillationLoss(DistillationLoss):
    """CWD (Shu et al., "Channel-wise Knowledge Distillation for Dense Prediction", ICCV 2021).

        φ(y_c) = softmax over the H·W positions of y_c / τ   (one distribution per channel)
        L = w · τ² / (N·C) · Σ_{n,c} KL(φ(y_T,n,c) ‖ φ(y_S,n,c))

    Inputs (``on``):
      * "logits" (default, as in the paper): ``logit_form="class"`` takes (B, K, H, W) class
        logits, one channel per class; ``logit_form="mask"`` takes binary mask logits
        (..., h, w), e.g. (B, Q, M, h, w), one "channel" per mask, and ``targets`` may be a bool
        ``valid`` (B, Q) so padding prompts are left out of the mean.
      * "features": (B, Cs, Hs, Ws) student and (B, Ct, Ht, Wt) teacher maps; a 1x1 conv aligns
        the student to Ct channels when Cs != Ct (learnable, as feature-CWD needs one).
    Student maps are resized bilinearly to the teacher grid when sizes differ. ``weight``
    (the structure map) is ignored: CWD is spatially uniform by design. ``valid_mask`` (bool,
    (..., 1, h, w) with the maps' leading dims, resized nearest to the teacher grid) leaves
    padded positions out of every spatial softmax.

    Defaults: τ = 4, w = 3, the official code's Cityscapes setting (mmrazor uses τ = 1, w = 5).
    Returns {"loss_cwd"}.
    """

    handles_padding = True

    def __init__(
        self,
        on: str = "logits",
        tau: float = 4.0,
        weight: float = 3.0,
        logit_form: str = "class",
        student_channels: Optional[int] = None,
        teacher_channels: Optional[int] = None,
    ) -> None:
        super().__init__()
        if on not in CWD_INPUTS:
            raise ValueError(f"CWD 'on' must be one of {CWD_INPUTS}, got {on!r}")
        self.on = on
        self.consumes = on
        self.tau = float(tau)
        self.weight = float(weight)
        self.logit_form = check_logit_form(logit_form)
        self.align: Optional[nn.Module] = None
        if on == "features":
            if student_channels is None or teacher_channels is None:
                raise ValueError("CWD on features needs student_channels and teacher_channels")
            if student_channels != teacher_channels:
                self.align = nn.Conv2d(student_channels, teacher_channels, kernel_size=1)
        self.student_channels = student_channels
        self.teacher_channels = teacher_channels

    def terms(self, pair: DistillationPair) -> Dict[str, torch.Tensor]:
        """{"loss_cwd"} on the features or the logits (``on``), see the class docstring."""
        student, teacher, targets = pair.student, pair.teacher, pair.targets
        valid = None
        if self.on == "features":
            check_feature_pair(student, teacher, self.student_channels, self.teacher_channels)
            if self.align is not None:
                student = self.align(student)
            student = resize_to(student, teacher.shape[-2:])
        elif self.logit_form == "class":
            student, teacher, _, _ = class_logit_pair(student, teacher, None)
        else:
            student, teacher, valid = mask_logit_pair(student, teacher, targets)
            if valid is not None:
                valid = valid[..., 0, 0]  # one entry per mask, matching the per-channel KL
        per_channel = channel_wise_kl(
            student, teacher, self.tau, valid_on_grid(pair.valid_mask, teacher)
        )
        return {"loss_cwd": self.weight * masked_mean(per_channel, valid)}


def _build_cwd(cs, ct, on: str = "logits", **kwargs) -> ChannelWiseDistillationLoss:
    if on == "features":  # a 1x1 conv aligns student channels to the teacher's
        kwargs.update(student_channels=need_int(cs), teacher_channels=need_int(ct))
    return ChannelWiseDistillationLoss(on=on, **kwargs)


register_method(
    "cwd",
    keys={
        "TAU": (4.0, "temperature of the spatial softmax (official Cityscapes setting)"),
        "WEIGHT": (3.0, "loss weight (official Cityscapes setting)"),
        "INPUT": ("logits", '"logits" (the paper\'s baseline) or "features" (the distilled tap)'),
    },
    build=_build_cwd,
    kwargs=lambda hp, inputs: dict(
        on=hp.INPUT, tau=hp.TAU, weight=hp.WEIGHT, logit_form=inputs.logit_form
    ),
)

"""Per-pixel logit distillation baselines: Hinton KD and pixel-wise SKD.

Both accept either form of logits, chosen by ``logit_form``:

* ``"class"``: semantic class logits (B, K, H, W), softmax over dim 1. ``targets`` (optional)
  is a (B, H', W') label map; pixels labelled ``ignore_index`` (255) are left out. It is
  resized (nearest) to the teacher grid; student logits are resized (bilinear) to it.
* ``"mask"``: binary mask logits (..., h, w), e.g. (B, Q, M, h, w) or (N, M, h, w); every
  element is an independent binary event (sigmoid). ``targets`` (optional) is a bool tensor
  over the leading dims, e.g. ``valid`` (B, Q), marking real prompts.
"""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F

from ._common import (
    IGNORE_LABEL,
    check_logit_form,
    class_logit_pair,
    mask_logit_pair,
    masked_mean,
)
from .base import DistillationLoss, DistillationPair
from .registry import register_method


def binary_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(Bern(σ(t)) ‖ Bern(σ(s))), computed with log-sigmoids (stable)."""
    t, s = teacher_logits.float(), student_logits.float()
    p_t = torch.sigmoid(t)
    log_pos_t, log_neg_t = F.logsigmoid(t), F.logsigmoid(-t)
    log_pos_s, log_neg_s = F.logsigmoid(s), F.logsigmoid(-s)
    return p_t * (log_pos_t - log_pos_s) + (1.0 - p_t) * (log_neg_t - log_neg_s)


def binary_soft_cross_entropy(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor
) -> torch.Tensor:
    """Elementwise −[σ(t) log σ(s) + (1 − σ(t)) log(1 − σ(s))]."""
    p_t = torch.sigmoid(teacher_logits.float())
    s = student_logits.float()
    return -(p_t * F.logsigmoid(s) + (1.0 - p_t) * F.logsigmoid(-s))


class _PixelLogitLoss(DistillationLoss):
    consumes = "logits"
    key = ""

    def __init__(self, logit_form: str, weight: float, ignore_index: int) -> None:
        super().__init__()
        self.logit_form = check_logit_form(logit_form)
        self.weight = float(weight)
        self.ignore_index = int(ignore_index)

    def _class_term(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _mask_term(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def terms(self, pair: DistillationPair) -> Dict[str, torch.Tensor]:
        """{self.key: w · mean of the per-pixel term} over the valid pixels or prompts."""
        student, teacher, targets = pair.student, pair.teacher, pair.targets
        if self.logit_form == "class":
            student, teacher, _, valid = class_logit_pair(
                student, teacher, targets, self.ignore_index
            )
            per_pixel = self._class_term(student, teacher)  # (B, H, W)
        else:
            student, teacher, valid = mask_logit_pair(student, teacher, targets)
            per_pixel = self._mask_term(student, teacher)
        return {self.key: self.weight * masked_mean(per_pixel, valid)}


class LogitKDLoss(_PixelLogitLoss):
    """Hinton KD per pixel (Hinton et al., "Distilling the Knowledge in a Neural Network", 2015).

        class form: L = w · τ² · mean_pixels Σ_k p_T,k (log p_T,k − log p_S,k),
                    p = softmax(z / τ) over the K classes
        mask form:  L = w · τ² · mean_elements KL(Bern(σ(z_T / τ)) ‖ Bern(σ(z_S / τ)))

    The mean runs over non-ignored pixels (class form) or valid prompts' pixels (mask form).
    Defaults: τ = 1, w = 1, i.e. plain per-pixel KL, as in the per-pixel terms of segmentation
    KD (SKD's pixel-wise loss is τ = 1) and the config's MODEL.SARD.KD.TAU; τ = 4 is the
    classification benchmarks' habit (CRD/DKD) and can be set. Returns {"loss_kd"}.
    """

    key = "loss_kd"

    def __init__(
        self,
        tau: float = 1.0,
        weight: float = 1.0,
        logit_form: str = "class",
        ignore_index: int = IGNORE_LABEL,
    ) -> None:
        super().__init__(logit_form, weight, ignore_index)
        self.tau = float(tau)

    def _class_term(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        log_p_t = F.log_softmax(teacher.float() / self.tau, dim=1)
        log_p_s = F.log_softmax(student.float() / self.tau, dim=1)
        return self.tau**2 * (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)

    def _mask_term(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return self.tau**2 * binary_kl(teacher / self.tau, student / self.tau)


class PixelwiseKDLoss(_PixelLogitLoss):
    """SKD's pixel-wise distillation (Liu et al., "Structured Knowledge Distillation for
    Semantic Segmentation", CVPR 2019):

        class form: L = w · mean_pixels ( −Σ_k p_T,k log p_S,k ),  p = softmax(z), τ = 1
        mask form:  L = w · mean_elements −[σ(z_T) log σ(z_S) + (1 − σ(z_T)) log(1 − σ(z_S))]

    A cross-entropy against the teacher's soft labels (the KL of ``LogitKDLoss`` plus the
    teacher's entropy, so its minimum is not 0). Default w = 10 (paper and official code).
    The official code divides the sum by W·H but not by the batch size; here the mean runs over
    every pixel of the batch so the value does not grow with the batch. Returns {"loss_skd"}.
    """

    key = "loss_skd"

    def __init__(
        self, weight: float = 10.0, logit_form: str = "class", ignore_index: int = IGNORE_LABEL
    ) -> None:
        super().__init__(logit_form, weight, ignore_index)

    def _class_term(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        p_t = F.softmax(teacher.float(), dim=1)
        return -(p_t * F.log_softmax(student.float(), dim=1)).sum(dim=1)

    def _mask_term(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return binary_soft_cross_entropy(teacher, student)


register_method(
    "kd",
    keys={"TAU": (1.0, "temperature"), "WEIGHT": (1.0, "loss weight")},
    build=lambda cs, ct, **kwargs: LogitKDLoss(**kwargs),
    kwargs=lambda hp, inputs: dict(tau=hp.TAU, weight=hp.WEIGHT, logit_form=inputs.logit_form),
)
register_method(
    "skd",
    keys={"WEIGHT": (10.0, "loss weight (Liu et al. 2019)")},
    build=lambda cs, ct, **kwargs: PixelwiseKDLoss(**kwargs),
    kwargs=lambda hp, inputs: dict(weight=hp.WEIGHT, logit_form=inputs.logit_form),
)

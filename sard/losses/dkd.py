"""Decoupled knowledge distillation (DKD) baseline, per pixel on class logits."""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F

from ._common import IGNORE_LABEL, class_logit_pair, masked_mean
from .base import DistillationLoss, DistillationPair
from .registry import MethodInputs, register_method


def decoupled_kd_terms(
    student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, tau: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel (TCKD, NCKD) for logits (B, K, H, W) and labels (B, H, W) in [0, K).

    With p = softmax(z/τ): b = [p_gt, 1 − p_gt], TCKD = KL(b_T ‖ b_S); p̂ = softmax over the
    K−1 non-target classes of z/τ, NCKD = KL(p̂_T ‖ p̂_S). Both are computed from
    log-softmaxes (log(1 − p_gt) as a log-sum-exp over the non-target classes), so confident
    teachers (p_gt → 1) stay finite. Each term is τ²-scaled here.
    """
    z_t = teacher.float() / tau
    z_s = student.float() / tau
    target = F.one_hot(labels, num_classes=z_t.shape[1]).permute(0, 3, 1, 2).bool()

    def split(z: torch.Tensor):
        log_all = torch.logsumexp(z, dim=1)
        log_gt = (z.masked_fill(~target, 0.0)).sum(1) - log_all
        # A finite stand-in for -inf keeps every intermediate finite (exp() of it is exactly 0).
        z_other = z.masked_fill(target, -1e9)
        log_other_mass = torch.logsumexp(z_other, dim=1) - log_all
        log_p_hat = z_other - torch.logsumexp(z_other, dim=1, keepdim=True)
        return log_gt, log_other_mass, log_p_hat

    t_gt, t_other, t_hat = split(z_t)
    s_gt, s_other, s_hat = split(z_s)
    tckd = t_gt.exp() * (t_gt - s_gt) + t_other.exp() * (t_other - s_other)
    # The target class has p̂ = 0: drop its term explicitly rather than trust 0 * (huge).
    nckd_terms = torch.where(target, torch.zeros_like(t_hat), t_hat.exp() * (t_hat - s_hat))
    nckd = nckd_terms.sum(1)
    return tau**2 * tckd, tau**2 * nckd


class DKDLoss(DistillationLoss):
    """DKD (Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022), applied per pixel.

        L = α · TCKD + β · NCKD,   each τ²-scaled and averaged over labelled pixels
        TCKD = KL([p_T,gt, 1 − p_T,gt] ‖ [p_S,gt, 1 − p_S,gt])
        NCKD = KL(p̂_T ‖ p̂_S),  p̂ = softmax(z/τ) renormalised over the non-target classes

    Inputs: class logits (B, K, H, W) (student resized bilinearly to the teacher grid) and
    ``targets`` (B, H', W') integer labels, required (DKD splits on the ground-truth class),
    resized nearest to the teacher grid; pixels labelled ``ignore_index`` (255) are left out
    of the mean. With no labelled pixel both terms are an exact, graph-connected 0.

    Defaults: α = 1, β = 8, τ = 4, the DKD paper's CIFAR-100 setting (its ImageNet one is
    α = 0.5, β = 0.5, τ = 1); the paper's linear warm-up of the loss weight over the first
    epochs is the distiller's (``MODEL.SARD.DISTILL_WARMUP_ITERS``), not this module's. Returns {"loss_dkd_tckd", "loss_dkd_nckd"}
    (already multiplied by α and β; their sum is DKD).
    """

    consumes = "logits"
    logit_form = "class"

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 8.0,
        tau: float = 4.0,
        ignore_index: int = IGNORE_LABEL,
    ) -> None:
        super().__init__()
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.tau = float(tau)
        self.ignore_index = int(ignore_index)

    def terms(self, pair: DistillationPair) -> Dict[str, torch.Tensor]:
        """{"loss_dkd_tckd", "loss_dkd_nckd"}, see the class docstring."""
        targets = pair.targets
        if targets is None:
            raise ValueError("DKD needs targets: (B, H, W) ground-truth class labels")
        student, teacher, labels, valid = class_logit_pair(
            pair.student, pair.teacher, targets, self.ignore_index
        )
        k = teacher.shape[1]
        if k < 2:
            raise ValueError(f"DKD needs at least 2 classes, got K={k}")
        bad = valid & ((labels < 0) | (labels >= k))
        if bool(bad.any()):
            raise ValueError(
                f"targets hold labels outside [0, {k}) that are not "
                f"ignore_index={self.ignore_index}"
            )
        safe_labels = torch.where(valid, labels, torch.zeros_like(labels))
        tckd, nckd = decoupled_kd_terms(student, teacher, safe_labels, self.tau)
        return {
            "loss_dkd_tckd": self.alpha * masked_mean(tckd, valid),
            "loss_dkd_nckd": self.beta * masked_mean(nckd, valid),
        }


def _dkd_kwargs(hp, inputs: MethodInputs) -> dict:
    if inputs.promptable:
        raise ValueError("MODEL.SARD.METHOD='dkd' needs class logits: use a semantic pair")
    return dict(alpha=hp.ALPHA, beta=hp.BETA, tau=hp.TAU)


register_method(
    "dkd",
    keys={
        "ALPHA": (1.0, "weight of the target-class term"),
        "BETA": (8.0, "weight of the non-target-class term"),
        "TAU": (4.0, "temperature"),
    },
    build=lambda cs, ct, **kwargs: DKDLoss(**kwargs),
    kwargs=_dkd_kwargs,
)

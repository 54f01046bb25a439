"""Task loss of promptable students (SAM, EfficientSAM): Dice + BCE, best of M masks, IoU MSE."""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._common import masked_mean, resize_to


def dice_loss_per_mask(
    logits: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0
) -> torch.Tensor:
    """1 − (2 Σ p·g + s) / (Σ p + Σ g + s) over the last two dims, p = sigmoid(logits), s = 1."""
    p = torch.sigmoid(logits.float()).flatten(-2)
    g = targets.float().flatten(-2)
    return 1.0 - (2.0 * (p * g).sum(-1) + smooth) / (p.sum(-1) + g.sum(-1) + smooth)


def bce_loss_per_mask(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with logits, averaged over the last two dims (the pixels)."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    return bce.flatten(-2).mean(-1)


def focal_loss_per_mask(
    logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0, alpha: float = 0.25
) -> torch.Tensor:
    """Focal loss (Lin et al. 2017) averaged over the last two dims:
    mean_i −α_t (1 − p_t)^γ log p_t, p_t = p on foreground and 1 − p on background, α_t = α on
    foreground and 1 − α on background (RetinaNet's γ = 2, α = 0.25)."""
    z, g = logits.float(), targets.float()
    ce = F.binary_cross_entropy_with_logits(z, g, reduction="none")
    p = torch.sigmoid(z)
    p_t = p * g + (1 - p) * (1 - g)
    alpha_t = alpha * g + (1 - alpha) * (1 - g)
    return (alpha_t * (1 - p_t).pow(gamma) * ce).flatten(-2).mean(-1)


TASK_LOSSES = ("dice_bce", "focal_dice")


def mask_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU of (logits > 0) with binary targets over the last two dims; 1 when both are empty."""
    pred = (logits > 0).flatten(-2)
    gt = targets.flatten(-2) > 0.5
    inter = (pred & gt).sum(-1).float()
    union = (pred | gt).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


class PromptMaskLoss(nn.Module):
    """Dice + BCE per prompt with SAM's min-over-masks rule, plus optional IoU-head MSE.

    For each prompt q with M candidate masks (M = 3 for SAM / EfficientSAM multimask output):

        ℓ_m   = w_dice · Dice(σ(z_m), g) + w_bce · BCE(z_m, g)
        m*    = argmin_m ℓ_m          (SAM's training rule: only the best mask is supervised)
        loss_mask_dice = μ · w_dice · mean_{valid q} Dice(σ(z_m*), g)
        loss_mask_bce  = μ · w_bce  · mean_{valid q} BCE(z_m*, g)
        loss_iou       = μ · w_iou  · mean_{valid q} (iou_pred[m*] − IoU(z_m* > 0, g))²

    Dice uses smoothing 1 and sums over the mask's pixels; BCE is the mean over pixels. The
    IoU target is the actual IoU of the chosen mask (no gradient). Means run over valid
    prompts of the whole batch (``valid`` is False on padding prompts); with no valid prompt
    every term is an exact 0 still connected to the graph.

    Paper: SARD (CVPR 2026) uses Dice + BCE as L_task for promptable students; the
    min-over-masks rule and the IoU MSE follow SAM (Kirillov et al., ICCV 2023).

    Defaults: w_dice = w_bce = 1 (SARD's plain Dice + BCE sum; SAM's 20:1 focal:dice ratio is
    for focal loss, not BCE), w_iou = 1 (SAM), μ = 1 (paper). Leave μ at 1 when the caller
    already multiplies the task terms by μ (``SARDDistiller`` does).

    ``kind="focal_dice"`` replaces BCE by SAM's focal term, 20 · Focal(z_m, g) (γ = 2,
    α = 0.25), returned as ``loss_mask_focal``. Why: with tiny objects, the mean BCE is almost
    all background, pulls every logit far below 0 in the first iterations, and there the
    sigmoid's slope leaves Dice almost no gradient (training sits on an empty-mask plateau);
    focal loss stops weighing background pixels that are already right.

    Inputs:
        mask_logits: (B, Q, M, h, w) logits; resized bilinearly to gt_masks' size if needed.
        gt_masks: (B, Q, H, W) float in {0, 1}.
        valid: (B, Q) bool.
        iou_pred: optional (B, Q, M) predicted IoUs; ``loss_iou`` is returned only with it
            (and w_iou > 0).
    """

    def __init__(
        self,
        dice_weight: float = 1.0,
        bce_weight: float = 1.0,
        iou_weight: float = 1.0,
        mu: float = 1.0,
        kind: str = "dice_bce",
        focal_weight: float = 20.0,
    ) -> None:
        super().__init__()
        if kind not in TASK_LOSSES:
            raise ValueError(f"task loss kind must be one of {TASK_LOSSES}, got {kind!r}")
        self.kind = kind
        self.focal_weight = float(focal_weight)
        self.dice_weight = float(dice_weight)
        self.bce_weight = float(bce_weight)
        self.iou_weight = float(iou_weight)
        self.mu = float(mu)

    def forward(
        self,
        mask_logits: torch.Tensor,
        gt_masks: torch.Tensor,
        valid: torch.Tensor,
        iou_pred: Optional[torch.Tensor] = None,
    ) -> Dict[str, torch.Tensor]:
        if mask_logits.dim() != 5:
            raise ValueError(f"mask_logits must be (B, Q, M, h, w), got {tuple(mask_logits.shape)}")
        b, q, m = mask_logits.shape[:3]
        if gt_masks.dim() != 4 or tuple(gt_masks.shape[:2]) != (b, q):
            raise ValueError(
                f"gt_masks must be (B, Q, H, W) = ({b}, {q}, H, W), got {tuple(gt_masks.shape)}"
            )
        if valid.dtype != torch.bool or tuple(valid.shape) != (b, q):
            raise ValueError(
                f"valid must be a (B, Q) = ({b}, {q}) bool tensor, "
                f"got {valid.dtype} {tuple(valid.shape)}"
            )
        if iou_pred is not None and tuple(iou_pred.shape) != (b, q, m):
            raise ValueError(
                f"iou_pred must be (B, Q, M) = ({b}, {q}, {m}), got {tuple(iou_pred.shape)}"
            )

        logits = resize_to(mask_logits, gt_masks.shape[-2:])
        targets = gt_masks[:, :, None].expand_as(logits)
        dice = dice_loss_per_mask(logits, targets)  # (B, Q, M)
        if self.kind == "focal_dice":
            pixel_name, pixel_weight = "loss_mask_focal", self.focal_weight
            pixel = focal_loss_per_mask(logits, targets)
        else:
            pixel_name, pixel_weight = "loss_mask_bce", self.bce_weight
            pixel = bce_loss_per_mask(logits, targets)
        combined = self.dice_weight * dice + pixel_weight * pixel
        best = combined.detach().argmin(dim=2, keepdim=True)  # (B, Q, 1)
        chosen_dice = dice.gather(2, best)[..., 0]
        chosen_pixel = pixel.gather(2, best)[..., 0]
        terms = {
            "loss_mask_dice": self.mu * self.dice_weight * masked_mean(chosen_dice, valid),
            pixel_name: self.mu * pixel_weight * masked_mean(chosen_pixel, valid),
        }
        if iou_pred is not None and self.iou_weight > 0:
            with torch.no_grad():
                index = best[..., None, None].expand(b, q, 1, *logits.shape[-2:])
                chosen_logits = logits.gather(2, index)[:, :, 0]
                actual = mask_iou(chosen_logits, gt_masks)
            predicted = iou_pred.float().gather(2, best)[..., 0]
            sq = (predicted - actual).pow(2)
            terms["loss_iou"] = self.mu * self.iou_weight * masked_mean(sq, valid)
        return terms

"""Promptable task loss: Dice + BCE with SAM's best-of-M rule, IoU MSE, valid-prompt means."""

from __future__ import annotations

import math

import pytest
import torch

from sard.losses import PromptMaskLoss

GT = torch.tensor([[1.0, 1.0], [0.0, 0.0]])  # 2 of 4 pixels on


def _perfect(gt: torch.Tensor) -> torch.Tensor:
    return (gt * 2 - 1) * 20.0  # +20 on the mask, -20 off it


def test_hand_values_for_a_flat_prediction():
    logits = torch.zeros(1, 1, 1, 2, 2)  # p = 0.5 everywhere
    out = PromptMaskLoss()(logits, GT[None, None], torch.ones(1, 1, dtype=torch.bool))
    # Dice: 1 - (2*1 + 1) / (2 + 2 + 1) = 0.4; BCE: ln 2 at every pixel.
    assert out["loss_mask_dice"].item() == pytest.approx(0.4)
    assert out["loss_mask_bce"].item() == pytest.approx(math.log(2.0))
    assert set(out) == {"loss_mask_dice", "loss_mask_bce"}


def test_min_rule_supervises_only_the_best_mask():
    bad = -_perfect(GT)  # the complement
    flat = torch.zeros(2, 2)
    logits = torch.stack([bad, flat, _perfect(GT)])[None, None].clone().requires_grad_(True)
    loss = PromptMaskLoss()
    out = loss(logits, GT[None, None], torch.ones(1, 1, dtype=torch.bool))
    assert out["loss_mask_dice"].item() < 1e-6
    assert out["loss_mask_bce"].item() < 1e-6
    sum(out.values()).backward()
    assert torch.all(logits.grad[0, 0, :2] == 0)  # the other two masks get no gradient
    permuted = logits.detach()[:, :, [2, 0, 1]]
    again = loss(permuted, GT[None, None], torch.ones(1, 1, dtype=torch.bool))
    assert again["loss_mask_bce"].item() == pytest.approx(out["loss_mask_bce"].item())


def test_min_rule_picks_by_combined_loss_per_prompt():
    flat = torch.zeros(2, 2)
    soft = _perfect(GT) / 10.0  # right, but unsure (±2)
    miss = torch.tensor([[20.0, -20.0], [-20.0, -20.0]])  # confidently misses a pixel: BCE 5
    logits = torch.stack(
        [torch.stack([flat, soft, miss]), torch.stack([_perfect(GT), flat, soft])]
    )[None]
    gt = GT.expand(1, 2, 2, 2)
    single = PromptMaskLoss()(
        soft[None, None, None], GT[None, None], torch.ones(1, 1, dtype=torch.bool)
    )
    out = PromptMaskLoss()(logits, gt, torch.ones(1, 2, dtype=torch.bool))
    # prompt 0 picks "soft", prompt 1 picks the perfect mask (loss ~0): mean over 2 prompts.
    assert out["loss_mask_dice"].item() == pytest.approx(
        single["loss_mask_dice"].item() / 2, abs=1e-6
    )
    assert out["loss_mask_bce"].item() == pytest.approx(
        single["loss_mask_bce"].item() / 2, abs=1e-6
    )


def test_mean_runs_over_valid_prompts_only():
    logits = torch.zeros(2, 2, 3, 2, 2)
    logits[0, 1] = 50.0  # a garbage padding prompt
    valid = torch.tensor([[True, False], [True, True]])
    gt = GT.expand(2, 2, 2, 2)
    out = PromptMaskLoss()(logits, gt, valid)
    assert out["loss_mask_dice"].item() == pytest.approx(0.4)
    assert out["loss_mask_bce"].item() == pytest.approx(math.log(2.0))


def test_no_valid_prompt_gives_graph_connected_zeros():
    logits = torch.randn(1, 2, 3, 2, 2, requires_grad=True)
    iou_pred = torch.rand(1, 2, 3, requires_grad=True)
    out = PromptMaskLoss()(
        logits, GT.expand(1, 2, 2, 2), torch.zeros(1, 2, dtype=torch.bool), iou_pred
    )
    assert all(v.item() == 0.0 for v in out.values())
    sum(out.values()).backward()
    assert torch.all(logits.grad == 0) and torch.all(iou_pred.grad == 0)


def test_iou_mse_targets_the_chosen_masks_actual_iou():
    logits = torch.stack([torch.zeros(2, 2), _perfect(GT), -_perfect(GT)])[None, None]
    iou_pred = torch.tensor([[[0.9, 0.5, 0.1]]])
    out = PromptMaskLoss()(logits, GT[None, None], torch.ones(1, 1, dtype=torch.bool), iou_pred)
    assert out["loss_iou"].item() == pytest.approx((0.5 - 1.0) ** 2)
    half = torch.tensor([[20.0, -20.0], [-20.0, -20.0]])[None, None, None]
    out = PromptMaskLoss()(
        half, GT[None, None], torch.ones(1, 1, dtype=torch.bool), torch.tensor([[[0.0]]])
    )
    assert out["loss_iou"].item() == pytest.approx(0.25)  # IoU = 1/2


def test_weights_and_mu_scale_the_terms():
    logits = torch.zeros(1, 1, 1, 2, 2)
    args = (logits, GT[None, None], torch.ones(1, 1, dtype=torch.bool), torch.tensor([[[0.0]]]))
    base = PromptMaskLoss()(*args)
    scaled = PromptMaskLoss(dice_weight=2.0, bce_weight=3.0, iou_weight=4.0, mu=0.5)(*args)
    assert scaled["loss_mask_dice"].item() == pytest.approx(1.0 * base["loss_mask_dice"].item())
    assert scaled["loss_mask_bce"].item() == pytest.approx(1.5 * base["loss_mask_bce"].item())
    assert scaled["loss_iou"].item() == pytest.approx(2.0 * base["loss_iou"].item())
    assert "loss_iou" not in PromptMaskLoss(iou_weight=0.0)(*args)


def test_low_resolution_logits_are_upsampled_to_the_ground_truth():
    gt = torch.zeros(1, 1, 8, 8)
    gt[..., :4, :] = 1.0
    logits = torch.full((1, 1, 3, 4, 4), -20.0)
    logits[..., :2, :] = 20.0
    out = PromptMaskLoss()(logits, gt, torch.ones(1, 1, dtype=torch.bool))
    assert out["loss_mask_dice"].item() < 0.02


def test_bad_shapes_raise():
    loss = PromptMaskLoss()
    with pytest.raises(ValueError, match="mask_logits"):
        loss(torch.zeros(1, 3, 2, 2), GT[None, None], torch.ones(1, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="valid"):
        loss(torch.zeros(1, 1, 3, 2, 2), GT[None, None], torch.ones(1, 1))


def test_focal_dice_is_sams_recipe_and_spares_easy_background():
    from sard.losses.prompt_mask import focal_loss_per_mask

    z = torch.tensor([[2.0, -3.0], [0.0, -0.5]])
    g = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    p = torch.sigmoid(z)
    p_t = torch.where(g > 0, p, 1 - p)
    alpha_t = torch.where(g > 0, 0.25, 0.75)
    expected = (-alpha_t * (1 - p_t) ** 2 * torch.log(p_t)).mean()
    torch.testing.assert_close(focal_loss_per_mask(z[None], g[None])[0], expected)
    # The loss terms: Dice plus 20 x focal, under their own name.
    logits = torch.full((1, 1, 1, 8, 8), -4.0)
    gt = torch.zeros(1, 1, 8, 8)
    gt[..., 2:4, 2:4] = 1.0
    valid = torch.ones(1, 1, dtype=torch.bool)
    out = PromptMaskLoss(kind="focal_dice")(logits, gt, valid)
    assert set(out) == {"loss_mask_dice", "loss_mask_focal"}
    torch.testing.assert_close(
        out["loss_mask_focal"], 20 * focal_loss_per_mask(logits, gt[:, :, None])[0, 0, 0]
    )
    # Easy background (logit -4) weighs (0.018)^2 of its cross-entropy: the foreground's
    # gradient dominates, unlike BCE's, where 60 background pixels outweigh 4 foreground ones.
    logits.requires_grad_(True)
    PromptMaskLoss(kind="focal_dice", dice_weight=0.0)(logits, gt, valid)[
        "loss_mask_focal"
    ].backward()
    g_focal = logits.grad[0, 0, 0]
    assert g_focal[2:4, 2:4].abs().sum() > 50 * g_focal[gt[0, 0] == 0].abs().sum()
    with pytest.raises(ValueError, match="task loss kind"):
        PromptMaskLoss(kind="l2")

"""Baselines checked against values worked out by hand (pure Python math) on tiny tensors."""

from __future__ import annotations

import math
from typing import List

import pytest
import torch
import torch.nn as nn

from sard.losses import (
    ChannelWiseDistillationLoss,
    DKDLoss,
    LogitKDLoss,
    MGDLoss,
    PixelwiseKDLoss,
    ReviewKDLoss,
    hierarchical_context_loss,
)

LN3 = math.log(3.0)


def softmax(z: List[float], tau: float = 1.0) -> List[float]:
    e = [math.exp(v / tau) for v in z]
    return [v / sum(e) for v in e]


def kl(p: List[float], q: List[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _class_logits(*pixels: List[float]) -> torch.Tensor:
    """(1, K, 1, P) class logits from P per-pixel logit lists."""
    return torch.tensor(pixels).T[None, :, None, :]


# ---------------------------------------------------------------- KD


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_kd_class_form_hand_value(tau):
    t, s = [0.0, LN3], [0.0, 0.0]
    expected = tau**2 * kl(softmax(t, tau), softmax(s, tau))
    out = LogitKDLoss(tau=tau)(_class_logits(s), _class_logits(t))
    assert set(out) == {"loss_kd"}
    assert out["loss_kd"].item() == pytest.approx(expected, rel=1e-5)
    assert tau != 1.0 or expected == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5))


def test_kd_class_form_skips_ignored_pixels_and_resizes_labels():
    t = _class_logits([0.0, LN3], [5.0, -5.0])
    s = _class_logits([0.0, 0.0], [-5.0, 5.0])
    labels = torch.tensor([[[1, 255]]])  # second pixel is void
    out = LogitKDLoss(weight=2.0)(s, t, targets=labels)
    assert out["loss_kd"].item() == pytest.approx(2.0 * kl([0.25, 0.75], [0.5, 0.5]), rel=1e-5)


def test_kd_mask_form_hand_value_with_valid_prompts():
    t = torch.tensor([LN3, -20.0]).view(1, 2, 1, 1, 1)  # (B, Q, M, h, w)
    s = torch.tensor([0.0, 20.0]).view(1, 2, 1, 1, 1)
    valid = torch.tensor([[True, False]])
    out = LogitKDLoss(logit_form="mask")(s, t, targets=valid)
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert out["loss_kd"].item() == pytest.approx(expected, rel=1e-5)
    tau = 2.0
    p, q = sigmoid(LN3 / tau), 0.5
    out = LogitKDLoss(tau=tau, logit_form="mask")(s, t, targets=valid)
    assert out["loss_kd"].item() == pytest.approx(tau**2 * kl([p, 1 - p], [q, 1 - q]), rel=1e-5)


def test_kd_is_zero_for_identical_logits():
    z = torch.randn(2, 5, 4, 4)
    assert LogitKDLoss(tau=4.0)(z.clone(), z)["loss_kd"].abs().item() < 1e-6


# ---------------------------------------------------------------- SKD


def test_skd_class_form_hand_value():
    t, s = [0.0, LN3], [0.0, math.log(4.0)]
    p_t, p_s = softmax(t), softmax(s)
    expected = 10.0 * -sum(a * math.log(b) for a, b in zip(p_t, p_s))
    out = PixelwiseKDLoss()(_class_logits(s), _class_logits(t))
    assert out["loss_skd"].item() == pytest.approx(expected, rel=1e-5)


def test_skd_mask_form_hand_value():
    t = torch.full((1, 1, 1, 2, 2), LN3)  # p_T = 0.75
    s = torch.zeros(1, 1, 1, 2, 2)
    out = PixelwiseKDLoss(weight=1.0, logit_form="mask")(s, t)
    assert out["loss_skd"].item() == pytest.approx(math.log(2.0), rel=1e-5)


# ---------------------------------------------------------------- CWD


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_cwd_logits_hand_value(tau):
    # 2 channels over 2 positions: channel 0 differs, channel 1 is identical (KL 0).
    t = torch.tensor([[[[0.0, LN3]], [[1.0, 2.0]]]])  # (1, 2, 1, 2)
    s = torch.tensor([[[[0.0, 0.0]], [[1.0, 2.0]]]])
    expected = 3.0 * tau**2 * kl(softmax([0.0, LN3], tau), softmax([0.0, 0.0], tau)) / 2
    out = ChannelWiseDistillationLoss(tau=tau)(s, t)
    assert out["loss_cwd"].item() == pytest.approx(expected, rel=1e-5)


def test_cwd_mask_form_one_channel_per_valid_mask():
    t = torch.tensor([0.0, LN3]).view(1, 1, 1, 1, 2).repeat(1, 2, 1, 1, 1)
    s = torch.zeros(1, 2, 1, 1, 2)
    s[0, 1] = 9.0  # a padding prompt: left out
    out = ChannelWiseDistillationLoss(tau=1.0, weight=1.0, logit_form="mask")(
        s, t, targets=torch.tensor([[True, False]])
    )
    assert out["loss_cwd"].item() == pytest.approx(kl([0.25, 0.75], [0.5, 0.5]), rel=1e-5)


def test_cwd_on_features_aligns_channels_and_consumes_features():
    loss = ChannelWiseDistillationLoss(on="features", student_channels=3, teacher_channels=5)
    assert loss.consumes == "features" and loss.align is not None
    student = torch.randn(2, 3, 4, 4, requires_grad=True)
    out = loss(student, torch.randn(2, 5, 8, 8))
    out["loss_cwd"].backward()
    assert student.grad.abs().sum() > 0
    same = ChannelWiseDistillationLoss(on="features", student_channels=5, teacher_channels=5)
    assert same.align is None
    with pytest.raises(ValueError, match="on"):
        ChannelWiseDistillationLoss(on="masks")


# ---------------------------------------------------------------- MGD


def _identity_generator(loss: MGDLoss) -> None:
    """G(x) = ReLU(x): centre taps 1, everything else 0."""
    with torch.no_grad():
        for conv in (loss.generation[0], loss.generation[2]):
            conv.weight.zero_()
            conv.bias.zero_()
            for c in range(conv.out_channels):
                conv.weight[c, c, 1, 1] = 1.0


def test_mgd_hand_value_with_fixed_mask():
    loss = MGDLoss(1, 1)
    _identity_generator(loss)
    student = torch.tensor([[[[-1.0, 5.0], [3.0, 4.0]]], [[[2.0, 2.0], [2.0, 2.0]]]])
    teacher = torch.ones(2, 1, 2, 2)
    mask = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    # image 0: G = ReLU([[-1, 0], [3, 4]]) = [[0, 0], [3, 4]] -> 1 + 1 + 4 + 9 = 15
    # image 1: everything masked -> G = 0 -> 4 * 1 = 4;  sum 19 over N = 2 images
    out = loss(student, teacher, mask=mask)
    assert out["loss_mgd"].item() == pytest.approx(2e-5 * 19 / 2)


def test_mgd_random_mask_drops_lambda_of_positions_and_follows_seed():
    loss = MGDLoss(4, 4, lambda_mask=0.75)
    torch.manual_seed(0)
    m1 = loss.random_mask(torch.zeros(4, 4, 32, 32))
    torch.manual_seed(0)
    m2 = loss.random_mask(torch.zeros(4, 4, 32, 32))
    assert torch.equal(m1, m2) and m1.shape == (4, 1, 32, 32)
    assert 1.0 - m1.mean().item() == pytest.approx(0.75, abs=0.03)


def test_mgd_aligns_only_when_channels_differ():
    assert MGDLoss(8, 8).align is None
    loss = MGDLoss(4, 8)
    student = torch.randn(1, 4, 6, 6, requires_grad=True)
    loss(student, torch.randn(1, 8, 6, 6))["loss_mgd"].backward()
    assert student.grad.abs().sum() > 0 and loss.align.weight.grad is not None


# ---------------------------------------------------------------- DKD


def _dkd_by_hand(t: List[float], s: List[float], gt: int, tau: float):
    p_t, p_s = softmax(t, tau), softmax(s, tau)
    tckd = kl([p_t[gt], 1 - p_t[gt]], [p_s[gt], 1 - p_s[gt]])
    others = [k for k in range(len(t)) if k != gt]
    hat_t = softmax([t[k] for k in others], tau)
    hat_s = softmax([s[k] for k in others], tau)
    return tau**2 * tckd, tau**2 * kl(hat_t, hat_s)


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_dkd_hand_value(tau):
    t = [math.log(0.5), math.log(0.3), math.log(0.2)]
    s = [math.log(0.2), math.log(0.4), math.log(0.4)]
    tckd, nckd = _dkd_by_hand(t, s, 0, tau)
    if tau == 1.0:  # the textbook numbers
        assert tckd == pytest.approx(0.5 * math.log(0.5 / 0.2) + 0.5 * math.log(0.5 / 0.8))
        assert nckd == pytest.approx(0.6 * math.log(0.6 / 0.5) + 0.4 * math.log(0.4 / 0.5))
    loss = DKDLoss(alpha=1.0, beta=8.0, tau=tau)
    out = loss(_class_logits(s), _class_logits(t), targets=torch.tensor([[[0]]]))
    assert out["loss_dkd_tckd"].item() == pytest.approx(tckd, rel=1e-4)
    assert out["loss_dkd_nckd"].item() == pytest.approx(8.0 * nckd, rel=1e-4)


def test_dkd_averages_labelled_pixels_and_respects_ignore():
    t = _class_logits(
        [math.log(0.5), math.log(0.3), math.log(0.2)], [3.0, 0.0, -3.0], [0.0, 1.0, 2.0]
    )
    s = _class_logits(
        [math.log(0.2), math.log(0.4), math.log(0.4)], [-3.0, 0.0, 3.0], [0.0, 0.0, 0.0]
    )
    labels = torch.tensor([[[0, 255, 2]]])
    a = _dkd_by_hand(
        [math.log(0.5), math.log(0.3), math.log(0.2)],
        [math.log(0.2), math.log(0.4), math.log(0.4)],
        0,
        1.0,
    )
    b = _dkd_by_hand([0.0, 1.0, 2.0], [0.0, 0.0, 0.0], 2, 1.0)
    out = DKDLoss(alpha=2.0, beta=3.0, tau=1.0)(s, t, targets=labels)
    assert out["loss_dkd_tckd"].item() == pytest.approx(2.0 * (a[0] + b[0]) / 2, rel=1e-4)
    assert out["loss_dkd_nckd"].item() == pytest.approx(3.0 * (a[1] + b[1]) / 2, rel=1e-4)


def test_dkd_confident_teacher_stays_finite_and_all_ignored_is_zero():
    t = torch.tensor([[60.0, -60.0, -60.0]]).T[None, :, None, :]
    s = torch.zeros(1, 3, 1, 1, requires_grad=True)
    out = DKDLoss()(s, t, targets=torch.tensor([[[0]]]))
    sum(out.values()).backward()
    assert all(torch.isfinite(v) for v in out.values()) and torch.isfinite(s.grad).all()
    out = DKDLoss()(s, t, targets=torch.tensor([[[255]]]))
    assert all(v.item() == 0.0 for v in out.values())


def test_dkd_needs_targets_and_valid_labels():
    z = torch.zeros(1, 3, 2, 2)
    with pytest.raises(ValueError, match="needs targets"):
        DKDLoss()(z, z)
    with pytest.raises(ValueError, match="outside"):
        DKDLoss()(z, z, targets=torch.full((1, 2, 2), 7))


# ---------------------------------------------------------------- ReviewKD


def test_hcl_hand_value_and_zero_on_equal_maps():
    fs = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    ft = torch.zeros_like(fs)
    # levels 4 and 2 are skipped (not below 2); level 1 gets weight 1/2:
    # (mean(fs^2) + 0.5 * mean(fs)^2) / 1.5 = (7.5 + 0.5 * 6.25) / 1.5
    assert hierarchical_context_loss(fs, ft).item() == pytest.approx((7.5 + 3.125) / 1.5)
    x = torch.randn(2, 3, 9, 9)
    assert hierarchical_context_loss(x, x.clone()).item() == 0.0


def test_hcl_of_constant_maps_is_the_constant_squared():
    # every level of a constant gap c sees c^2, whatever the level weights
    fs = torch.full((1, 2, 9, 9), 3.0)
    assert hierarchical_context_loss(fs, torch.zeros_like(fs)).item() == pytest.approx(9.0)


def test_reviewkd_shapes_gradients_and_top_down_fusion():
    torch.manual_seed(0)
    loss = ReviewKDLoss([4, 8, 16], [6, 12, 24], mid_channels=8)
    assert loss.consumes == "multi_features"
    assert loss.fusions[2].attention is None and loss.fusions[0].attention is not None
    student = [torch.randn(2, c, s, s, requires_grad=True) for c, s in [(4, 16), (8, 8), (16, 4)]]
    teacher = [torch.randn(2, c, s, s, requires_grad=True) for c, s in [(6, 8), (12, 4), (24, 2)]]
    outputs = loss.review(student, [t.shape[-2:] for t in teacher])
    assert [tuple(o.shape) for o in outputs] == [tuple(t.shape) for t in teacher]
    # the shallowest output depends on the deepest student stage (the review path)
    (g,) = torch.autograd.grad(outputs[0].sum(), student[2])
    assert g.abs().sum() > 0
    out = loss(student, teacher)
    assert set(out) == {"loss_reviewkd"} and out["loss_reviewkd"].item() > 0
    out["loss_reviewkd"].backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)
    assert all(t.grad is None for t in teacher)
    assert all(p.grad is not None for p in loss.parameters())


def test_reviewkd_rejects_mismatched_stages():
    with pytest.raises(ValueError, match="stages"):
        ReviewKDLoss([4, 8], [6])
    loss = ReviewKDLoss([4, 8], [6, 12], mid_channels=4)
    with pytest.raises(ValueError, match="2 stages"):
        loss([torch.randn(1, 4, 4, 4)], [torch.randn(1, 6, 4, 4)])
    with pytest.raises(ValueError, match="teacher stage 1"):
        loss(
            [torch.randn(1, 4, 4, 4), torch.randn(1, 8, 2, 2)],
            [torch.randn(1, 6, 4, 4), torch.randn(1, 5, 2, 2)],
        )


def test_reviewkd_output_matches_teacher_when_abfs_are_set_to_pass_through():
    # One stage, identity convs, BN in eval with unit stats: output = nearest-resized student.
    loss = ReviewKDLoss([2], [2], mid_channels=2).eval()
    abf = loss.fusions[0]
    with torch.no_grad():
        abf.reduce[0].weight.copy_(torch.eye(2)[:, :, None, None])
        abf.output[0].weight.zero_()
        abf.output[0].weight[0, 0, 1, 1] = abf.output[0].weight[1, 1, 1, 1] = 1.0
        for bn in (abf.reduce[1], abf.output[1]):  # eval BN with var + eps = 1: identity
            bn.running_var.fill_(1.0 - bn.eps)
    x = torch.randn(1, 2, 4, 4)
    assert loss([x], [x.clone()])["loss_reviewkd"].item() == pytest.approx(0.0, abs=1e-10)
    assert isinstance(abf.reduce[1], nn.BatchNorm2d)


@pytest.mark.parametrize(
    "loss",
    [
        LogitKDLoss(logit_form="mask"),
        PixelwiseKDLoss(logit_form="mask"),
        ChannelWiseDistillationLoss(logit_form="mask"),
    ],
    ids=["kd", "skd", "cwd"],
)
def test_mask_logit_losses_are_zero_without_a_single_prompt(loss):
    """A batch of images without instances (empty microscopy tiles) hands the logit baselines
    the (0, M, h, w) logits of zero valid prompts: the term must be 0, not the NaN of an empty
    mean, and backward must still run."""
    s = torch.zeros(0, 3, 8, 8, requires_grad=True)
    (value,) = loss(s, torch.zeros(0, 3, 8, 8)).values()
    assert value.item() == 0.0
    value.backward()
    assert s.grad is not None and s.grad.shape == s.shape

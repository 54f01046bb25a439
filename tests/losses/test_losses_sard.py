"""SARD's representation losses: L_FC, L_DA, the shared head, W handling and the collapse guard."""

from __future__ import annotations

import inspect
import sys
import types
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn

from sard.losses import (
    DistributionAlignmentLoss,
    FeatureConsistencyLoss,
    SARDDistillationHead,
    normalize_per_position,
)


def _identity_student_proj(head: SARDDistillationHead) -> None:
    with torch.no_grad():
        nn.init.eye_(head.student_proj.weight[:, :, 0, 0])
        head.student_proj.bias.zero_()


def _uniform(b: int, h: int, w: int) -> torch.Tensor:
    return torch.full((b, 1, h, w), 1.0 / (h * w))


# ---------------------------------------------------------------- L_FC by hand


def test_feature_consistency_hand_value():
    fs = torch.tensor([[[[1.0, 0.0]], [[2.0, 0.0]]]])  # (1, 2, 1, 2)
    ft = torch.tensor([[[[0.0, 0.0]], [[0.0, 3.0]]]])
    weight = torch.tensor([[[[0.25, 0.75]]]])
    # position 0: (1 + 4) / 2 = 2.5; position 1: (0 + 9) / 2 = 4.5
    expected = 0.25 * 2.5 + 0.75 * 4.5
    assert FeatureConsistencyLoss()(fs, ft, weight).item() == pytest.approx(expected)


def test_feature_consistency_averages_images_of_the_batch():
    fs = torch.zeros(2, 1, 1, 1)
    ft = torch.tensor([1.0, 3.0]).view(2, 1, 1, 1)
    assert FeatureConsistencyLoss()(fs, ft, torch.ones(2, 1, 1, 1)).item() == pytest.approx(5.0)


def test_fc_zero_for_equal_features_with_identity_projections_and_positive_otherwise():
    torch.manual_seed(0)
    head = SARDDistillationHead(8, 8, dim=8, weighting="uniform", normalize_teacher=False)
    _identity_student_proj(head)
    teacher = torch.randn(2, 8, 5, 5)
    assert head(teacher.clone(), teacher)["loss_fc"].item() == 0.0
    assert head(teacher + 0.1 * torch.randn_like(teacher), teacher)["loss_fc"].item() > 1e-4


def test_fc_zero_with_normalised_target_when_student_matches_it():
    torch.manual_seed(0)
    head = SARDDistillationHead(8, 8, dim=8, weighting="uniform")
    _identity_student_proj(head)
    teacher = torch.randn(2, 8, 5, 5)
    student = normalize_per_position(teacher)
    assert head(student, teacher)["loss_fc"].item() < 1e-8
    assert head(teacher, teacher)["loss_fc"].item() > 1e-3  # raw features are not the target


# ---------------------------------------------------------------- head: keys, weights, W


def test_head_keys_and_default_weights():
    head = SARDDistillationHead(6, 10, weighting="uniform")
    assert (head.dim, head.lambda_f, head.lambda_d) == (256, 1.0, 0.5)
    assert head.distribution_alignment.alphas == (0.5,)
    student, teacher = torch.randn(2, 6, 4, 4), torch.randn(2, 10, 4, 4)
    torch.manual_seed(3)
    out = head(student, teacher)
    assert set(out) == {"loss_fc", "loss_da"}
    fs = head.project_student(student, (4, 4))
    ft = head.project_teacher(teacher)
    w = _uniform(2, 4, 4)
    torch.manual_seed(3)
    raw_da = head.distribution_alignment(fs, ft, w)
    assert out["loss_fc"].item() == pytest.approx(head.feature_consistency(fs, ft, w).item())
    assert out["loss_da"].item() == pytest.approx(0.5 * raw_da.item())


def test_lambdas_scale_the_terms():
    torch.manual_seed(0)
    a = SARDDistillationHead(4, 4, dim=8, weighting="uniform")
    b = SARDDistillationHead(4, 4, dim=8, weighting="uniform", lambda_f=3.0, lambda_d=2.0)
    b.load_state_dict(a.state_dict())
    x, t = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3)
    torch.manual_seed(1)
    oa = a(x, t)
    torch.manual_seed(1)
    ob = b(x, t)
    assert ob["loss_fc"].item() == pytest.approx(3.0 * oa["loss_fc"].item())
    assert ob["loss_da"].item() == pytest.approx(4.0 * oa["loss_da"].item())


def test_uniform_weighting_ignores_passed_weight_and_structure_uses_it():
    torch.manual_seed(0)
    student, teacher = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3)
    peaked = torch.zeros(1, 1, 3, 3)
    peaked[0, 0, 1, 1] = 1.0
    uni = SARDDistillationHead(4, 4, dim=4, weighting="uniform")
    sard = SARDDistillationHead(4, 4, dim=4, weighting="structure")
    sard.load_state_dict(uni.state_dict())
    fs, ft = uni.project_student(student, (3, 3)), uni.project_teacher(teacher)
    per_pos = (fs - ft).pow(2).mean(1)[0]
    assert uni(student, teacher, weight=peaked)["loss_fc"].item() == pytest.approx(
        per_pos.mean().item()
    )
    assert sard(student, teacher, weight=peaked)["loss_fc"].item() == pytest.approx(
        per_pos[1, 1].item()
    )


def test_weight_map_shape_is_checked():
    head = SARDDistillationHead(4, 4, dim=4)
    with pytest.raises(ValueError, match="weight must be"):
        head(torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3), weight=torch.ones(1, 1, 4, 4))


def test_bad_channels_and_batches_raise_clear_errors():
    head = SARDDistillationHead(4, 6, dim=4, weighting="uniform")
    with pytest.raises(ValueError, match="student features has 5 channels"):
        head(torch.randn(1, 5, 3, 3), torch.randn(1, 6, 3, 3))
    with pytest.raises(ValueError, match="batch"):
        head(torch.randn(2, 4, 3, 3), torch.randn(1, 6, 3, 3))
    with pytest.raises(ValueError, match="weighting"):
        SARDDistillationHead(4, 6, weighting="edges")


def test_student_resized_to_teacher_grid():
    torch.manual_seed(0)
    head = SARDDistillationHead(4, 6, dim=8, weighting="uniform")
    student = torch.randn(2, 4, 4, 4, requires_grad=True)
    out = head(student, torch.randn(2, 6, 8, 8))
    (out["loss_fc"] + out["loss_da"]).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_zero_weight_positions_get_exactly_zero_gradient():
    torch.manual_seed(0)
    head = SARDDistillationHead(4, 4, dim=8)
    student = torch.randn(1, 4, 8, 8, requires_grad=True)
    teacher = torch.randn(1, 4, 8, 8)
    weight = torch.rand(1, 1, 8, 8)
    weight[..., :5, :5] = 0.0  # a zero block in the top-left corner
    weight = weight / weight.sum()
    out = head(student, teacher, weight=weight)
    (g_fc,) = torch.autograd.grad(out["loss_fc"], student, retain_graph=True)
    assert torch.all(g_fc[..., :5, :5] == 0)
    assert torch.all(g_fc[..., 5:, 5:].abs().sum(1) > 0)
    (g_da,) = torch.autograd.grad(out["loss_da"], student)
    # The denoiser's 3x3 conv lets a position feel its neighbours: the block minus a 1-pixel
    # rim (every position whose whole 3x3 neighbourhood has W = 0) gets none.
    assert torch.all(g_da[..., :4, :4] == 0)
    assert g_da[..., 5:, 5:].abs().sum() > 0


def test_no_gradient_reaches_teacher_features_or_frozen_projection():
    head = SARDDistillationHead(4, 6, dim=8, weighting="uniform")
    student = torch.randn(1, 4, 4, 4, requires_grad=True)
    teacher = torch.randn(1, 6, 4, 4, requires_grad=True)
    out = head(student, teacher)
    (out["loss_fc"] + out["loss_da"]).backward()
    assert teacher.grad is None
    names = {n for n, _ in head.named_parameters()}
    assert not any(n.startswith("teacher_proj") for n in names)
    assert {"teacher_proj.weight", "teacher_proj.bias"} <= set(head.state_dict())


def test_frozen_teacher_projection_is_identity_when_channels_match_else_orthogonal():
    same = SARDDistillationHead(8, 8, dim=8)
    assert torch.equal(same.teacher_proj.weight[:, :, 0, 0], torch.eye(8))
    wide = SARDDistillationHead(8, 16, dim=8).teacher_proj.weight[:, :, 0, 0]  # (8, 16)
    assert torch.allclose(wide @ wide.T, torch.eye(8), atol=1e-5)


# ---------------------------------------------------------------- L_DA


def test_distribution_alignment_noise_follows_global_seed():
    loss = DistributionAlignmentLoss(4)
    fs, ft, w = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3), _uniform(1, 3, 3)
    torch.manual_seed(7)
    a = loss(fs, ft, w)
    torch.manual_seed(7)
    b = loss(fs, ft, w)
    c = loss(fs, ft, w)  # the RNG moved on: new noise
    assert a.item() == b.item() and a.item() != c.item()


def test_distribution_alignment_perfect_denoiser_gives_zero():
    # A denoiser that outputs (F̃_T − √α F̂_S) / √(1−α) is exact once F̂_S = F̂_T.
    d, alpha = 3, 0.5
    loss = DistributionAlignmentLoss(d, alpha=alpha, hidden=2 * d)
    first, second = loss.denoiser[0], loss.denoiser[2]
    with torch.no_grad():
        first.weight.zero_()
        first.bias.zero_()
        c = 1.0 / (1.0 - alpha) ** 0.5
        for k in range(d):  # hidden unit pairs carry ±(linear combination) through the GELU
            lin = torch.zeros(2 * d)
            lin[k], lin[d + k] = -(alpha**0.5) * c, c
            first.weight[2 * k, :, 1, 1] = 100.0 * lin
            first.weight[2 * k + 1, :, 1, 1] = -100.0 * lin
        second.weight.zero_()
        second.bias.zero_()
        for k in range(d):
            second.weight[k, 2 * k, 0, 0] = 0.01
            second.weight[k, 2 * k + 1, 0, 0] = -0.01
    ft = torch.randn(2, d, 4, 4)
    assert loss(ft, ft, _uniform(2, 4, 4)).item() < 1e-6
    assert loss(torch.zeros_like(ft), ft, _uniform(2, 4, 4)).item() > 0.1


def test_multi_level_alpha_conditions_the_denoiser():
    loss = DistributionAlignmentLoss(4, alpha=[0.3, 0.7])
    assert loss.denoiser[0].in_channels == 9
    value = loss(torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3), _uniform(1, 3, 3))
    assert torch.isfinite(value)
    with pytest.raises(ValueError, match="alpha"):
        DistributionAlignmentLoss(4, alpha=1.0)


# ---------------------------------------------------------------- collapse guard


def _train_projections_and_denoiser(head: SARDDistillationHead, steps: int = 200):
    """Adam on the head only; student and teacher features are fresh, unrelated noise each step.

    Returns the raw (un-λ-weighted) L_FC and L_DA averaged over the last 20 steps.
    """
    torch.manual_seed(0)
    opt = torch.optim.Adam([p for p in head.parameters() if p.requires_grad], lr=1e-2)
    fc_hist, da_hist = [], []
    for _ in range(steps):
        student = torch.randn(2, 16, 8, 8)
        teacher = 0.05 * torch.randn(2, 16, 8, 8) + 0.02  # small, off-centre, like raw embeddings
        out = head(student, teacher)
        opt.zero_grad()
        (out["loss_fc"] + out["loss_da"]).backward()
        opt.step()
        fc_hist.append(out["loss_fc"].item() / head.lambda_f)
        da_hist.append(out["loss_da"].item() / head.lambda_d)
    return sum(fc_hist[-20:]) / 20, sum(da_hist[-20:]) / 20


def _head(**guard) -> SARDDistillationHead:
    torch.manual_seed(0)
    return SARDDistillationHead(16, 16, dim=16, weighting="uniform", **guard)


def test_collapse_guard_keeps_both_losses_off_zero():
    fc, da = _train_projections_and_denoiser(_head())
    # Uninformative student: L_FC ≈ 1 (unit-variance target), L_DA ≈ α = 0.5 (posterior var).
    assert fc > 0.8
    assert da > 0.4


def test_without_guard_both_losses_collapse():
    fc, da = _train_projections_and_denoiser(
        _head(teacher_projection="learnable", normalize_teacher=False)
    )
    assert fc < 0.05
    assert da < 0.2


def test_each_half_of_the_guard_is_needed():
    # Learnable P_T + LayerNorm: P_T maps every position to one vector, LN keeps it constant.
    fc, _ = _train_projections_and_denoiser(_head(teacher_projection="learnable"))
    assert fc < 0.05
    # Frozen P_T without LayerNorm: the small target leaves ε readable from F̃_T.
    _, da = _train_projections_and_denoiser(_head(normalize_teacher=False))
    assert da < 0.2


# ---------------------------------------------------------------- structure map wiring


@dataclass
class _FakeStructureMap:
    weight: torch.Tensor


def test_structure_weighting_calls_compute_structure_map(monkeypatch):
    calls = {}

    def fake(features, **kwargs):
        calls.update(kwargs, requires_grad=features.requires_grad, dtype=features.dtype)
        w = torch.zeros(features.shape[0], 1, *features.shape[-2:])
        w[..., 0, 0] = 1.0
        return _FakeStructureMap(weight=w)

    # Built first: the head takes the settings it is not given (border_cells) from the real
    # compute_structure_map's signature.
    head = SARDDistillationHead(
        4, 4, dim=4, beta_e=0.0, beta_c=1.0, beta_d=3.0, radius=2, sigma=0.5
    )
    monkeypatch.setitem(
        sys.modules, "sard.structure", types.SimpleNamespace(compute_structure_map=fake)
    )
    student, teacher = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3, requires_grad=True)
    out = head(student, teacher)
    assert calls == dict(
        beta_e=0.0,
        beta_c=1.0,
        beta_d=3.0,
        radius=2,
        sigma=0.5,
        border_cells=0,
        valid_mask=None,
        requires_grad=False,
        dtype=torch.float32,
    )
    fs, ft = head.project_student(student, (3, 3)), head.project_teacher(teacher)
    assert out["loss_fc"].item() == pytest.approx((fs - ft)[0, :, 0, 0].pow(2).mean().item())


def test_real_structure_map_gives_finite_losses_different_from_uniform():
    structure = pytest.importorskip("sard.structure")
    if not hasattr(structure, "compute_structure_map"):
        pytest.skip("sard.structure.compute_structure_map is not there yet")
    torch.manual_seed(0)
    teacher = torch.zeros(1, 8, 16, 16)
    teacher[..., 4:12, 4:12] = 1.0  # a square: structure lives on its outline
    teacher = teacher + 0.01 * torch.randn_like(teacher)
    student = torch.randn(1, 8, 16, 16)
    sard = SARDDistillationHead(8, 8, dim=8, radius=2)
    w = sard.weight_map(teacher)
    assert w.shape == (1, 1, 16, 16)
    assert w.sum().item() == pytest.approx(1.0, abs=1e-4)
    uni = SARDDistillationHead(8, 8, dim=8, weighting="uniform")
    uni.load_state_dict(sard.state_dict())
    a, b = sard(student, teacher)["loss_fc"], uni(student, teacher)["loss_fc"]
    assert torch.isfinite(a) and a.item() != pytest.approx(b.item())


def test_structure_settings_take_compute_structure_maps_defaults_and_refuse_unknown_names():
    from sard.structure import compute_structure_map

    params = inspect.signature(compute_structure_map).parameters
    head = SARDDistillationHead(4, 4, dim=4, radius=2)
    assert head.structure_settings == {
        "beta_e": params["beta_e"].default,
        "beta_c": params["beta_c"].default,
        "beta_d": params["beta_d"].default,
        "radius": 2,
        "sigma": params["sigma"].default,
        "border_cells": params["border_cells"].default,
    }
    with pytest.raises(TypeError, match="beta_x"):
        SARDDistillationHead(4, 4, dim=4, beta_x=1.0)

"""build_distillation_loss, total_loss, and properties every method must have (precision, no
gradient to the teacher)."""

from __future__ import annotations

from typing import Callable, Dict, Tuple

import pytest
import torch

from sard.losses import (
    MethodInputs,
    PromptMaskLoss,
    SARDDistillationHead,
    build_distillation_loss,
    get_method,
    method_names,
    total_loss,
)
from testkit import DISTILL_LOSS_KEYS

DISTILLATION_METHODS = [m for m in method_names() if m != "none"]


def _weight(b: int, h: int, w: int) -> torch.Tensor:
    weight = torch.rand(b, 1, h, w)
    return weight / weight.flatten(1).sum(1).view(b, 1, 1, 1)


def _case(method: str) -> Tuple[torch.nn.Module, Callable[[torch.dtype], Dict]]:
    """(module, make_inputs(dtype)) for each method with tiny, mismatched shapes."""
    if method in ("sard", "uniform", "mgd"):
        module = build_distillation_loss(
            method,
            student_channels=6,
            teacher_channels=10,
            **({"dim": 16} if method in ("sard", "uniform") else {}),
        )

        def make(dtype):
            return dict(
                student=torch.randn(2, 6, 4, 4, dtype=dtype, requires_grad=True),
                teacher=torch.randn(2, 10, 8, 8, dtype=dtype, requires_grad=True),
                weight=_weight(2, 8, 8) if method == "sard" else None,
            )

    elif method == "reviewkd":
        module = build_distillation_loss(
            method, student_channels=[4, 8], teacher_channels=[6, 12], mid_channels=8
        )

        def make(dtype):
            return dict(
                student=[
                    torch.randn(2, 4, 8, 8, dtype=dtype, requires_grad=True),
                    torch.randn(2, 8, 4, 4, dtype=dtype, requires_grad=True),
                ],
                teacher=[
                    torch.randn(2, 6, 8, 8, dtype=dtype, requires_grad=True),
                    torch.randn(2, 12, 4, 4, dtype=dtype, requires_grad=True),
                ],
            )

    else:  # class-logit methods
        module = build_distillation_loss(method)

        def make(dtype):
            targets = torch.randint(0, 5, (2, 8, 8))
            targets[:, 0] = 255
            return dict(
                student=(8 * torch.randn(2, 5, 4, 4, dtype=dtype)).requires_grad_(),
                teacher=(8 * torch.randn(2, 5, 8, 8, dtype=dtype)).requires_grad_(),
                targets=targets,
            )

    return module, make


CONSUMES = {
    "sard": "features",
    "uniform": "features",
    "mgd": "features",
    "cwd": "logits",
    "kd": "logits",
    "skd": "logits",
    "dkd": "logits",
    "reviewkd": "multi_features",
}


def test_every_method_is_buildable():
    assert set(DISTILLATION_METHODS) == set(DISTILL_LOSS_KEYS)
    assert method_names()[-1] == "none" and "none" not in DISTILLATION_METHODS


@pytest.mark.parametrize("method", DISTILLATION_METHODS)
@pytest.mark.parametrize("promptable", [True, False], ids=["promptable", "semantic"])
def test_every_registered_method_builds_from_the_default_config(method, promptable):
    """The registry is the only list of methods: each builds itself from its config node."""
    from sard.config import get_cfg

    cfg = get_cfg()
    cfg.MODEL.SARD.METHOD = method
    spec = get_method(method)
    if spec.node:  # its own keys, with their declared defaults
        assert dict(cfg.MODEL.SARD[spec.node]) == {k: v for k, (v, _) in spec.keys.items()}
    multi = spec.taps is not None
    inputs = MethodInputs([4, 8] if multi else 6, [6, 12] if multi else 10, promptable, cfg)
    if method == "dkd" and promptable:
        with pytest.raises(ValueError, match="semantic pair"):
            spec.from_config(cfg, inputs)
        return
    module = spec.from_config(cfg, inputs)
    assert module.consumes == CONSUMES[method]
    if method in ("kd", "skd", "cwd"):
        assert module.logit_form == ("mask" if promptable else "class")


def test_old_flat_baseline_keys_name_their_new_place(tmp_path):
    from sard.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="MODEL.SARD.CWD_TAU was renamed MODEL.SARD.CWD.TAU"):
        load_config(opts=["MODEL.SARD.CWD_TAU", "2.0"])
    old = tmp_path / "old.yaml"
    old.write_text("MODEL:\n  SARD:\n    REVIEWKD_TAPS: ['stage2']\n")
    with pytest.raises(ConfigError, match="REVIEWKD_TAPS was renamed MODEL.SARD.REVIEWKD.TAPS"):
        load_config(str(old))
    cfg = load_config(opts=["MODEL.SARD.CWD.TAU", "2.0"])
    assert cfg.MODEL.SARD.CWD.TAU == 2.0


def _teacher_leaves(inputs: Dict):
    t = inputs["teacher"]
    return t if isinstance(t, list) else ([t] if t is not None else [])


@pytest.mark.parametrize("method", DISTILLATION_METHODS)
def test_keys_consumes_and_no_gradient_to_the_teacher(method):
    torch.manual_seed(0)
    module, make = _case(method)
    assert module.consumes == CONSUMES[method]
    inputs = make(torch.float32)
    out = module(**inputs)
    assert set(out) == DISTILL_LOSS_KEYS[method]
    if not out:
        return
    total = total_loss(out)
    assert torch.isfinite(total) and total.item() > 0
    total.backward()
    assert all(t.grad is None for t in _teacher_leaves(inputs))


@pytest.mark.parametrize("method", [m for m in DISTILLATION_METHODS if m != "none"])
@pytest.mark.parametrize("mode", ["bf16-autocast", "fp16"])
def test_finite_under_low_precision(method, mode):
    torch.manual_seed(0)
    module, make = _case(method)
    if mode == "fp16":
        module = module.half()
        inputs = make(torch.float16)
        out = module(**inputs)
    else:
        inputs = make(torch.float32)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = module(**inputs)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in out.values())
    total_loss(out).backward()
    students = inputs["student"] if isinstance(inputs["student"], list) else [inputs["student"]]
    assert all(s.grad is not None and torch.isfinite(s.grad).all() for s in students)


@pytest.mark.parametrize("mode", ["bf16-autocast", "fp16"])
def test_task_loss_finite_under_low_precision(mode):
    logits = 30 * torch.randn(2, 3, 3, 8, 8)
    gt = (torch.rand(2, 3, 16, 16) > 0.5).float()
    valid = torch.tensor([[True, True, False], [True, False, False]])
    iou = torch.rand(2, 3, 3)
    if mode == "fp16":
        logits, gt, iou = logits.half(), gt.half(), iou.half()
        out = PromptMaskLoss()(logits.requires_grad_(), gt, valid, iou)
    else:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = PromptMaskLoss()(logits.requires_grad_(), gt, valid, iou)
    assert all(torch.isfinite(v) for v in out.values())
    total_loss(out).backward()
    assert torch.isfinite(logits.grad).all()


def test_factory_forwards_hyper_parameters_and_fixes_weighting():
    sard = build_distillation_loss(
        "sard", student_channels=4, teacher_channels=8, lambda_d=0.25, beta_d=0.0
    )
    assert isinstance(sard, SARDDistillationHead)
    assert (
        sard.weighting == "structure"
        and sard.lambda_d == 0.25
        and sard.structure_kwargs["beta_d"] == 0.0
    )
    uni = build_distillation_loss("uniform", student_channels=4, teacher_channels=8)
    assert uni.weighting == "uniform" and (uni.lambda_f, uni.lambda_d, uni.dim) == (1.0, 0.5, 256)
    with pytest.raises(ValueError, match="fixed by the method"):
        build_distillation_loss(
            "uniform", student_channels=4, teacher_channels=8, weighting="structure"
        )
    kd = build_distillation_loss("kd", tau=2.0, logit_form="mask")
    assert (kd.tau, kd.logit_form) == (2.0, "mask")
    cwd = build_distillation_loss("cwd", on="features", student_channels=4, teacher_channels=8)
    assert cwd.consumes == "features"


def test_factory_errors_name_the_problem():
    with pytest.raises(KeyError, match="'fitnet' is not a distillation method"):
        build_distillation_loss("fitnet")
    with pytest.raises(ValueError, match="'mgd'.*channels must be a positive int"):
        build_distillation_loss("mgd", teacher_channels=8)
    with pytest.raises(ValueError, match="per-stage list"):
        build_distillation_loss("reviewkd", student_channels=4, teacher_channels=[8])
    with pytest.raises(TypeError, match="'kd'"):
        build_distillation_loss("kd", temperature=3.0)
    with pytest.raises(ValueError, match="logit_form"):
        build_distillation_loss("skd", logit_form="binary")


def test_total_loss_sums_terms_and_rejects_empty_or_non_scalar():
    a = torch.tensor(1.5, requires_grad=True)
    total = total_loss({"loss_fc": a, "loss_da": torch.tensor(0.25), "loss_mask_bce": 2 * a})
    assert total.item() == pytest.approx(4.75)
    total.backward()
    assert a.grad.item() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="no loss terms"):
        total_loss({})
    with pytest.raises(ValueError, match="loss_x"):
        total_loss({"loss_x": torch.ones(2)})


def test_sard_total_matches_paper_weights():
    """L = λ_f L_FC + λ_d L_DA + μ L_task with the defaults λ_f = 1, λ_d = 0.5, μ = 1."""
    torch.manual_seed(0)
    head = build_distillation_loss("sard", student_channels=4, teacher_channels=4, dim=8)
    student, teacher, w = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4), _weight(1, 4, 4)
    logits, gt = torch.randn(1, 2, 3, 4, 4), (torch.rand(1, 2, 4, 4) > 0.5).float()
    valid = torch.ones(1, 2, dtype=torch.bool)
    torch.manual_seed(1)
    terms = {**head(student, teacher, weight=w), **PromptMaskLoss()(logits, gt, valid)}
    fs, ft = head.project_student(student, (4, 4)), head.project_teacher(teacher)
    torch.manual_seed(1)
    raw_da = head.distribution_alignment(fs, ft, w)
    raw_fc = head.feature_consistency(fs, ft, w)
    task = PromptMaskLoss()(logits, gt, valid)
    expected = raw_fc + 0.5 * raw_da + task["loss_mask_dice"] + task["loss_mask_bce"]
    assert total_loss(terms).item() == pytest.approx(expected.item(), rel=1e-6)

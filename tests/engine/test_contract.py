"""One training contract for both engines: iterations, schedule, clipping, evaluation, logs.

The tests marked ``both_engines`` run the built-in path without detectron2 and, when detectron2
is importable, the same assertions on the detectron2 path.
"""

from __future__ import annotations

import glob
import json
import math
import os

import pytest
import torch

from sard.config import load_config
from sard.config.contract import effective_config, effective_settings
from sard.engine.solver import build_lr_scheduler, build_optimizer, lr_multiplier
from testkit import ENGINES, REPO, TINY_SAM, cpu_can_flush_subnormals, detectron2_available
from testkit import run_train_net, tiny_synth_opts

TOP_CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "*.yaml")))
ALL_CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: os.path.relpath(p, REPO))
def test_every_config_resolves_to_the_same_effective_settings(path, engine):
    """Both setup paths (built-in defaults or detectron2's) give one effective config."""
    reference = effective_settings(effective_config(load_config(path), 1000))
    cfg = effective_config(load_config(path, use_detectron2=(engine == "detectron2")), 1000)
    assert effective_settings(cfg) == reference
    if cfg.SOLVER.MAX_EPOCHS > 0:
        expected = math.ceil(cfg.SOLVER.MAX_EPOCHS * 1000 / cfg.SOLVER.IMS_PER_BATCH)
        assert cfg.SOLVER.MAX_ITER == expected


def test_the_paper_config_trains_100_epochs_not_max_iter():
    cfg = effective_config(
        load_config(os.path.join(REPO, "configs", "sam_h_to_efficientsam.yaml")), 1000
    )
    assert cfg.SOLVER.MAX_ITER == 25000  # 100 epochs x 1000 images / batch 4
    assert effective_settings(cfg)["schedule_iters"] == 25000


@pytest.mark.parametrize("scheduler", ["WarmupCosineLR", "WarmupPolyLR"])
@pytest.mark.parametrize("path", TOP_CONFIGS, ids=lambda p: os.path.relpath(p, REPO))
def test_lr_of_the_last_iteration_is_about_zero(path, scheduler):
    raw = load_config(path, ["SOLVER.LR_SCHEDULER_NAME", scheduler])
    cfg = effective_config(raw, 1000)
    last = lr_multiplier(cfg)(cfg.SOLVER.MAX_ITER - 1)
    assert 0 <= last < 2e-3, (cfg.SOLVER.MAX_ITER, last)
    # Halfway through, the schedule is still well above zero (it spans the whole run).
    assert lr_multiplier(cfg)(cfg.SOLVER.MAX_ITER // 2) > 0.3


def test_the_scheduler_reaches_about_zero_after_the_effective_iterations():
    raw = load_config(TINY_SAM, ["SOLVER.MAX_EPOCHS", "3", "SOLVER.WARMUP_ITERS", "2"])
    cfg = effective_config(raw, 10)  # 3 epochs x 10 images / batch 2 = 15 iterations
    assert cfg.SOLVER.MAX_ITER == 15
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    lrs = []
    for _ in range(cfg.SOLVER.MAX_ITER):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(cfg.SOLVER.BASE_LR * cfg.SOLVER.WARMUP_FACTOR)
    assert max(lrs) > 0.5 * cfg.SOLVER.BASE_LR
    assert lrs[-1] < 0.02 * cfg.SOLVER.BASE_LR


def test_max_epochs_without_training_images_is_an_error():
    raw = load_config(TINY_SAM, ["SOLVER.MAX_EPOCHS", "3"])
    with pytest.raises(ValueError, match="SOLVER.MAX_EPOCHS"):
        effective_config(raw, 0)
    # Evaluation only: no training set needed, MAX_ITER left alone.
    assert effective_config(raw, None).SOLVER.MAX_ITER == raw.SOLVER.MAX_ITER


def test_contract_is_idempotent():
    cfg = effective_config(
        load_config(os.path.join(REPO, "configs", "sam_h_to_efficientsam.yaml")), 37
    )
    again = effective_config(cfg, 37)
    assert effective_settings(again) == effective_settings(cfg)


def test_cuda_falls_back_to_cpu_in_the_effective_config(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = effective_config(load_config(opts=["MODEL.DEVICE", "cuda"]), None)
    assert cfg.MODEL.DEVICE == "cpu"


@pytest.mark.parametrize("kind", ["full_model", "norm", "value"])
def test_the_optimizer_clips_its_own_gradients(kind):
    """Whoever calls step() (our loop, detectron2's SimpleTrainer, a GradScaler), it clips."""
    cfg = load_config(
        opts=[
            "SOLVER.CLIP_GRADIENTS.ENABLED",
            "True",
            "SOLVER.CLIP_GRADIENTS.CLIP_TYPE",
            kind,
            "SOLVER.CLIP_GRADIENTS.CLIP_VALUE",
            "0.5",
        ]
    )
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    optimizer = build_optimizer(cfg, model)
    for p in model.parameters():
        p.grad = torch.full_like(p, 10.0)
    optimizer.step()
    grads = [p.grad for p in model.parameters()]
    if kind == "full_model":
        assert torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads])) <= 0.5 + 1e-5
    elif kind == "norm":
        assert all(torch.linalg.vector_norm(g) <= 0.5 + 1e-5 for g in grads)
    else:
        assert all(g.abs().max() <= 0.5 for g in grads)


def test_clipping_off_leaves_gradients_alone():
    model = torch.nn.Linear(4, 4)
    optimizer = build_optimizer(load_config(), model)
    for p in model.parameters():
        p.grad = torch.full_like(p, 10.0)
    optimizer.step()
    assert all(torch.all(p.grad == 10.0) for p in model.parameters())


def _run_engine(engine, tiny_synth, out, *opts, env=None):
    """Two training iterations and evaluation through tools/train_net.py (one thread unless
    ``env`` says otherwise); returns metrics."""
    res = run_train_net(
        *("--config-file", TINY_SAM, *opts, *tiny_synth_opts(tiny_synth, out)),
        *("SOLVER.MAX_EPOCHS", "1"),  # 4 images / batch 2 = 2 iterations, whatever MAX_ITER says
        *("SOLVER.MAX_ITER", "999", "SOLVER.WARMUP_ITERS", "2"),
        *("SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "0.01", "TEST.MAX_IMAGES", "1", "SEED", "5"),
        engine=engine,
        env=env,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    lines = [json.loads(x) for x in open(out / "metrics.json")]
    return res, lines


@pytest.mark.parametrize("engine", ENGINES)
def test_engine_honours_epochs_lr_log_period_eval_limit_and_logs(engine, tiny_synth, tmp_path):
    # Two threads: the subnormal flush must reach torch's worker thread too (see the log below).
    res, lines = _run_engine(engine, tiny_synth, tmp_path / engine, env={"OMP_NUM_THREADS": "2"})
    losses = [x for x in lines if "total_loss" in x]
    # MAX_EPOCHS wins over MAX_ITER: 2 iterations, logged every iteration (LOG_PERIOD 1).
    assert [x["iteration"] for x in losses] == [0, 1]
    # The LR each iteration trained with: warm-up factor at iteration 0.
    cfg = effective_config(
        load_config(TINY_SAM, ["SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "2"]), None
    )
    assert losses[0]["lr"] == pytest.approx(cfg.SOLVER.BASE_LR * lr_multiplier(cfg)(0))
    assert losses[1]["lr"] == pytest.approx(cfg.SOLVER.BASE_LR * lr_multiplier(cfg)(1))
    # sard.* INFO logs reach the console and log.txt.
    log = open(tmp_path / engine / "log.txt").read()
    assert "training contract: 2 iterations (1 epochs x 4 images / batch 2)" in log
    assert "gradient clipping full_model at 0.01" in log
    if cpu_can_flush_subnormals():
        assert "flushes subnormal floats to zero (torch.set_flush_denormal; checked on all 2" in log
    # TEST.MAX_IMAGES 1: the instances of the first validation image only are evaluated.
    from sard.data import load_coco_instances

    data = os.path.join(tiny_synth, "rockfrag_synth")
    first = load_coco_instances(f"{data}/val.json", f"{data}/val")[0]
    (report,) = glob.glob(str(tmp_path / engine / "inference" / "*" / "sard_instances.json"))
    assert json.load(open(report))["metrics"]["count"] == len(first["annotations"])
    assert "bIoU" in res.stdout + res.stderr
    ckpt = torch.load(tmp_path / engine / "model_final.pth", map_location="cpu", weights_only=True)
    assert "rng" in ckpt  # checkpoints hold the RNG state in both engines


@pytest.mark.skipif(not detectron2_available(), reason="detectron2 is not installed")
def test_both_engines_log_the_same_iterations_and_lrs(tiny_synth, tmp_path):
    _, ours = _run_engine("sard", tiny_synth, tmp_path / "sard")
    _, theirs = _run_engine("detectron2", tiny_synth, tmp_path / "d2")
    iterations = lambda lines: [x["iteration"] for x in lines if "lr" in x]  # noqa: E731
    lrs = lambda lines: [x["lr"] for x in lines if "lr" in x]  # noqa: E731
    assert iterations(ours) == iterations(theirs) == [0, 1]
    assert lrs(ours) == pytest.approx(lrs(theirs))

"""MODEL.SARD.DISTILL_WARMUP_ITERS: distillation terms ramp in linearly, the task loss never."""

from __future__ import annotations

import pytest
import torch

from sard.engine import Trainer
from testkit import tiny_cfg, train_stream

TASK_PREFIXES = ("loss_mask", "loss_iou", "loss_m2f")


def _losses(model, batch, iteration):
    model.iteration = iteration
    torch.manual_seed(0)  # Mask2Former's loss samples points at random
    with torch.no_grad():
        return {k: float(v) for k, v in model(batch).items()}


@pytest.mark.parametrize("kind,method", [("sam", "kd"), ("m2f", "dkd")])
def test_distillation_terms_ramp_in_and_the_task_loss_does_not(kind, method, tiny_synth, tmp_path):
    opts = ["MODEL.SARD.METHOD", method, "MODEL.SARD.DISTILL_WARMUP_ITERS", "4"]
    trainer = Trainer(tiny_cfg(kind, str(tmp_path), *opts, "DATASETS.TEST", "()"))
    model, batch = trainer.model.train(), next(iter(train_stream(trainer)))
    first, last, later = (_losses(model, batch, it) for it in (0, 3, 50))
    distill = [k for k in first if not k.startswith(TASK_PREFIXES)]
    task = [k for k in first if k.startswith(TASK_PREFIXES)]
    assert distill and task
    for name in distill:
        assert last[name] > 0
        assert first[name] == pytest.approx(last[name] / 4, rel=1e-5)  # (0 + 1) / 4
        assert later[name] == pytest.approx(last[name], rel=1e-5)  # full weight from it = 3
    for name in task:
        assert first[name] == pytest.approx(last[name], rel=1e-5)
    # The trainer tells the distiller the iteration: at iteration 1 the ramp is 2 / 4.
    logged = trainer.run_step(model, batch, 1)
    assert model.iteration == 1
    for name in distill:
        assert logged[name] == pytest.approx(last[name] / 2, rel=1e-4)


def test_warmup_without_an_iteration_says_what_is_missing(tiny_synth, tmp_path):
    opts = ["MODEL.SARD.METHOD", "kd", "MODEL.SARD.DISTILL_WARMUP_ITERS", "4"]
    trainer = Trainer(tiny_cfg("sam", str(tmp_path), *opts, "DATASETS.TEST", "()"))
    model, batch = trainer.model.train(), next(iter(train_stream(trainer)))
    model.iteration = None
    with pytest.raises(RuntimeError, match="distiller.iteration"):
        model(batch)


@pytest.mark.parametrize("bad", [-1, 2.5, True, "3"])
def test_bad_warmup_values_raise(bad, tiny_synth, tmp_path):
    cfg = tiny_cfg("sam", str(tmp_path), "MODEL.SARD.METHOD", "kd", "DATASETS.TEST", "()")
    cfg.defrost()
    cfg.MODEL.SARD.DISTILL_WARMUP_ITERS = bad
    with pytest.raises(ValueError, match="distill_warmup_iters"):
        Trainer(cfg)


def test_inside_detectron2_the_event_storage_gives_the_iteration(tiny_synth, tmp_path):
    pytest.importorskip("detectron2")
    from detectron2.utils.events import EventStorage

    opts = ["MODEL.SARD.METHOD", "kd", "MODEL.SARD.DISTILL_WARMUP_ITERS", "4"]
    trainer = Trainer(tiny_cfg("sam", str(tmp_path), *opts, "DATASETS.TEST", "()"))
    model, batch = trainer.model.train(), next(iter(train_stream(trainer)))
    full = _losses(model, batch, 3)["loss_kd"]
    model.iteration = None
    with EventStorage(start_iter=1), torch.no_grad():
        assert float(model(batch)["loss_kd"]) == pytest.approx(full / 2, rel=1e-5)

"""Built-in engine parts: resumable data order, atomic checkpoints, LR schedule, RNG state."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from sard.config import get_cfg
from sard.engine.checkpoint import AtomicCheckpointer, rng_state, set_rng_state
from sard.engine.data import TrainStream, global_indices
from sard.engine.solver import build_lr_scheduler, build_optimizer, lr_multiplier


def test_global_indices_visit_each_record_once_per_epoch():
    stream = global_indices(7, seed=3, start=0, count=21)
    for e in range(3):
        assert sorted(stream[7 * e : 7 * e + 7]) == list(range(7))
    assert stream[:7] != stream[7:14]  # a new order each epoch
    assert global_indices(7, 3, 5, 9) == stream[5:14]  # random access = resume


def _noisy_mapper(record):
    # Uses all three global RNGs, as augmentations and prompt sampling do.
    return (record["i"], random.random(), float(np.random.rand()), float(torch.rand(())))


def test_stream_is_deterministic_resumable_and_sharded():
    records = [{"i": i} for i in range(5)]
    full = TrainStream(records, _noisy_mapper, global_batch=4, seed=1)
    batches = [full.batch_for_iteration(it) for it in range(6)]
    resumed = TrainStream(records, _noisy_mapper, global_batch=4, seed=1, start_iter=3)
    it = iter(resumed)
    assert [next(it) for _ in range(3)] == batches[3:]
    # Two processes with half the batch each together see exactly the one-process batch.
    r0 = TrainStream(records, _noisy_mapper, global_batch=4, seed=1, rank=0, world_size=2)
    r1 = TrainStream(records, _noisy_mapper, global_batch=4, seed=1, rank=1, world_size=2)
    for k in range(6):
        assert r0.batch_for_iteration(k) + r1.batch_for_iteration(k) == batches[k]


def test_stream_leaves_global_rng_untouched():
    stream = TrainStream([{"i": 0}], _noisy_mapper, global_batch=2, seed=0)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    stream.batch_for_iteration(0)
    assert torch.equal(torch.rand(3), expected)


def test_stream_rejects_bad_batch_and_empty_data():
    with pytest.raises(ValueError, match="not divisible"):
        TrainStream([{"i": 0}], _noisy_mapper, global_batch=3, seed=0, world_size=2)
    with pytest.raises(ValueError, match="empty"):
        TrainStream([], _noisy_mapper, global_batch=2, seed=0)


def test_rng_state_round_trip_through_weights_only_load(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    state = rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(()))
    torch.save(state, tmp_path / "rng.pt")
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(())) == expected


def _checkpointer(tmp_path):
    model = torch.nn.Linear(3, 2)
    return model, AtomicCheckpointer(model, str(tmp_path))


def test_interrupted_save_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    model, ckpt = _checkpointer(tmp_path)
    ckpt.save("model_good", iteration=1)
    good = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)

    def disk_full(obj, f, *a, **k):
        f.write(b"partial bytes")  # part of the file gets written, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="previous checkpoint and last_checkpoint were left intact"):
        ckpt.save("model_bad", iteration=2)
    monkeypatch.undo()
    assert not os.path.exists(tmp_path / "model_bad.pth")
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]
    assert ckpt.get_checkpoint_file().endswith("model_good.pth")
    fresh, loader = _checkpointer(tmp_path)
    extra = loader.resume_or_load("", resume=True)
    assert extra["iteration"] == 1
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, good[k])


def test_checkpoint_load_refuses_pickled_code(tmp_path):
    model, ckpt = _checkpointer(tmp_path)
    marker = tmp_path / "code_ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"model": model.state_dict(), "evil": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(Exception, match="(?i)weights_only|unpickl"):
        ckpt.load(str(tmp_path / "evil.pth"))
    assert not marker.exists()


def test_lr_schedule_warmup_then_cosine_and_poly():
    cfg = get_cfg()
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.WARMUP_FACTOR = 100, 10, 0.1
    m = lr_multiplier(cfg)
    assert m(0) == pytest.approx(0.1)
    assert m(5) == pytest.approx((0.1 + 0.9 * 0.5) * (0.5 + 0.5 * np.cos(np.pi * 0.05)))
    assert m(50) == pytest.approx(0.5)
    assert m(99) < 0.01
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupPolyLR"
    assert lr_multiplier(cfg)(50) == pytest.approx(0.5**0.9)
    cfg.SOLVER.LR_SCHEDULER_NAME = "Nope"
    with pytest.raises(ValueError, match="Nope"):
        lr_multiplier(cfg)


def test_optimizer_skips_frozen_parameters_and_decays_only_matrices():
    cfg = get_cfg()
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    model[0].requires_grad_(False)
    opt = build_optimizer(cfg, model)
    params = [p for g in opt.param_groups for p in g["params"]]
    assert len(params) == 2 and all(p.requires_grad for p in params)
    decays = {g["weight_decay"] for g in opt.param_groups}
    assert decays == {cfg.SOLVER.WEIGHT_DECAY, 0.0}
    sched = build_lr_scheduler(cfg, opt)
    assert sched.get_last_lr()[0] == pytest.approx(cfg.SOLVER.BASE_LR * cfg.SOLVER.WARMUP_FACTOR)

"""End to end on the built-in engine: two iterations of training plus evaluation per family."""

from __future__ import annotations

import json
import os

import pytest
import torch

from sard.engine import Trainer
from testkit import DISTILL_LOSS_KEYS, tiny_cfg, train_stream


@pytest.mark.parametrize("kind", ["sam", "m2f", "vit", "m2f_resnet"])
def test_two_iterations_then_evaluation(kind, tiny_synth, tmp_path):
    cfg = tiny_cfg(kind, str(tmp_path))
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    before = {k: v.clone() for k, v in trainer.model.student.state_dict().items()}
    results = trainer.train()
    after = trainer.model.student.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "the student did not learn"
    metrics = [json.loads(line) for line in open(tmp_path / "metrics.json")]
    losses = [m for m in metrics if "total_loss" in m]
    assert [m["iteration"] for m in losses] == [0, 1]
    terms = set(losses[0])
    assert {"loss_fc", "loss_da"} <= terms, terms  # SARD's terms are logged by name
    (task,) = results.values()
    flat = next(iter(task.values()))
    boundary = "bIoU" if kind == "sam" else "mBIoU"
    assert 0.0 <= flat["mIoU"] <= 100.0 and 0.0 <= flat[boundary] <= 100.0
    # The final checkpoint holds the student and the head, never the teacher.
    ckpt = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=True)
    assert not [k for k in ckpt["model"] if k.startswith("teacher")]
    assert any(k.startswith("student.") for k in ckpt["model"])
    assert any(k.startswith("head.") for k in ckpt["model"])


def _final_student(cfg):
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=True)
    trainer.train()
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tiny_synth, tmp_path):
    opts = ["SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2", "DATASETS.TEST", "()"]
    straight = _final_student(tiny_cfg("sam", str(tmp_path / "a"), *opts))
    # Stop after 2 iterations (a run whose MAX_ITER is 2 writes the same checkpoint at it=1) ...
    first = tiny_cfg("sam", str(tmp_path / "b"), *opts)
    trainer = Trainer(first)
    trainer.max_iter = 2
    trainer.train()
    os.remove(tmp_path / "b" / "model_final.pth")  # only model_0000001.pth remains, as after a kill
    with open(tmp_path / "b" / "last_checkpoint", "w") as f:
        f.write("model_0000001.pth")
    # ... then resume in a fresh trainer: iteration, optimizer, schedule, RNG and data position.
    resumed = _final_student(first)
    assert straight.keys() == resumed.keys()
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k


def test_nan_loss_stops_naming_the_last_checkpoint_followed_by_a_finite_loss(
    tiny_synth, tmp_path, monkeypatch
):
    cfg = tiny_cfg("sam", str(tmp_path), "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "1")
    trainer = Trainer(cfg)
    real_forward = type(trainer.model).forward
    calls = {"n": 0}

    def poisoned(self, batched_inputs):
        out = real_forward(self, batched_inputs)
        calls["n"] += 1
        if self.training and calls["n"] == 3:
            out["loss_fc"] = out["loss_fc"] * float("nan")
        return out

    monkeypatch.setattr(type(trainer.model), "forward", poisoned)
    good = None
    # Iteration 2 fails: the weights saved after iteration 1 gave that loss, so the last good
    # checkpoint is the one of iteration 0; the other is set aside, and --resume continues
    # from the good one.
    with pytest.raises(FloatingPointError, match=r"iteration 2.*model_0000000\.pth"):
        good = trainer.train()
    assert good is None
    assert trainer.checkpointer.get_checkpoint_file().endswith("model_0000000.pth")
    assert (tmp_path / "model_0000001.pth.diverged").is_file()
    assert not (tmp_path / "model_0000001.pth").exists()
    assert not (tmp_path / "model_0000002.pth").exists()
    ckpt = torch.load(tmp_path / "model_0000000.pth", map_location="cpu", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


@pytest.mark.parametrize("blow_up", [float("inf"), 1e30], ids=["inf", "huge"])
def test_exploded_weights_are_never_named_or_kept_as_good(
    tiny_synth, tmp_path, monkeypatch, blow_up
):
    """The attack's case: a step that explodes the weights, then a NaN loss. Non-finite weights
    are never saved; finite but exploded ones are saved, then set aside by the NaN that follows."""
    import sard.engine.trainer as trainer_module

    cfg = tiny_cfg("sam", str(tmp_path), "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "1")
    trainer = Trainer(cfg)
    real_step = trainer_module.optimizer_step

    def exploding_step(optimizer, precision):
        real_step(optimizer, precision)
        with torch.no_grad():
            for p in trainer.model.student.parameters():
                p.mul_(blow_up)

    monkeypatch.setattr(trainer_module, "optimizer_step", exploding_step)
    with pytest.raises(FloatingPointError, match="no checkpoint was saved before it"):
        trainer.train()
    assert not (tmp_path / "model_0000000.pth").exists()
    assert not (tmp_path / "last_checkpoint").exists()
    diverged = (tmp_path / "model_0000000.pth.diverged").exists()
    assert diverged == (blow_up == 1e30)


def test_teacher_is_outside_optimizer_and_checkpoint(tiny_synth, tmp_path):
    trainer = Trainer(tiny_cfg("sam", str(tmp_path)))
    teacher_params = {id(p) for p in trainer.model.teacher.module.parameters()}
    assert teacher_params
    optimized = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not optimized & teacher_params
    student_params = {id(p) for p in trainer.model.student.parameters()}
    assert student_params <= optimized
    assert not [k for k in trainer.model.state_dict() if k.startswith("teacher.")]


def test_distilled_checkpoint_loads_into_the_bare_student(tiny_synth, tmp_path):
    from sard.models import build_model
    from sard.models.checkpoint import load_checkpoint
    from sard.distill import student_state_dict

    cfg = tiny_cfg("sam", str(tmp_path), "DATASETS.TEST", "()")
    trainer = Trainer(cfg)
    trainer.train()
    bare = build_model("efficient_sam", size="tiny", image_size=64)
    load_checkpoint(bare, str(tmp_path / "model_final.pth"), transform=student_state_dict)
    for k, v in bare.state_dict().items():
        assert torch.equal(v, trainer.model.student.state_dict()[k])


@pytest.mark.parametrize("directory", [False, True], ids=["memory", "disk"])
def test_teacher_cache_skips_the_teacher_on_later_epochs(tiny_synth, tmp_path, directory):
    cache_dir = str(tmp_path / "cache") if directory else ""
    cfg = tiny_cfg(
        "sam",
        str(tmp_path),
        "MODEL.SARD.CACHE.ENABLED",
        "True",
        "MODEL.SARD.CACHE.DIR",
        cache_dir,
        "INPUT.RANDOM_FLIP",
        "none",
        "SOLVER.MAX_ITER",
        "4",
        "DATASETS.TEST",
        "()",
    )
    trainer = Trainer(cfg)
    teacher = trainer.model.teacher.module
    calls = []
    real = teacher.extract_features
    teacher.extract_features = lambda images, **kw: calls.append(len(images)) or real(images, **kw)
    trainer.train()
    # 4 images, batch 2: epoch 1 (iterations 0-1) runs the teacher, epoch 2 (2-3) reads the cache.
    assert calls == [2, 2]
    cache = trainer.model.cache
    assert (cache.misses, cache.hits, len(cache)) == (4, 4, 4)
    if directory:  # one folder per teacher identity, four entries in it
        (folder,) = os.listdir(cache_dir)
        assert (
            len([f for f in os.listdir(os.path.join(cache_dir, folder)) if f.endswith(".pt")]) == 4
        )
    # Cached taps are the teacher's features in fp16, with W(i) stored beside them.
    from sard.engine.builders import build_mapper
    from sard.models.base import encode
    from sard.distill.teacher_cache import image_key

    sample = build_mapper(cfg, is_train=True)(dict(trainer.records[0]))
    x = sample["image"][None]
    entry = cache.get([image_key(x[0], sample["input_hw"])])[0]
    assert entry is not None and entry["image_embedding"].dtype == torch.float16
    with torch.no_grad():
        fresh = encode(teacher, x, [tuple(sample["input_hw"])])["image_embedding"][0]
    torch.testing.assert_close(entry["image_embedding"].float(), fresh, rtol=1e-2, atol=1e-3)
    assert torch.allclose(entry["structure_weight"].float().sum(), torch.tensor(1.0), atol=1e-2)


SAM_METHODS = ["none", "uniform", "kd", "skd", "cwd", "mgd"]
SEMANTIC_METHODS = ["kd", "cwd", "dkd", "reviewkd", "mgd"]


@pytest.mark.parametrize(
    "kind,method", [("sam", m) for m in SAM_METHODS] + [("m2f", m) for m in SEMANTIC_METHODS]
)
def test_every_method_trains(kind, method, tiny_synth, tmp_path):
    opts = ["MODEL.SARD.METHOD", method, "DATASETS.TEST", "()"]
    if method == "reviewkd":
        opts += ["MODEL.SARD.REVIEWKD.TAPS", "['stage2', 'stage3', 'stage4']"]
    trainer = Trainer(tiny_cfg(kind, str(tmp_path), *opts))
    if method == "none":
        assert trainer.model.teacher is None
    losses = trainer.run_step(trainer.model, next(iter(train_stream(trainer))), 0)
    distill = {k for k in losses if not k.startswith(("loss_mask", "loss_iou", "loss_m2f"))}
    expected = set() if method == "none" else DISTILL_LOSS_KEYS[method]
    assert distill == expected
    assert all(v == v and abs(v) < 1e6 for v in losses.values())


@pytest.mark.parametrize("kind", ["sam", "m2f", "vit"])
def test_a_teacher_trained_here_becomes_the_teacher(kind, tiny_synth, tmp_path):
    """MODEL.TEACHER.WEIGHTS accepts this trainer's own checkpoint (its student is taken)."""
    base = tiny_cfg(kind, str(tmp_path / "teacher"))
    # Train the teacher's architecture as a student, with no distillation.
    opts = ["MODEL.SARD.METHOD", "none", "DATASETS.TEST", "()"]
    opts += ["MODEL.STUDENT.FAMILY", base.MODEL.TEACHER.FAMILY]
    opts += ["MODEL.STUDENT.SIZE", base.MODEL.TEACHER.SIZE]
    first = Trainer(tiny_cfg(kind, str(tmp_path / "teacher"), *opts))
    first.train()
    ckpt = str(tmp_path / "teacher" / "model_final.pth")
    second = Trainer(tiny_cfg(kind, str(tmp_path / "student"), "MODEL.TEACHER.WEIGHTS", ckpt))
    for k, v in first.model.student.state_dict().items():
        assert torch.equal(second.model.teacher.module.state_dict()[k], v), k


def test_mask2former_teacher_from_a_save_pretrained_folder(tiny_synth, tmp_path):
    from sard.models import build_model

    teacher = build_model("mask2former", size="tiny", image_size=(64, 64), num_classes=3)
    teacher.save_pretrained(str(tmp_path / "m2f_teacher"))
    cfg = tiny_cfg(
        "m2f", str(tmp_path / "run"), "MODEL.TEACHER.WEIGHTS", str(tmp_path / "m2f_teacher")
    )
    trainer = Trainer(cfg)
    for k, v in teacher.state_dict().items():
        assert torch.equal(trainer.model.teacher.module.state_dict()[k], v), k


def test_resume_takes_the_iteration_from_output_dir_not_from_model_weights(tiny_synth, tmp_path):
    """--resume in a new folder with MODEL.WEIGHTS = another run's final checkpoint starts at
    iteration 0 (it used to take that run's iteration and train nothing)."""
    first = Trainer(tiny_cfg("sam", str(tmp_path / "a"), "DATASETS.TEST", "()"))
    first.train()
    weights = str(tmp_path / "a" / "model_final.pth")
    second = Trainer(
        tiny_cfg("sam", str(tmp_path / "b"), "DATASETS.TEST", "()", "MODEL.WEIGHTS", weights)
    )
    second.resume_or_load(resume=True)
    assert second.start_iter == 0
    for k, v in first.model.student.state_dict().items():
        assert torch.equal(second.model.student.state_dict()[k], v), k
    second.train()
    lines = [json.loads(x) for x in open(tmp_path / "b" / "metrics.json")]
    assert [x["iteration"] for x in lines if "total_loss" in x] == [0, 1]


def test_teacher_cache_under_bf16_autocast_on_the_cpu(tiny_synth, tmp_path):
    """The warm epoch reads fp16 entries inside autocast (it crashed in torch.stack)."""
    opts = ["MODEL.SARD.CACHE.ENABLED", "True", "INPUT.RANDOM_FLIP", "none"]
    opts += ["SOLVER.AMP.ENABLED", "True", "SOLVER.MAX_ITER", "4", "DATASETS.TEST", "()"]
    trainer = Trainer(tiny_cfg("sam", str(tmp_path), *opts))
    assert trainer.precision.enabled and trainer.precision.dtype == torch.bfloat16
    trainer.train()
    assert trainer.model.cache.hits == 4


@pytest.mark.parametrize("kind", ["m2f", "vit"])
def test_semantic_evaluation_at_another_input_size(kind, tiny_synth, tmp_path):
    """64 px images trained at 96 px: predictions come back at 64 px and are compared with
    the labels at 64 px (the evaluator used to take the 96 px training labels and fail)."""
    trainer = Trainer(tiny_cfg(kind, str(tmp_path), "INPUT.IMAGE_SIZE", "(96, 96)"))
    results = trainer.train()
    (task,) = results.values()
    assert 0.0 <= task["sem_seg"]["mIoU"] <= 100.0

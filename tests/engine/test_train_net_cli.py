"""tools/train_net.py as users run it: the README's command, DDP over gloo, the detectron2 path."""

from __future__ import annotations

import os
import subprocess

import pytest
import torch

from testkit import SIZE_OPTS, run_train_net

TINY_SAM = os.path.join("configs", "tiny", "sam_tiny_to_efficientsam_tiny.yaml")


def train_tiny_sam(
    root: str, out: str, *args: str, engine: str = "sard"
) -> subprocess.CompletedProcess:
    """The tiny SAM config at 64 px into ``out``, the built-in dataset names found under ``root``."""
    args = ("--config-file", TINY_SAM, *args, "OUTPUT_DIR", out, *SIZE_OPTS)
    return run_train_net(*args, engine=engine, env={"DETECTRON2_DATASETS": root})


def test_ddp_two_processes_match_one_process(tiny_synth, tmp_path):
    # L_DA draws its noise per process, so it is switched off to compare the rest exactly.
    common = [
        "SOLVER.IMS_PER_BATCH",
        "2",
        "SOLVER.MAX_ITER",
        "2",
        "MODEL.SARD.LAMBDA_D",
        "0.0",
        "DATASETS.TEST",
        "()",
        "SEED",
        "3",
    ]
    one = train_tiny_sam(tiny_synth, str(tmp_path / "one"), "--num-gpus", "1", *common)
    assert one.returncode == 0, one.stderr[-3000:]
    two = train_tiny_sam(tiny_synth, str(tmp_path / "two"), "--num-gpus", "2", *common)
    assert two.returncode == 0, two.stderr[-3000:]
    a = torch.load(tmp_path / "one" / "model_final.pth", weights_only=True)["model"]
    b = torch.load(tmp_path / "two" / "model_final.pth", weights_only=True)["model"]
    assert a.keys() == b.keys()
    # Stated tolerance: 0.2 x one AdamW step (lr 5e-4 here). Gloo sums gradients in another
    # order, and Adam's normalised update m / (sqrt(v) + eps) magnifies that on near-zero
    # gradients; a wrong batch split or unsynchronised gradients move weights by whole steps.
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-4)
        else:
            assert torch.equal(a[k], b[k]), k


def test_readme_style_run_trains_evaluates_and_writes_outputs(tiny_synth, tmp_path):
    out = tmp_path / "run"
    res = train_tiny_sam(tiny_synth, str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    for name in ("config.yaml", "log.txt", "metrics.json", "model_final.pth", "last_checkpoint"):
        assert (out / name).is_file(), name
    assert "bIoU" in res.stdout + res.stderr
    # --eval-only on the result reproduces the evaluation without training.
    again = train_tiny_sam(
        tiny_synth,
        str(tmp_path / "eval"),
        "--eval-only",
        "MODEL.WEIGHTS",
        str(out / "model_final.pth"),
    )
    assert again.returncode == 0, again.stderr[-3000:]


def test_missing_teacher_weights_fail_before_training(tiny_synth, tmp_path):
    res = train_tiny_sam(tiny_synth, str(tmp_path), "MODEL.TEACHER.WEIGHTS", "weights/nope.pth")
    assert res.returncode != 0
    assert "MODEL.TEACHER.WEIGHTS" in res.stderr and "weights/nope.pth" in res.stderr
    assert not (tmp_path / "metrics.json").exists()


def test_detectron2_engine_runs_two_iterations(tiny_synth, tmp_path):
    pytest.importorskip("detectron2.engine", reason="detectron2 is not installed")
    res = train_tiny_sam(tiny_synth, str(tmp_path), "SOLVER.MAX_ITER", "2", engine="detectron2")
    assert res.returncode == 0, res.stderr[-4000:]
    assert (tmp_path / "model_final.pth").is_file()
    ckpt = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=False)
    assert not [k for k in ckpt["model"] if k.startswith("teacher.")]


def test_detectron2_engine_runs_two_processes_on_cpus_with_gloo(tiny_synth, tmp_path):
    """detectron2's create_ddp_model passes device ids a CPU module refuses; ours does not."""
    pytest.importorskip("detectron2.engine", reason="detectron2 is not installed")
    args = ["--num-gpus", "2", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2"]
    res = train_tiny_sam(
        tiny_synth, str(tmp_path), *args, "DATASETS.TEST", "()", engine="detectron2"
    )
    assert res.returncode == 0, res.stderr[-4000:]
    assert (tmp_path / "model_final.pth").is_file()

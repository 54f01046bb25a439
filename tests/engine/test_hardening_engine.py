"""Hardening of training (the trainer's share of the catalogue): bad configs and weights give one
line and write nothing; kills, full disks and divergence never lose a run.

Config and weights cases run tools/train_net.py in-process (through ``run_tool``); the fault
cases run it in a subprocess that is killed with SIGKILL, then resumed with ``--resume``, and
must end with the same final weights as an uninterrupted run.
"""

from __future__ import annotations

import glob
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from testkit import REPO, tiny_synth_opts

TINY_SAM = os.path.join("configs", "tiny", "sam_tiny_to_efficientsam_tiny.yaml")


@pytest.fixture(scope="module")
def train_net(load_script):
    return load_script("tools/train_net.py")


def _one_line_error(train_net, capfd, argv):
    from sard.user_errors import run_tool

    status = run_tool(train_net.run, argv)
    # capfd: with detectron2 installed the detectron2 script runs as a child process. Warnings
    # (random initialisation, ...) may come before; the error itself is the last line.
    err = capfd.readouterr().err.strip()
    assert status == 2, err
    assert "Traceback" not in err, err
    last = err.splitlines()[-1] if err else ""
    assert last.startswith("error: "), err
    return last


@pytest.mark.parametrize(
    "key,value,needle",
    [
        ("SOLVER.CHECKPOINT_PERIOD", "0", "SOLVER.CHECKPOINT_PERIOD=0"),
        ("SOLVER.IMS_PER_BATCH", "0", "SOLVER.IMS_PER_BATCH=0"),
        ("SOLVER.MAX_ITER", "-5", "SOLVER.MAX_ITER=-5"),
        ("SOLVER.LOG_PERIOD", "0", "SOLVER.LOG_PERIOD=0"),
        ("SOLVER.BASE_LR", "nan", "SOLVER.BASE_LR"),
        ("SOLVER.BASE_LR", "-0.1", "SOLVER.BASE_LR=-0.1"),
        ("INPUT.IMAGE_SIZE", "(-64, 64)", "INPUT.IMAGE_SIZE"),
        ("INPUT.IMAGE_SIZE", "(64,)", "INPUT.IMAGE_SIZE"),
        ("INPUT.PROMPT.MAX_PROMPTS", "0", "INPUT.PROMPT.MAX_PROMPTS=0"),
        ("TEST.EVAL_PERIOD", "-1", "TEST.EVAL_PERIOD=-1"),
        ("DATALOADER.NUM_WORKERS", "-2", "DATALOADER.NUM_WORKERS=-2"),
        ("SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "'sideways'", "CLIP_TYPE"),
        ("MODEL.SARD.METHOD", "magic", "MODEL.SARD.METHOD='magic'"),
    ],
)
def test_bad_config_values_are_one_line_and_write_nothing(
    train_net, capfd, tiny_synth, tmp_path, key, value, needle
):
    out = tmp_path / "out"
    argv = ["--config-file", TINY_SAM, *tiny_synth_opts(tiny_synth, out), key, value]
    err = _one_line_error(train_net, capfd, argv)
    assert needle in err
    assert not out.exists()


def test_yaml_whose_top_level_is_a_list(train_net, capfd, tmp_path):
    bad = tmp_path / "list.yaml"
    bad.write_text("- MODEL\n- SOLVER\n")
    err = _one_line_error(train_net, capfd, ["--config-file", str(bad)])
    assert "list.yaml" in err and "top level must be a mapping" in err


def test_base_that_includes_itself_and_a_longer_cycle(train_net, capfd, tmp_path):
    selfish = tmp_path / "self.yaml"
    selfish.write_text("_BASE_: self.yaml\nSEED: 1\n")
    err = _one_line_error(train_net, capfd, ["--config-file", str(selfish)])
    assert "loops back on itself" in err and "self.yaml -> self.yaml" in err
    (tmp_path / "a.yaml").write_text("_BASE_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_BASE_: a.yaml\n")
    err = _one_line_error(train_net, capfd, ["--config-file", str(tmp_path / "a.yaml")])
    assert "a.yaml -> b.yaml -> a.yaml" in err


def test_missing_base_and_broken_yaml(train_net, capfd, tmp_path):
    orphan = tmp_path / "orphan.yaml"
    orphan.write_text("_BASE_: gone.yaml\n")
    err = _one_line_error(train_net, capfd, ["--config-file", str(orphan)])
    assert "gone.yaml" in err and "orphan.yaml" in err
    broken = tmp_path / "broken.yaml"
    broken.write_text("SOLVER: [unclosed\n")
    err = _one_line_error(train_net, capfd, ["--config-file", str(broken)])
    assert "broken.yaml is not valid YAML" in err


@pytest.mark.parametrize(
    "url", ["http://example.com/model_final.pth", "s3://bucket/w.pth", "detectron2://x.pkl"]
)
def test_model_weights_url_is_refused_before_any_download(
    train_net, capfd, tiny_synth, tmp_path, monkeypatch, url
):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # where iopath would cache a download
    out = tmp_path / "out"
    argv = ["--config-file", TINY_SAM, *tiny_synth_opts(tiny_synth, out), "MODEL.WEIGHTS", url]
    err = _one_line_error(train_net, capfd, argv)
    assert "MODEL.WEIGHTS" in err and "never downloads" in err
    assert not (tmp_path / "home").exists() and not out.exists()


def _write_bad_checkpoint(path, kind, good=None):
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random bytes":
        path.write_bytes(random.Random(0).randbytes(4096))
    elif kind == "truncated":
        data = open(good, "rb").read()
        path.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def finished_run(tiny_synth, tmp_path_factory, load_script):
    """A finished 2-iteration tiny SAM run (model_final.pth) and a Mask2Former one."""
    from sard.user_errors import run_tool

    train_net = load_script("tools/train_net.py")
    root = tmp_path_factory.mktemp("finished")
    runs = {}
    for kind, config in (
        ("sam", TINY_SAM),
        ("m2f", os.path.join("configs", "tiny", "m2f_tiny.yaml")),
    ):
        out = root / kind
        argv = ["--config-file", os.path.join(REPO, config), "OUTPUT_DIR", str(out)]
        argv += ["INPUT.IMAGE_SIZE", "(64, 64)", "SOLVER.MAX_ITER", "2"]
        train = os.path.join(tiny_synth, "rockfrag_synth", "train.json")
        argv += ["DATASETS.TRAIN", f"('{train}',)", "DATASETS.TEST", "()"]
        assert run_tool(train_net.run, argv) == 0
        runs[kind] = out / "model_final.pth"
    return runs


@pytest.mark.parametrize("kind", ["empty", "random bytes", "truncated"])
def test_broken_model_weights_are_one_line(
    train_net, capfd, tiny_synth, tmp_path, finished_run, kind
):
    bad = tmp_path / "bad.pth"
    _write_bad_checkpoint(bad, kind, finished_run["sam"])
    for mode in ([], ["--eval-only"]):
        argv = [*mode, "--config-file", TINY_SAM, *tiny_synth_opts(tiny_synth, tmp_path / "o")]
        err = _one_line_error(train_net, capfd, [*argv, "MODEL.WEIGHTS", str(bad)])
        assert str(bad) in err
        assert "arbitrary Python code" not in err  # random bytes are not a code pickle


def test_a_checkpoint_of_another_family_is_refused_everywhere(
    train_net, capfd, tiny_synth, tmp_path, finished_run
):
    """A Mask2Former training checkpoint given to the SAM config: refused by training, by
    --eval-only (which used to report metrics of a random model) and by --resume."""
    foreign = str(finished_run["m2f"])
    base = ["--config-file", TINY_SAM, *tiny_synth_opts(tiny_synth, tmp_path / "o")]
    for mode in ([], ["--eval-only"]):
        err = _one_line_error(train_net, capfd, [*mode, *base, "MODEL.WEIGHTS", foreign])
        assert "does not fit this model" in err and "missing keys" in err
        assert "unexpected keys" in err and "student." in err
    resume_dir = tmp_path / "resume"
    resume_dir.mkdir()
    torch.save(torch.load(foreign, weights_only=True), resume_dir / "model_0000001.pth")
    (resume_dir / "last_checkpoint").write_text("model_0000001.pth")
    argv = ["--resume", "--config-file", TINY_SAM, *tiny_synth_opts(tiny_synth, resume_dir)]
    err = _one_line_error(train_net, capfd, argv)
    assert "model_0000001.pth does not fit this model" in err


def test_a_bare_student_state_dict_is_accepted_as_model_weights(
    train_net, capfd, tiny_synth, tmp_path, finished_run
):
    from sard.distill import student_state_dict
    from sard.user_errors import run_tool

    bare = tmp_path / "student.pth"
    torch.save(student_state_dict(torch.load(finished_run["sam"], weights_only=True)), bare)
    argv = ["--eval-only", "--config-file", TINY_SAM, *tiny_synth_opts(tiny_synth, tmp_path / "o")]
    assert run_tool(train_net.run, [*argv, "MODEL.WEIGHTS", str(bare)]) == 0


def test_orphaned_temporary_checkpoints_are_removed(tiny_synth, tmp_path):
    from sard.config import load_config
    from sard.engine import Trainer

    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = out / f"model_0000001.pth.tmp{dead.pid}"
    orphan.write_bytes(b"half a checkpoint")
    Trainer(load_config(os.path.join(REPO, TINY_SAM), tiny_synth_opts(tiny_synth, out)))
    assert not orphan.exists()


# ---------------------------------------------------------------------------- faults

KILLER = """
import os, runpy, signal, sys
target, nth = os.environ["KILL_AT"], int(os.environ["KILL_NTH"])
import sard.atomic_files as atomic_files
import sard.engine.checkpoint as checkpoint
real, seen = atomic_files.atomic_write, [0]

def killing(path, write):
    if os.path.basename(path) == target:
        seen[0] += 1
        if seen[0] == nth:
            with open(f"{path}.tmp{os.getpid()}", "wb") as f:
                f.write(b"the first bytes")  # what a kill in the middle of a save leaves
            os.kill(os.getpid(), signal.SIGKILL)
    return real(path, write)

# checkpoint.py binds the name at import; metrics.py looks it up in atomic_files when it writes
atomic_files.atomic_write = checkpoint.atomic_write = killing
sys.argv = ["tools/train_net.py"] + sys.argv[1:]
runpy.run_path("tools/train_net.py", run_name="__main__")
"""


def _fault_cmd(tiny_synth, out, *extra):
    # The built-in engine: the fault scripts patch its save in-process, and with detectron2
    # installed tools/train_net.py would hand over to another process (both engines save
    # through the same SardCheckpointMixin).
    return [
        "--engine",
        "sard",
        "--config-file",
        TINY_SAM,
        *tiny_synth_opts(tiny_synth, out),
        "SOLVER.MAX_ITER",
        "4",
        "SOLVER.CHECKPOINT_PERIOD",
        "2",
        "TEST.MAX_IMAGES",
        "1",
        "SEED",
        "7",
        *extra,
    ]


def _run(args, env=None, script="tools/train_net.py"):
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run(
        [sys.executable, script, *args], cwd=REPO, env=env, capture_output=True, text=True
    )


def _final_weights(out):
    return torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="module")
def uninterrupted(tiny_synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    res = _run(_fault_cmd(tiny_synth, out))
    assert res.returncode == 0, res.stderr[-3000:]
    return _final_weights(out)


def _assert_finished_like(out, reference):
    final = _final_weights(out)
    assert final.keys() == reference.keys()
    for k in reference:
        assert torch.equal(final[k], reference[k]), k
    assert not glob.glob(str(out / "*.tmp*")), os.listdir(out)
    iterations = [json.loads(x)["iteration"] for x in open(out / "metrics.json")]
    losses = [json.loads(x)["iteration"] for x in open(out / "metrics.json") if "total_loss" in x]
    assert losses == sorted(set(losses)) == [0, 1, 2, 3], iterations
    assert glob.glob(str(out / "inference" / "*" / "sard_instances.json"))


@pytest.mark.parametrize(
    "target,nth",
    [
        ("model_0000001.pth", 1),  # the first periodic save
        ("model_0000003.pth", 1),  # the last periodic save
        ("model_final.pth", 1),  # the final save: resume must still write it and evaluate
        ("last_checkpoint", 3),  # the tag written after model_final.pth
        ("metrics.json", 1),  # rewriting metrics.json (cleaned on a resume)
    ],
)
def test_kill_during_each_kind_of_save_then_resume(
    tiny_synth, tmp_path, uninterrupted, target, nth
):
    out = tmp_path / "run"
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    first_args = _fault_cmd(tiny_synth, out)
    if target == "metrics.json":
        # metrics.json is rewritten when a resumed run cleans it: kill a resume doing that.
        res = _run(
            first_args, env={"KILL_AT": "model_0000003.pth", "KILL_NTH": "1"}, script=str(killer)
        )
        assert res.returncode == -signal.SIGKILL
        first_args = ["--resume", *first_args]
    res = _run(first_args, env={"KILL_AT": target, "KILL_NTH": str(nth)}, script=str(killer))
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    res = _run(["--resume", *_fault_cmd(tiny_synth, out)])
    assert res.returncode == 0, res.stderr[-3000:]
    _assert_finished_like(out, uninterrupted)


def test_kill_at_random_moments_then_resume(tiny_synth, tmp_path, uninterrupted):
    out = tmp_path / "run"
    rng = random.Random(2026)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = [sys.executable, "tools/train_net.py", *_fault_cmd(tiny_synth, out)]
    for _ in range(3):
        proc = subprocess.Popen(
            args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(rng.uniform(4.0, 14.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        args = [sys.executable, "tools/train_net.py", "--resume", *_fault_cmd(tiny_synth, out)]
    res = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    _assert_finished_like(out, uninterrupted)


DISK_FULL = """
import os, resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead
limit = int(os.environ["FILE_LIMIT"])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.argv = ["tools/train_net.py"] + sys.argv[1:]
runpy.run_path("tools/train_net.py", run_name="__main__")
"""


def test_a_full_disk_stops_with_one_line_and_resume_finishes(tiny_synth, tmp_path, uninterrupted):
    """Files can hold 256 kB (log and metrics fit, no checkpoint does): the first save fails
    with a real EFBIG from the kernel; the message is one line and nothing is left behind."""
    out = tmp_path / "run"
    script = tmp_path / "disk_full.py"
    script.write_text(DISK_FULL)
    res = _run(_fault_cmd(tiny_synth, out), env={"FILE_LIMIT": str(256 * 1024)}, script=str(script))
    err = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr[-3000:]
    assert err[-1].startswith("error: saving") and "left intact" in err[-1], err[-3:]
    assert "Traceback" not in res.stderr
    assert not glob.glob(str(out / "*.pth*")) and not (out / "last_checkpoint").exists()
    res = _run(["--resume", *_fault_cmd(tiny_synth, out)])
    assert res.returncode == 0, res.stderr[-3000:]
    _assert_finished_like(out, uninterrupted)


def test_a_read_only_output_folder_is_refused_in_one_line(tiny_synth, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; covered by the full-disk case")
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    res = _run(_fault_cmd(tiny_synth, out))
    assert res.returncode == 2 and "Traceback" not in res.stderr


@pytest.mark.parametrize("where", ["a file", "inside a file"])
def test_an_output_folder_that_cannot_be_a_folder_is_refused_in_one_line(
    tiny_synth, tmp_path, where
):
    """OUTPUT_DIR naming a file (or a path through one) fails in one line naming the path, for
    root too (unlike read-only folders)."""
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    out = blocker if where == "a file" else blocker / "run"
    res = _run(_fault_cmd(tiny_synth, out))
    err = res.stderr.strip().splitlines()
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert err[-1].startswith("error:") and "blocker" in err[-1], err[-3:]

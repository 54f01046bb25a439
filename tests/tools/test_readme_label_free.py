"""The README's label-free training command runs as written after the quickstart.

Its ``tools/train_net.py`` block is read from the "How far do images alone get me?" section and
run unchanged in a folder laid out as the quickstart leaves it: ``configs/`` and ``tools/``,
``output/quickstart/teacher/model_final.pth`` (here a random teacher of the quickstart's
architecture, in the training-checkpoint format) and ``output/quickstart/data/synth_128px``
(4 train and 2 test images with their COCO files). The study commands of the section are run
at a minuscule size by tests/tools/test_label_free_study.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings

import torch
from testkit import REPO


def section_blocks():
    """[(language, code)] of the fenced blocks of the section."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    start = text.index("\n### How far do images alone get me?")
    end = text.index("\n## ", start + 1)
    return re.findall(r"```(\w+)\n(.*?)```", text[start:end], flags=re.S)


def test_the_label_free_command_runs_as_written(tmp_path):
    from sard.config import load_config
    from sard.data.synthetic import SynthConfig
    from sard.data.synthetic_dataset import generate_rockfrag_synth
    from sard.modeling import build_member

    (command,) = [c for lang, c in section_blocks() if lang == "bash" and "train_net.py" in c]
    root = tmp_path / "checkout"
    root.mkdir()
    for name in ("configs", "tools"):
        os.symlink(os.path.join(REPO, name), root / name)
    quick = root / "output" / "quickstart"
    generate_rockfrag_synth(
        str(quick / "data" / "synth_128px"),
        num_images={"train": 4, "test": 2},
        config=SynthConfig(image_size=128),
        seed=0,
        preview=False,
        progress=False,
    )
    cfg = load_config(os.path.join(REPO, "configs", "tiny", "label_free_tiny.yaml"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "randomly initialised": intended here
        teacher = build_member(cfg, cfg.MODEL.TEACHER, "teacher")
    (quick / "teacher").mkdir()
    state = {f"student.{k}": v for k, v in teacher.state_dict().items()}
    torch.save({"model": state, "iteration": 359}, quick / "teacher" / "model_final.pth")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "python"  # a script, not a symlink: a venv's python must keep its path
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    env = dict(
        os.environ,
        PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=REPO,
        OMP_NUM_THREADS="1",
    )
    res = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", command],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, f"{command}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    out = root / "output" / "label_free"
    log = (out / "log.txt").read_text()
    assert "0 labelled + 4 unlabeled images" in log
    assert "training contract: 20 iterations (10 epochs x 4 images / batch 2)" in log
    assert (out / "model_final.pth").is_file()
    assert list((out / "inference").glob("*/sard_instances.json"))

"""Helpers shared by test files of several areas: the checkout's paths, the tiny argument lists
the tests run tools and configs with, and the runs and checks more than one file repeats.

Importable from every test folder as ``from testkit import ...``: the test root holds the top
``conftest.py``, so pytest's default (prepend) import mode puts this folder on ``sys.path``.
Fixtures live in ``conftest.py``; plain values and functions live here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sard.data.masks import encode_mask

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_SAM = os.path.join(REPO, "configs", "tiny", "sam_tiny_to_efficientsam_tiny.yaml")
TINY_CONFIGS = {
    "sam": TINY_SAM,
    "m2f": os.path.join(REPO, "configs", "tiny", "m2f_tiny.yaml"),
    "vit": os.path.join(REPO, "configs", "tiny", "vit_tiny.yaml"),
    "m2f_resnet": os.path.join(REPO, "configs", "tiny", "m2f_tiny_to_resnet.yaml"),
}
SIZE_OPTS = ["INPUT.IMAGE_SIZE", "(64, 64)"]

# The loss terms each distillation method logs, beside the task loss ("none" logs none).
DISTILL_LOSS_KEYS = {
    "sard": {"loss_fc", "loss_da"},
    "uniform": {"loss_fc", "loss_da"},
    "cwd": {"loss_cwd"},
    "mgd": {"loss_mgd"},
    "kd": {"loss_kd"},
    "skd": {"loss_skd"},
    "dkd": {"loss_dkd_tckd", "loss_dkd_nckd"},
    "reviewkd": {"loss_reviewkd"},
}

# The smallest teacher and latency settings of the study tools (quickstart, compare_methods).
TINY_TEACHER_ARGS = [
    *("--prompts", "4"),
    *("--teacher-embed-dim", "64", "--teacher-depth", "2", "--teacher-heads", "2"),
    *("--latency-prompts", "2", "--latency-reps", "1"),
]


def detectron2_available() -> bool:
    from sard.config import detectron2_available as available

    return available()


# Both training engines; detectron2's is skipped where detectron2 is not installed.
ENGINES = [
    "sard",
    pytest.param(
        "detectron2",
        marks=pytest.mark.skipif(not detectron2_available(), reason="detectron2 is not installed"),
    ),
]


def read_json(path: str | os.PathLike) -> object:
    with open(path) as f:
        return json.load(f)


def tiny_cfg(kind: str, out: str, *opts: str):
    """The tiny config of ``kind`` (a key of TINY_CONFIGS) at 64 px on the session's tiny
    synthetic set (the ``tiny_synth`` fixture registers test_synth_*), writing to ``out``."""
    from sard.config import load_config

    sem = "_sem" if kind != "sam" else ""
    return load_config(
        TINY_CONFIGS[kind],
        [
            *("OUTPUT_DIR", out),
            *("DATASETS.TRAIN", f"('test_synth{sem}_train',)"),
            *("DATASETS.TEST", f"('test_synth{sem}_val',)"),
            *SIZE_OPTS,
            *opts,
        ],
    )


def train_stream(trainer):
    """The trainer's resumable training batches (seed 0), built as the trainer builds them."""
    from sard.engine.builders import build_mapper
    from sard.engine.data import TrainStream

    mapper = build_mapper(trainer.cfg, is_train=True)
    return TrainStream(trainer.records, mapper, trainer.cfg.SOLVER.IMS_PER_BATCH, seed=0)


def tiny_synth_opts(tiny_synth: str, out: str | os.PathLike) -> list[str]:
    """Config options training the tiny synthetic set's COCO files (by path, so a subprocess
    needs no registration) at 64 px into ``out``."""
    data = os.path.join(tiny_synth, "rockfrag_synth")
    return [
        *("OUTPUT_DIR", str(out)),
        *SIZE_OPTS,
        *("DATASETS.TRAIN", f"('{data}/train.json',)"),
        *("DATASETS.TEST", f"('{data}/val.json',)"),
    ]


def cpu_can_flush_subnormals() -> bool:
    """Whether ``torch.set_flush_denormal`` works on this CPU; leaves this process's setting
    off (the IEEE default)."""
    supported = bool(torch.set_flush_denormal(True))
    torch.set_flush_denormal(False)
    return supported


def run_train_net(
    *args: str, engine: str = "sard", env: dict | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """``python tools/train_net.py --engine ENGINE ARGS...`` from the checkout, one thread,
    with ``env`` added to this process's environment; output captured as text. The script
    imports this checkout's ``sard`` (first on PYTHONPATH), not another installed copy."""
    path = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, **(env or {})}
    cmd = [sys.executable, "tools/train_net.py", "--engine", engine, *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def assert_help_explains_every_option(tool, capsys) -> None:
    """``tool.main(["--help"])`` exits 0 and prints every option of ``tool.argument_parser()``,
    each with a help text of more than ten characters."""
    name = getattr(tool, "__name__", tool)
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for action in tool.argument_parser()._actions:
        assert action.help and len(action.help) > 10, (name, action.dest)
        for option in action.option_strings:
            assert option in text, (name, option)


def readme_blocks(heading: str) -> list[tuple[str, str]]:
    """[(language, code)] of the fenced blocks of the README section that starts at the line
    ``heading`` and ends at the next level-2 heading."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    start = text.index(f"\n{heading}")
    end = text.index("\n## ", start + 1)
    return re.findall(r"```(\w+)\n(.*?)```", text[start:end], flags=re.S)


def checkout_like(root: Path) -> dict:
    """Lays ``root`` out as a user's checkout for README commands (``configs/``, ``tools/`` and
    ``weights/`` linked, ``python`` on PATH) and returns the environment to run them with."""
    for name in ("configs", "tools", "weights"):
        os.symlink(os.path.join(REPO, name), root / name)
    bin_dir = root / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "python"  # a script, not a symlink: a venv's python must keep its path
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    return dict(
        os.environ,
        PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=REPO,
        OMP_NUM_THREADS="1",
    )


def paint_rectangles(image: np.ndarray, rects, colour) -> list[dict]:
    """Paints each rectangle (y0, x0, h, w) of ``rects`` into ``image`` (H, W, 3) in
    ``colour(k)`` and returns their detectron2-style annotations (XYWH_ABS boxes, RLE masks)."""
    height, width = image.shape[:2]
    anns = []
    for k, (y0, x0, h, w) in enumerate(rects):
        mask = np.zeros((height, width), bool)
        mask[y0 : y0 + h, x0 : x0 + w] = True
        image[mask] = colour(k)
        anns.append(
            {
                "bbox": [x0, y0, w, h],
                "bbox_mode": 1,
                "segmentation": encode_mask(mask),
                "category_id": 0,
                "iscrowd": 0,
                "area": float(mask.sum()),
            }
        )
    return anns

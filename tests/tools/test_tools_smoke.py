"""Every benchmark script in tools/ runs (at minuscule sizes) and prints its ratios.

These are not timing tests: they only keep the README's benchmark commands working.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from testkit import REPO, TINY_SAM, tiny_synth_opts


def run_tool(*args: str, timeout: int = 300) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res.stdout


def test_bench_structure():
    out = run_tool(
        "tools/bench_structure.py",
        "--batch",
        "1",
        "--channels",
        "8",
        "--size",
        "16",
        "--reps",
        "1",
        "--warmup",
        "0",
        "--radii",
        "3",
        "7",
    )
    for path in ("chunked", "dense"):  # both implementations, every radius, with a ratio
        for radius in (3, 7):
            line = next(row for row in out.splitlines() if f"W(i) {path}, r={radius}" in row)
            assert float(line.split()[-1]) > 0


def test_bench_losses():
    out = run_tool(
        "tools/bench_losses.py",
        "--batch",
        "1",
        "--channels",
        "8",
        "--size",
        "8",
        "--dim",
        "8",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--device",
        "cpu",
    )
    assert "W's moments path: chunked" in out  # the CPU default ...
    rows = ("SARD head step (W computed, dense moments)", "W alone (dense moments)")
    for row in rows:  # ... and the other path, in its own rows, with a ratio to uniform
        line = next(line for line in out.splitlines() if line.startswith(row))
        assert float(line.split()[-1]) > 0
    assert "SARD / uniform head step:" in out


def test_bench_eval():
    out = run_tool(
        "tools/bench_eval.py",
        "--size",
        "64",
        "--instances",
        "10",
        "--images",
        "1",
        "--repeats",
        "1",
    )
    assert "x" in out


def test_benchmark_pairs():
    out = run_tool(
        "tools/benchmark.py",
        "--teacher",
        "sam:tiny",
        "--student",
        "efficient_sam:tiny",
        "--image-size",
        "64",
        "--reps",
        "1",
        "--warmup",
        "0",
        "--device",
        "cpu",
    )
    assert "teacher / student" in out


def test_bench_train():
    out = run_tool(
        "tools/bench_train.py",
        "--image-size",
        "64",
        "--iters",
        "1",
        "--rounds",
        "1",
        "--teacher-embed-dim",
        "32",
        "--teacher-depth",
        "2",
        "--methods",
        "none",
        "uniform",
        "sard",
        timeout=600,
    )
    assert "SARD / uniform" in out and "cache cold / warm" in out


def test_paper_config_without_weights_fails_at_once_naming_the_file():
    """The README's main command, on a machine without SAM-H weights: a clear, early error."""
    res = subprocess.run(
        [
            sys.executable,
            "tools/train_net.py",
            "--config-file",
            "configs/sam_h_to_efficientsam.yaml",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if os.path.isfile(os.path.join(REPO, "weights", "sam_vit_h_4b8939.pth")):
        pytest.skip("real SAM-H weights are present")
    assert res.returncode != 0
    assert "weights/sam_vit_h_4b8939.pth" in res.stderr and "MODEL.TEACHER.WEIGHTS" in res.stderr


def test_visualize_structure_draws_one_png_per_image(tmp_path):
    from PIL import Image

    image = tmp_path / "rocks.png"
    Image.fromarray((np.random.default_rng(0).random((40, 56, 3)) * 255).astype("uint8")).save(
        image
    )
    out = run_tool(
        "tools/visualize_structure.py",
        "--config-file",
        "configs/tiny/sam_tiny_to_efficientsam_tiny.yaml",
        "--input",
        str(image),
        "--out",
        str(tmp_path / "vis"),
        "INPUT.IMAGE_SIZE",
        "(64, 64)",
    )
    png = tmp_path / "vis" / "rocks_structure.png"
    assert png.is_file() and png.stat().st_size > 5000 and "rocks_structure.png" in out


def test_bench_export():
    out = run_tool("tools/bench_export.py", "--prompts", "2", "--repeats", "1", "--warmup", "0")
    assert "ONNX" in out or "onnx" in out


def test_bench_subnormals(tiny_synth, tmp_path):
    out = run_tool(
        "tools/bench_subnormals.py",
        "--config-file",
        TINY_SAM,
        "--iters",
        "1",
        "--rounds",
        "1",
        *tiny_synth_opts(tiny_synth, tmp_path),
    )
    assert "kept / flushed:" in out and "from random initialisation" in out
    assert "steps per mode, one thread" in out  # a mode switch reaches the calling thread only
    for where in ("parameters", "gradients", "optimizer state"):
        assert where in out


def test_count_subnormal_counts_only_float32_subnormals(load_script):
    import torch

    tool = load_script("tools/bench_subnormals.py")
    # Bit patterns, not float literals: with flushing on, 1e-39 would already be stored as 0.
    bits = torch.tensor([0, 1, 0x007FFFFF, -0x7FFFFFFB, 0x00800000, 0x3F800000], dtype=torch.int32)
    x = bits.view(torch.float32)  # 0, three subnormals (-0x7FFFFFFB: sign bit + 5), 2^-126, 1.0
    for flush in (False, True):  # the count must not depend on the CPU's mode
        torch.set_flush_denormal(flush)
        assert tool.count_subnormal([x, x.double(), "not a tensor"]) == 3
    torch.set_flush_denormal(False)
    assert tool.count_subnormal([]) == 0

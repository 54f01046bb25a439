"""tools/gpu_check.py at tiny sizes on the CPU: every step runs and the report holds the figures
a GPU session must put in its note (s/iteration, cache cold vs warm, SARD / uniform ratio)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from testkit import REPO


def test_quick_cpu_run_writes_a_complete_report(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="2")
    cmd = [sys.executable, "tools/gpu_check.py", "--device", "cpu", "--quick", "--iters", "6"]
    res = subprocess.run(
        [*cmd, "--out", str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = (tmp_path / "report.md").read_text()
    for step in ("structure tests", "bench_structure", "bench_losses", "bench_train"):
        assert re.search(rf"\| {step} \| ok \|", report), step
    assert re.search(r"SARD / uniform head step \(bench_losses\): [0-9.]+x", report)
    assert re.search(r"teacher cache cold: [0-9.]+; warm: [0-9.]+", report)
    data = json.loads((tmp_path / "report.json").read_text())
    paper = data["paper"]
    assert paper["iterations"] == 6 and paper["cache"] == {"hits": 8, "misses": 4}
    assert paper["peak_gpu_memory_gib"] is None  # no GPU here


def test_cuda_without_a_gpu_is_one_line(tmp_path):
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    res = subprocess.run(
        [sys.executable, "tools/gpu_check.py", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and res.stderr.strip().startswith("error: --device cuda")

"""tools/bench_segment_everything.py runs (at minuscule sizes) and prints its ratio; not a
timing test, it keeps the README's benchmark command working."""

from __future__ import annotations

import os
import subprocess
import sys

from testkit import REPO


def test_bench_segment_everything_prints_both_models_and_the_ratio():
    args = ["--photo", "96x160", "--image-size", "64", "--tile-overlap", "16"]
    args += ["--points-per-side", "3", "--reps", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(
        [sys.executable, "tools/bench_segment_everything.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    lines = res.stdout.splitlines()
    teacher = next(x for x in lines if x.startswith("efficient_sam:tiny:embed_dim=128"))
    student = next(x for x in lines if x.startswith("efficient_sam:tiny "))
    for row in (teacher, student):
        tiles, masks = int(row.split()[2]), int(row.split()[3])
        assert tiles == 6 and masks == 6 * 9 * 3  # 2 x 3 tiles, 9 points, 3 masks each
        assert float(row.split()[-1]) > 0
    ratio = next(x for x in lines if x.startswith("teacher / student"))
    assert float(ratio.split()[-1].rstrip("x")) > 0

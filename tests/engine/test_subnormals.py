"""Flushing subnormal floats: it changes the arithmetic, reaches every worker thread when done
first, and says so (with the fix) when torch's threads were started before it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from testkit import REPO, cpu_can_flush_subnormals

pytestmark = pytest.mark.skipif(
    not cpu_can_flush_subnormals(), reason="this CPU cannot flush subnormal floats"
)

# A fresh process with two intra-op threads, whatever this machine has; "late" starts torch's
# worker thread (a multi-threaded sum) before flushing, as a model build or data step would;
# "never" does not flush.
_PROBE = """
import logging, sys, torch
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
torch.set_num_threads(2)
if sys.argv[1] == "late":
    torch.ones(1 << 22).sum()
from sard.engine.subnormals import flush_subnormal_floats, unflushed_share
if sys.argv[1] != "never":
    assert flush_subnormal_floats() is True
print("share", unflushed_share())
"""


def _probe(order: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="2")
    res = subprocess.run(
        [sys.executable, "-c", _PROBE, order], env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def test_flush_subnormal_floats_zeroes_subnormal_operands():
    from sard.engine.subnormals import flush_subnormal_floats

    torch.set_flush_denormal(False)  # an in-process trainer of an earlier test may have set it
    tiny = torch.tensor([1e-39], dtype=torch.float32)  # subnormal in float32
    assert (tiny * 1.0).item() != 0.0  # IEEE arithmetic keeps it
    try:
        assert flush_subnormal_floats() is True
        assert (tiny * 1.0).item() == 0.0
        assert (torch.tensor([1e-30]) * 1.0).item() == pytest.approx(1e-30)  # normal: kept
    finally:
        torch.set_flush_denormal(False)


def test_unflushed_share_without_flushing_is_one():
    # In a fresh process: in this one, worker threads started after another test's flush keep
    # flushing whatever the main thread is set back to (the flag is per thread).
    assert "share 1.0" in _probe("never").stdout  # IEEE: every product stays subnormal


def test_flush_first_reaches_every_worker_thread():
    res = _probe("early")
    assert "share 0.0" in res.stdout
    assert "checked on all 2 intra-op threads" in res.stderr
    assert "WARNING" not in res.stderr


def test_flush_after_threads_started_is_partial_and_says_how_to_fix():
    res = _probe("late")
    assert "share 0.5" in res.stdout  # the calling thread flushes, the worker does not
    warning = res.stderr
    assert "WARNING" in warning and "on some threads only: 50 %" in warning
    assert "before any other torch work" in warning and "set_num_threads(1)" in warning


def test_first_call_of_a_process_sets_the_flag_without_logging(caplog):
    from sard.engine.subnormals import flush_subnormal_floats

    torch.set_flush_denormal(False)
    tiny = torch.tensor([1e-39], dtype=torch.float32)
    assert (tiny * 1.0).item() != 0.0
    try:
        with caplog.at_level("DEBUG", logger="sard"):
            assert flush_subnormal_floats(check=False) is True
        assert (tiny * 1.0).item() == 0.0
        assert caplog.records == []  # logging may not be configured yet: nothing is emitted
    finally:
        torch.set_flush_denormal(False)


def test_study_tools_flush_every_thread_before_torch_work():
    """The study tools build trainers in their own process (evaluation, W statistics): their
    preamble flushes first, so torch's worker threads start flushed."""
    code = (
        "import sys; sys.path.insert(0, 'tools'); import torch; torch.set_num_threads(2)\n"
        "from studies import preamble\n"
        "torch.ones(1 << 22).sum()  # starts the worker thread, after the preamble\n"
        "from sard.engine.subnormals import unflushed_share\n"
        "print('share', unflushed_share())"
    )
    env = dict(os.environ, OMP_NUM_THREADS="2")
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "share 0.0" in res.stdout
    for tool in ("quickstart", "compare_methods", "label_free_study", "structure_weight_stats"):
        with open(os.path.join(REPO, "tools", f"{tool}.py"), encoding="utf-8") as f:
            assert "from studies import preamble" in f.read(), tool

"""The study tools' process pool: a worker does not outlive the study process that started it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from testkit import REPO

# A study process: one pool job that records its pid and would run for two minutes.
STUDY = """
import os, sys, time
sys.path.insert(0, {tools!r})
from studies.study import spawn_pool


def job(path):
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(path + ".tmp", path)
    time.sleep(120)


if __name__ == "__main__":
    pool = spawn_pool(1)
    pool.submit(job, sys.argv[1])
    time.sleep(120)
"""


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_pool_worker_ends_when_its_study_process_is_killed(tmp_path):
    script, pid_file = tmp_path / "study.py", tmp_path / "worker.pid"
    script.write_text(STUDY.format(tools=os.path.join(REPO, "tools")))
    study = subprocess.Popen([sys.executable, str(script), str(pid_file)], cwd=tmp_path)
    worker = None
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists() and time.monotonic() < deadline:
            assert study.poll() is None, "the study process ended before its job started"
            time.sleep(0.2)
        worker = int(pid_file.read_text())
        assert _alive(worker)
        study.send_signal(signal.SIGKILL)  # the parent alone, as a scheduler's time limit does
        study.wait()
        deadline = time.monotonic() + 15
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(worker), "the pool worker outlived its study process"
    finally:
        study.kill()
        if worker and _alive(worker):
            os.kill(worker, signal.SIGKILL)

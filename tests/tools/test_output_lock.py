"""One study process per output folder: a second study writing into a folder in use is refused
with the holder's pid; the lock goes with the process that held it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from studies import output_lock
from studies.study import start_study
from testkit import REPO

# Another study process: claims the folder, says so, then waits to be killed.
HOLDER = """
import sys, time
sys.path.insert(0, {tools!r})
from pathlib import Path
from studies.output_lock import claim_output_folder
claim_output_folder(Path(sys.argv[1]))
print("claimed", flush=True)
time.sleep(120)
"""


def _hold(folder) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER.format(tools=os.path.join(REPO, "tools")), str(folder)],
        stdout=subprocess.PIPE,
        text=True,
    )
    if proc.stdout.readline().strip() != "claimed":
        _end(proc)
        pytest.fail("the holder process did not claim the folder")
    return proc


def _end(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()
    proc.stdout.close()


def test_a_folder_in_use_by_another_study_is_refused_until_it_ends(tmp_path, monkeypatch):
    monkeypatch.setattr(output_lock, "_HELD", {})
    out = tmp_path / "study"
    out.mkdir()
    holder = _hold(out)
    try:
        with pytest.raises(SystemExit) as err:
            start_study(1, str(out))
        message = str(err.value)
        assert str(out) in message and f"pid {holder.pid}" in message
        assert "--out" in message and "study_report" in message
        # Another folder is free meanwhile.
        assert start_study(1, str(tmp_path / "other")) == tmp_path / "other"
    finally:
        _end(holder)
    # A killed holder leaves no stale lock: the kernel released it with the process.
    deadline = time.monotonic() + 10
    while True:
        try:
            assert start_study(1, str(out)) == out
            break
        except SystemExit:
            assert time.monotonic() < deadline, "the lock outlived its process"
            time.sleep(0.1)
    # This process holds it now, and may claim it again (a tool's main() run twice).
    assert start_study(1, str(out)) == out
    # flock belongs to the open file: without the per-process registry, this very process
    # would lock itself out.
    held = output_lock._HELD  # keeps this process's lock open while the registry is emptied
    monkeypatch.setattr(output_lock, "_HELD", {})
    with pytest.raises(output_lock.FolderInUseError):
        output_lock.claim_output_folder(out)
    for handle in held.values():
        handle.close()


def test_a_file_system_without_locks_warns_and_lets_the_study_run(tmp_path, monkeypatch):
    monkeypatch.setattr(output_lock, "_HELD", {})

    def refuse(fd, op):
        raise OSError(37, "No locks available")

    monkeypatch.setattr(output_lock.fcntl, "flock", refuse)
    with pytest.warns(UserWarning, match="no study lock"):
        assert start_study(1, str(tmp_path / "nfs")) == tmp_path / "nfs"

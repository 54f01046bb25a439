"""One study process per output folder: an advisory lock on OUT/.study.lock.

Two calls writing into the same folder at once would train the same run folders twice and
overwrite each other's OUT/results.json. The lock is ``fcntl.flock`` on an open file, so the
kernel releases it when the process ends, however it ends: a crash or ``kill -9`` leaves no
stale lock to clean up (forked children, e.g. data-loader workers, share it and drop it when
they end). The file keeps the holder's pid for the error message. Where ``fcntl``
is missing (Windows) or the file system refuses locks, studies run unlocked (with a warning
for the latter).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import IO, Dict

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".study.lock"

# Locks this process holds, by resolved folder: a second claim of the same folder in the same
# process (a tool's main() called twice, as tests do) reuses it instead of locking itself out,
# since flock locks belong to the open file, not to the process.
_HELD: Dict[Path, IO[str]] = {}


class FolderInUseError(RuntimeError):
    """Another process holds the output folder's study lock."""


def claim_output_folder(folder: Path) -> None:
    """Hold ``folder``'s study lock until this process ends.

    Raises ``FolderInUseError`` naming the folder, the holder's pid and the two ways on (wait
    for it, or write into another folder and merge the folders with tools/study_report.py).
    """
    key = folder.resolve()
    if fcntl is None or key in _HELD:
        return
    handle = open(key / LOCK_NAME, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise FolderInUseError(
            f"{folder} is in use by another study process (pid {holder}); two calls writing "
            "into one folder would train the same runs twice and overwrite its results.json. "
            "Wait for it to end, or give this call another --out and merge the folders with "
            "tools/study_report.py"
        ) from None
    except OSError as e:
        # A file system without locks (some network mounts): the study still runs, unguarded.
        handle.close()
        warnings.warn(f"{folder}: no study lock ({e}); run one study per folder at a time")
        return
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    _HELD[key] = handle

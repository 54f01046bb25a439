"""Atomic file writes: readers (and a resumed run) see the old file or the complete new one.

The contents go to a temporary file beside the target (same filesystem, so the rename is atomic),
which then replaces the target with ``os.replace``; on any error the temporary file is removed
and the target is left as it was.
"""

from __future__ import annotations

import json
import os
from typing import Any, BinaryIO, Callable


def atomic_write(path: str, write: Callable[[BinaryIO], Any], *, durable: bool = True) -> None:
    """Call ``write(file)`` on a binary temporary file beside ``path``, then rename it over
    ``path``. ``durable``: fsync before the rename, so a power cut cannot leave an empty file
    under the new name (checkpoints); caches whose torn entries are recomputed skip it."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_json(path: str, data: Any, *, durable: bool = True, **dump_kwargs: Any) -> None:
    """``json.dump(data, file, **dump_kwargs)`` (UTF-8) written atomically to ``path``."""
    text = json.dumps(data, **dump_kwargs)
    atomic_write(path, lambda f: f.write(text.encode("utf-8")), durable=durable)

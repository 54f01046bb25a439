"""Crash-safe checkpoints on top of fvcore's Checkpointer.

* Atomic: every file is written to a temporary name in the same folder, flushed to disk and
  renamed over the target, so an interrupted or failed save (kill, disk full) leaves the previous
  checkpoint and the ``last_checkpoint`` tag untouched and loadable.
* Safe to load: ``torch.load(weights_only=True)``; every state we save (RNG states included) is made
  of tensors and plain Python values.
"""

from __future__ import annotations

import os
import random
from typing import Any, Dict

import numpy as np
import torch
from fvcore.common.checkpoint import Checkpointer


def _atomic_write(path: str, write) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class AtomicCheckpointer(Checkpointer):
    """fvcore Checkpointer whose saves are atomic and whose loads are weights-only."""

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", path)
        try:
            _atomic_write(path, lambda f: torch.save(data, f))
        except OSError as e:
            raise OSError(
                f"saving {path} failed ({e}); the previous checkpoint was left intact"
            ) from e
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        _atomic_write(path, lambda f: f.write(last_filename_basename.encode()))

    def _load_file(self, f: str) -> Dict[str, Any]:
        return torch.load(f, map_location="cpu", weights_only=True)


def rng_state() -> Dict[str, Any]:
    """Python, NumPy and torch RNG states in a weights-only-loadable form."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Inverse of ``rng_state``."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

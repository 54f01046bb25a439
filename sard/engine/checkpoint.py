"""Crash-safe, local-only checkpoints for both engines (fvcore's and detectron2's checkpointers).

``SardCheckpointMixin`` goes in front of fvcore's ``Checkpointer`` (built-in engine) or
detectron2's ``DetectionCheckpointer`` (detectron2 engine) and changes, for both:

* Saving is atomic: a temporary file in the same folder, flushed and renamed over the target,
  so a kill or a full disk leaves the previous checkpoint and ``last_checkpoint`` intact. Any
  failure says so in one line. Weights that are not finite are never saved.
* Loading reads local files only (nothing is downloaded) with ``torch.load(weights_only=True)``,
  and a truncated, empty or foreign file is named in one line.
* The student must fit exactly: a checkpoint of another family or size is refused with its
  missing and unexpected keys listed (fvcore would load what fits and go on with a random model).
  A bare student state dict is accepted and put under ``student.``. A distillation head that
  does not fit is left at its initialisation with a warning (another method's checkpoint), and a
  model built without a head (evaluation) ignores ``head.*``.
* Orphaned temporary files of dead processes are removed when a checkpointer opens its folder.
* After a non-finite loss at iteration ``it``, ``quarantine_diverged(it)`` renames checkpoints
  whose weights were not followed by a finite loss (saved at ``it - 1`` or later) to
  ``*.diverged`` and returns the last good one, which ``last_checkpoint`` then names.
"""

from __future__ import annotations

import glob
import logging
import os
import random
import re
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from fvcore.common.checkpoint import Checkpointer

from sard.atomic_files import atomic_write
from sard.local_paths import require_local_path
from sard.models.checkpoint import load_checkpoint_file, state_dict_differences
from sard.user_errors import UserError

logger = logging.getLogger(__name__)

STUDENT_PREFIX = "student."
HEAD_PREFIX = "head."
_TMP = re.compile(r"^(?P<target>.+)\.tmp(?P<pid>\d+)$")
_PERIODIC = re.compile(r"^model_(?P<it>\d{7})\.pth$")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint cannot be read or does not fit the model."""


class CheckpointSaveError(UserError, OSError):
    """A checkpoint could not be written; the previous one is intact."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphaned_temporaries(folder: str) -> List[str]:
    """Delete ``*.tmp<pid>`` files in ``folder`` whose writing process is gone; returns them."""
    removed = []
    for path in glob.glob(os.path.join(glob.escape(folder), "*.tmp*")):
        match = _TMP.match(os.path.basename(path))
        if match and int(match["pid"]) != os.getpid() and not _pid_alive(int(match["pid"])):
            try:
                os.remove(path)
                removed.append(path)
            except OSError:
                pass
    if removed:
        logger.info("removed %d unfinished checkpoint file(s): %s", len(removed), removed)
    return removed


def nonfinite_tensors(state: Dict[str, Any]) -> List[str]:
    """Names of floating-point tensors in ``state`` holding NaN or Inf."""
    return [
        k
        for k, v in state.items()
        if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]


def read_checkpoint(path: str) -> Dict[str, Any]:
    """A local checkpoint written by SARD (or a bare state dict), read weights-only.

    Refuses URLs (nothing is downloaded) and turns an empty, truncated or foreign file into one
    ``CheckpointError`` line naming the file.
    """
    require_local_path(path, "MODEL.WEIGHTS")
    if not os.path.isfile(path):
        what = "is a folder, not a checkpoint file" if os.path.isdir(path) else "does not exist"
        raise FileNotFoundError(f"checkpoint {path} {what}")
    obj = load_checkpoint_file(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict")
    if "model" not in obj:
        if not obj or not all(torch.is_tensor(v) for v in obj.values()):
            raise CheckpointError(
                f"checkpoint {path} is neither a SARD checkpoint (no 'model' entry) nor a state "
                f"dict (top-level keys: {list(obj)[:8]})"
            )
        obj = {"model": obj}  # a bare state dict
    return obj


def _fit_student(state: Dict[str, torch.Tensor], own: Dict[str, torch.Tensor]) -> Dict:
    """Put a bare student state dict under ``student.``; leave a SARD checkpoint as it is."""
    if any(k.startswith(STUDENT_PREFIX) for k in state):
        return state
    own_student = {k[len(STUDENT_PREFIX) :] for k in own if k.startswith(STUDENT_PREFIX)}
    if own_student and set(state) & own_student:
        return {STUDENT_PREFIX + k: v for k, v in state.items()}
    return state


def _short(keys: List[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def check_student_fits(path: str, state: Dict[str, torch.Tensor], own: Dict) -> Dict:
    """The checkpoint's ``state`` restricted to what ``own`` (a model's state dict) can take.

    Student keys must match exactly (names and shapes), else ``CheckpointError`` lists the
    differences. Head keys that do not fit are dropped with a warning; without a head in the
    model they are dropped silently. Anything else unexpected is an error too.
    """
    state = _fit_student(state, own)
    own_keys = set(own)
    diff = state_dict_differences(own, state)
    student_missing = [k for k in diff.missing if k.startswith(STUDENT_PREFIX)]
    unexpected = [k for k in diff.unexpected if not k.startswith(HEAD_PREFIX)]
    shape = [k for k in diff.mismatched if k.startswith(STUDENT_PREFIX)]
    if student_missing or unexpected or shape:
        parts = []
        if student_missing:
            parts.append(f"{len(student_missing)} missing keys [{_short(student_missing)}]")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys [{_short(unexpected)}]")
        if shape:
            parts.append(f"{len(shape)} keys of another shape [{_short(shape)}]")
        raise CheckpointError(
            f"{path} does not fit this model ({'; '.join(parts)}): it is a checkpoint of "
            "another family, size or architecture. Use a checkpoint trained with this config, "
            "or fix MODEL.STUDENT.FAMILY / SIZE / ARCH."
        )
    head_own = {k for k in own_keys if k.startswith(HEAD_PREFIX)}
    head_state = {k for k in state if k.startswith(HEAD_PREFIX)}
    if head_own:
        head_bad = sorted(
            (head_own ^ head_state)
            | {k for k in head_own & head_state if tuple(state[k].shape) != tuple(own[k].shape)}
        )
        if head_bad:
            logger.warning(
                "%s: the distillation head does not fit (%s); it starts from its "
                "initialisation (a checkpoint of another MODEL.SARD.METHOD?)",
                path,
                _short(head_bad),
            )
            state = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIX)}
    else:
        state = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIX)}
    return state


class SardCheckpointMixin:
    """Atomic, finite, local-only, strict checkpointing (see the module docstring).

    Put it first among the bases: ``class C(SardCheckpointMixin, Checkpointer)``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.save_dir and self.save_to_disk and os.path.isdir(self.save_dir):
            remove_orphaned_temporaries(self.save_dir)

    # -------------------------------------------------------------- saving
    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        model_state = self.model.state_dict()
        bad = nonfinite_tensors(model_state)
        if bad:
            logger.warning(
                "not saving %s: %d weight tensors hold NaN/Inf (%s)", name, len(bad), _short(bad)
            )
            return
        data = {"model": model_state}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        os.makedirs(self.save_dir, exist_ok=True)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", path)
        try:
            atomic_write(path, lambda f: torch.save(data, f))
            self.tag_last_checkpoint(basename)
        except (OSError, RuntimeError) as err:
            # torch reports a full disk as RuntimeError("... unexpected pos ..."): say what
            # happened in words a user can act on.
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointSaveError(
                f"saving {path} failed ({reason}): the disk may be full or the folder read-only. "
                "The previous checkpoint and last_checkpoint were left intact; free space or "
                "set OUTPUT_DIR elsewhere, then rerun with --resume."
            ) from None

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(path, lambda f: f.write(last_filename_basename.encode()))

    # -------------------------------------------------------------- loading
    def load(self, path: str, checkpointables: Optional[List[str]] = None) -> Dict[str, Any]:
        if path:
            require_local_path(path, "MODEL.WEIGHTS")
        if path and not os.path.exists(path):
            raise FileNotFoundError(f"MODEL.WEIGHTS: checkpoint {path!r} does not exist")
        self._loading = path
        return super().load(path, checkpointables=checkpointables)

    def _load_file(self, f: str) -> Dict[str, Any]:
        return read_checkpoint(f)

    def _load_model(self, checkpoint: Dict[str, Any]):
        path = getattr(self, "_loading", "checkpoint")
        checkpoint["model"] = check_student_fits(path, checkpoint["model"], self.model.state_dict())
        return super()._load_model(checkpoint)

    # -------------------------------------------------------------- divergence
    def quarantine_diverged(self, failed_iter: int) -> Optional[str]:
        """After a non-finite loss at ``failed_iter``: set aside checkpoints not followed by a
        finite loss, re-tag the last good one and return its path (None if there is none)."""
        if not self.save_dir or not os.path.isdir(self.save_dir):
            return None
        good = []
        for path in glob.glob(os.path.join(glob.escape(self.save_dir), "model_*.pth")):
            match = _PERIODIC.match(os.path.basename(path))
            if not match:
                continue
            if int(match["it"]) >= failed_iter - 1:
                if self.save_to_disk:
                    os.replace(path, path + ".diverged")
                    logger.warning(
                        "set aside %s: its weights gave a non-finite loss", path + ".diverged"
                    )
            else:
                good.append((int(match["it"]), path))
        tag = os.path.join(self.save_dir, "last_checkpoint")
        if not good:
            if self.save_to_disk and os.path.exists(tag):
                os.remove(tag)  # --resume then starts again from MODEL.WEIGHTS
            return None
        last = max(good)[1]
        if self.save_to_disk:
            self.tag_last_checkpoint(os.path.basename(last))
        return last


class AtomicCheckpointer(SardCheckpointMixin, Checkpointer):
    """The built-in engine's checkpointer: fvcore's, with ``SardCheckpointMixin``."""


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


class RNGCheckpointable:
    """The process's RNG states as a checkpointable (``state_dict`` / ``load_state_dict``), so
    detectron2's checkpointer saves and restores them as ours does."""

    def state_dict(self) -> Dict[str, Any]:
        return rng_state()

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        set_rng_state(state)

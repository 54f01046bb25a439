"""Loading local checkpoints safely into any ``sard.models`` model.

* Local files only (``.pt``/``.pth``/``.pkl`` read by ``torch.load``, or ``.safetensors``): a
  URL (``http://``, ``s3://``, ...) is refused by :func:`require_local_path`; nothing is ever
  downloaded.
* An empty, truncated or damaged file, or one that is not a checkpoint at all, is a
  :class:`CorruptCheckpointError` naming the file and what is wrong with it.
* ``torch.load(..., weights_only=True)`` by default: a file that needs arbitrary Python code to
  unpickle is refused with :class:`UnsafeCheckpointError` before any of that code runs. Trusted
  files of that kind load with ``allow_unsafe_pickle=True`` (config key
  ``MODEL.{TEACHER,STUDENT}.ALLOW_UNSAFE_PICKLE``).
* Containers are unwrapped (``{"model": sd}``, ``{"state_dict": sd}``, DataParallel ``module.``).
* Position tables that legitimately depend on the input size are resized and logged: SAM's
  ``pos_embed`` (1, H, W, C) bicubically, ``rel_pos_h/w`` (2S - 1, d) linearly (as SAM itself does
  at run time), EfficientSAM's ``pos_embed`` (1, 1 + g*g, C) grid bicubically, cls slot kept.
* Anything else that does not fit is a :class:`CheckpointMismatchError` naming the missing,
  unexpected and mis-shaped keys.
* An empty path keeps the random initialisation, with a warning.
"""

from __future__ import annotations

import logging
import math
import pickle
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from sard.local_paths import require_local_path
from sard.user_errors import UserError

logger = logging.getLogger(__name__)

UNSAFE_OPT_IN = (
    "allow_unsafe_pickle=True (config key MODEL.TEACHER.ALLOW_UNSAFE_PICKLE or "
    "MODEL.STUDENT.ALLOW_UNSAFE_PICKLE)"
)
CONTAINER_KEYS = ("model", "state_dict", "model_state_dict", "module")
MAX_LISTED = 12


# "scheme://..." is a URL (http, https, s3, gs, hf, ftp, file ...); a Windows "C:\\" is not.
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format
PICKLE_PROTOCOL_2_PLUS = b"\x80"  # torch.save's legacy format starts with a pickle


class UnsafeCheckpointError(UserError, RuntimeError):
    """The checkpoint needs arbitrary code to unpickle and the caller did not opt in."""


class CheckpointMismatchError(UserError, RuntimeError):
    """The checkpoint's keys or shapes do not fit the model."""


class CorruptCheckpointError(UserError, RuntimeError):
    """The file is empty, truncated, damaged or not a checkpoint at all."""


def _unreadable_reason(file: Path, err: BaseException) -> str:
    """Why torch could not read ``file``, from its first bytes and size."""
    size = file.stat().st_size
    if size == 0:
        return "is empty (0 bytes): the save or the copy did not finish; copy it again"
    with open(file, "rb") as f:
        head = f.read(16)
    if head.startswith(ZIP_MAGIC):
        if not zipfile.is_zipfile(file):
            return (
                f"is truncated ({size} bytes, the end of its zip archive is missing); "
                "copy it again"
            )
        return f"is damaged: torch cannot read its archive ({_torch_reason(err)}); copy it again"
    if head.startswith(PICKLE_PROTOCOL_2_PLUS):
        return f"is truncated or damaged ({size} bytes; torch: {_torch_reason(err)}); copy it again"
    return (
        f"is not a PyTorch checkpoint: it starts with {head[:12]!r}, not the zip archive or "
        "pickle torch.save writes (an HTML error page or a text file saved under that name?); "
        "check the path"
    )


def _torch_reason(err: BaseException) -> str:
    """The informative part of a torch.load error (its WeightsUnpickler line, else the first)."""
    text = str(err).strip()
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0][:200] if lines else type(err).__name__) or type(err).__name__


def _needs_code(err: BaseException) -> bool:
    """True when weights_only refused a global (a class or function to import), i.e. the file
    is a valid pickle that needs code; garbage bytes fail on an unsupported opcode instead."""
    return "global" in _torch_reason(err).lower()


@dataclass
class LoadReport:
    """What ``load_checkpoint`` did: the file, keys left out either way, and tables resized."""

    path: str
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    resized: List[str] = field(default_factory=list)

    @property
    def loaded(self) -> bool:
        return bool(self.path)


@dataclass
class KeyDifferences:
    """How a state dict differs from a model's (sorted key names): keys the model has and the
    state dict lacks, keys only the state dict has, and shared keys of another shape."""

    missing: List[str]
    unexpected: List[str]
    mismatched: List[str]

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mismatched)


def state_dict_differences(
    own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]
) -> KeyDifferences:
    """Compare a checkpoint's ``state`` with a model's own state dict ``own`` (names, shapes)."""
    shared = sorted(set(own) & set(state))
    return KeyDifferences(
        missing=sorted(set(own) - set(state)),
        unexpected=sorted(set(state) - set(own)),
        mismatched=[k for k in shared if tuple(state[k].shape) != tuple(own[k].shape)],
    )


def load_exactly(target: nn.Module, state: Dict[str, torch.Tensor], path: str, what: str) -> None:
    """``target.load_state_dict(state)`` when every key fits exactly; else a
    ``CheckpointMismatchError`` naming ``path``, ``what`` the model is, and the missing,
    unexpected and mis-shaped keys (each with both shapes)."""
    own = target.state_dict()
    diff = state_dict_differences(own, state)
    if diff:
        shapes = [
            f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
            for k in diff.mismatched
        ]
        raise CheckpointMismatchError(
            f"{path} does not fit {what}: missing {diff.missing[:MAX_LISTED]} "
            f"({len(diff.missing)}), unexpected {diff.unexpected[:MAX_LISTED]} "
            f"({len(diff.unexpected)}), mis-shaped {shapes[:MAX_LISTED]}"
        )
    target.load_state_dict(state)


def _listing(keys: Sequence[str]) -> str:
    """All keys when few; else counts per two-level prefix and the first few keys."""
    if len(keys) <= MAX_LISTED:
        return ", ".join(keys)
    groups = Counter(".".join(k.split(".")[:2]) for k in keys)
    by_prefix = ", ".join(f"{prefix}.* ({n})" for prefix, n in sorted(groups.items()))
    return f"by prefix: {by_prefix}; first: {', '.join(keys[:4])}, ..."


def _unwrap(obj: object, path: Path, state_key: Optional[str]) -> Dict[str, torch.Tensor]:
    """Find the tensor dict inside a checkpoint container."""
    if state_key:
        for part in state_key.split("."):
            if not isinstance(obj, dict) or part not in obj:
                keys = list(obj) if isinstance(obj, dict) else type(obj).__name__
                raise KeyError(f"{path}: no entry {state_key!r} in the checkpoint (has {keys})")
            obj = obj[part]
    while isinstance(obj, dict) and not all(torch.is_tensor(v) for v in obj.values()):
        inner = next((k for k in CONTAINER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = obj[inner]
    if not isinstance(obj, dict):
        raise CheckpointMismatchError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    tensors = {k: v for k, v in obj.items() if torch.is_tensor(v)}
    if not tensors:
        raise CheckpointMismatchError(
            f"{path}: no tensors found (top-level keys {list(obj)[:MAX_LISTED]}); "
            "pass state_key to say where the state dict is"
        )
    if len(tensors) < len(obj):
        logger.warning("%s: ignoring %d non-tensor entries", path, len(obj) - len(tensors))
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def load_checkpoint_file(file: str | Path, *, allow_unsafe_pickle: bool = False) -> object:
    """``torch.load`` of a local file on the CPU (weights only unless opted in), with every
    failure turned into one line naming the file: UnsafeCheckpointError (needs code to unpickle)
    or CorruptCheckpointError (empty, truncated, damaged, not a checkpoint)."""
    file = Path(file)
    try:
        obj = torch.load(file, map_location="cpu", weights_only=not allow_unsafe_pickle)
    except pickle.UnpicklingError as err:
        if not allow_unsafe_pickle and _needs_code(err):
            raise UnsafeCheckpointError(
                f"checkpoint {file} needs arbitrary Python code to unpickle, so it was refused "
                f"and none of its code ran (torch: {_torch_reason(err)}). If you trust where it "
                f"came from, opt in with {UNSAFE_OPT_IN}, or re-save it as a plain state dict."
            ) from None
        raise CorruptCheckpointError(f"checkpoint {file} {_unreadable_reason(file, err)}") from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, UnicodeDecodeError) as err:
        raise CorruptCheckpointError(f"checkpoint {file} {_unreadable_reason(file, err)}") from None
    except (AttributeError, ImportError) as err:  # only with allow_unsafe_pickle
        raise UnsafeCheckpointError(
            f"checkpoint {file} was pickled with Python code that is not importable here "
            f"({type(err).__name__}: {err}); re-save it as a plain state dict where it was made"
        ) from None
    return obj


def read_state_dict(
    path: str | Path, *, allow_unsafe_pickle: bool = False, state_key: Optional[str] = None
) -> Dict[str, torch.Tensor]:
    """Read a local checkpoint file into a flat {name: tensor} dict on the CPU (see module doc).

    Raises RemoteWeightsError (a URL), FileNotFoundError, UnsafeCheckpointError (needs code to
    unpickle, not opted in), CorruptCheckpointError (empty, truncated, damaged, not a
    checkpoint) or CheckpointMismatchError (no state dict inside); each names the file.
    """
    file = require_local_path(path, "checkpoint")
    if not file.is_file():
        what = "is a directory, not a file" if file.is_dir() else "does not exist"
        raise FileNotFoundError(f"checkpoint {file} {what}")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(file))
        except Exception as err:  # safetensors raises its own SafetensorError for bad headers
            size = file.stat().st_size
            state = "is empty (0 bytes)" if size == 0 else f"is damaged ({_torch_reason(err)})"
            raise CorruptCheckpointError(f"checkpoint {file} {state}; copy it again") from None
        return _finite(_unwrap(tensors, file, state_key), file)
    obj = load_checkpoint_file(file, allow_unsafe_pickle=allow_unsafe_pickle)
    return _finite(_unwrap(obj, file, state_key), file)


def _all_finite(tensor: torch.Tensor) -> bool:
    """True when every element is finite. A finite sum proves it in one pass without a mask
    tensor; only a non-finite sum (NaN, inf, or an fp16 overflow) needs the element-wise
    check."""
    return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


def _finite(state: Dict[str, torch.Tensor], file: Path) -> Dict[str, torch.Tensor]:
    """``state`` unchanged, or CorruptCheckpointError when a float tensor holds NaN or infinity
    (weights saved after training diverged would silently poison a teacher or a student)."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not _all_finite(v)]
    if bad:
        raise CorruptCheckpointError(
            f"checkpoint {file} holds NaN or infinite values in {len(bad)} tensor(s) "
            f"({_listing(bad)}): it was saved after training diverged; use an earlier checkpoint"
        )
    return state


def _resize_pos_embed(value: torch.Tensor, target: torch.Size) -> Optional[torch.Tensor]:
    """(1, H, W, C) -> (1, h, w, C), or (1, 1 + G*G, C) -> (1, 1 + g*g, C); None if neither."""
    v = value.float()
    if v.dim() == 4 and len(target) == 4 and v.shape[-1] == target[-1]:
        grid = F.interpolate(
            v.permute(0, 3, 1, 2), size=tuple(target[1:3]), mode="bicubic", align_corners=False
        )
        return grid.permute(0, 2, 3, 1).to(value.dtype)
    if v.dim() == 3 and len(target) == 3 and v.shape[-1] == target[-1]:
        g_src, g_dst = math.isqrt(v.shape[1] - 1), math.isqrt(target[1] - 1)
        if g_src**2 != v.shape[1] - 1 or g_dst**2 != target[1] - 1:
            return None
        grid = v[:, 1:].reshape(1, g_src, g_src, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(g_dst, g_dst), mode="bicubic", align_corners=False)
        grid = grid.permute(0, 2, 3, 1).reshape(1, g_dst * g_dst, -1)
        return torch.cat([v[:, :1], grid], dim=1).to(value.dtype)
    return None


def _resize_rel_pos(value: torch.Tensor, target: torch.Size) -> Optional[torch.Tensor]:
    """(L, d) -> (l, d) by linear interpolation along L (what SAM's get_rel_pos does)."""
    if value.dim() != 2 or len(target) != 2 or value.shape[1] != target[1]:
        return None
    table = value.float().t().unsqueeze(0)  # (1, d, L)
    table = F.interpolate(table, size=int(target[0]), mode="linear", align_corners=False)
    return table[0].t().contiguous().to(value.dtype)


def resize_position_tables(
    state: Dict[str, torch.Tensor], target_shapes: Dict[str, torch.Size]
) -> List[str]:
    """Resize, in place, ``pos_embed`` and ``rel_pos_h/w`` entries whose shape differs from the
    model's; returns the names resized. Other entries are left alone."""
    resized = []
    for key, value in list(state.items()):
        target = target_shapes.get(key)
        if target is None or value.shape == target:
            continue
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "pos_embed":
            new = _resize_pos_embed(value, target)
        elif leaf in ("rel_pos_h", "rel_pos_w"):
            new = _resize_rel_pos(value, target)
        else:
            new = None
        if new is not None:
            logger.info("resized %s from %s to %s", key, tuple(value.shape), tuple(new.shape))
            state[key] = new
            resized.append(key)
    return resized


def load_checkpoint(
    model: nn.Module,
    path: str | Path,
    *,
    allow_unsafe_pickle: bool = False,
    state_key: Optional[str] = None,
    strict: bool = True,
    resize: bool = True,
    transform: Optional[Callable[[Dict[str, torch.Tensor]], Dict[str, torch.Tensor]]] = None,
) -> LoadReport:
    """Load a local checkpoint into ``model`` (see the module docstring for the rules).

    strict: missing or unexpected keys raise :class:`CheckpointMismatchError` (otherwise they
    are warned about); mis-shaped keys always raise. ``transform`` maps the read state dict
    before matching (e.g. taking the student out of a SARD training checkpoint).
    Returns a :class:`LoadReport`.
    """
    name = f"{type(model).__name__} ({getattr(model, 'family', 'unknown family')})"
    if not str(path or ""):
        message = f"{name}: no weights path given, the model keeps its random initialisation"
        warnings.warn(message, stacklevel=2)
        logger.warning(message)
        return LoadReport(path="")
    state = read_state_dict(path, allow_unsafe_pickle=allow_unsafe_pickle, state_key=state_key)
    if transform is not None:
        state = transform(state)
    own = model.state_dict()
    shapes = {k: v.shape for k, v in own.items()}
    resized = resize_position_tables(state, shapes) if resize else []
    diff = state_dict_differences(own, state)
    missing, unexpected, mismatched = diff.missing, diff.unexpected, diff.mismatched
    if (missing or unexpected) and strict:
        # A handful of stray keys is a version difference; many mean another architecture.
        many = len(missing) + len(unexpected) >= 0.1 * max(len(own), 1)
        hint = " It looks like a checkpoint of another model family or size." if many else ""
        raise CheckpointMismatchError(
            f"{path} does not fit {name}: {len(missing)} missing keys [{_listing(missing)}]; "
            f"{len(unexpected)} unexpected keys [{_listing(unexpected)}].{hint}"
        )
    if mismatched:
        raise CheckpointMismatchError(
            f"{path} has {len(mismatched)} tensors whose shape does not fit {name}"
            f"{'' if resize else ' (resize=False)'}: {_listing(mismatched)}. For example: "
            + "; ".join(
                f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(shapes[k])}"
                for k in mismatched[:4]
            )
        )
    if missing or unexpected:
        warnings.warn(
            f"{path}: loaded non-strictly into {name}; missing [{_listing(missing)}], "
            f"unexpected [{_listing(unexpected)}]",
            stacklevel=2,
        )
    model.load_state_dict(state, strict=False)
    logger.info("loaded %s into %s (%d tensors, %d resized)", path, name, len(state), len(resized))
    return LoadReport(str(path), missing, unexpected, resized)

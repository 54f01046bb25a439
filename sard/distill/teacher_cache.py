"""Cache of the frozen teacher's per-image outputs (taps, W, semantic scores) in fp16.

The teacher is by far the most expensive part of a SARD step (SAM ViT-H: ~90 s per 1024 image on
two CPU cores). Its image-level outputs depend only on the teacher and the input image, so they
are cached under two keys:

* the **teacher identity** (``identity``, given at construction: family, size, architecture, a
  digest of the loaded weights, taps, image size, the cached output names and, when W is cached,
  its betas, radius and sigma). Its fingerprint names a sub-folder of the cache directory, so
  one directory can be shared by several teachers or settings without serving one's outputs to
  another; ``identity.json`` in that folder says which teacher it belongs to.
* the **model input** (:func:`image_key`): the exact pixels and, for padded inputs, the valid
  region. The image id is not enough, because a random flip or rescale changes the input; a
  flipped view simply gets its own entry.

Every disk entry stores its identity fingerprint, its key, and the shape and SHA-1 of each
tensor. On reading, an entry that cannot be loaded, belongs to another identity or image, lacks
an output, or whose tensors do not match their shapes and checksums (replaced by zeros, by
another shape, truncated) is treated as missing: it is recomputed and rewritten, with a warning
naming the file. Prompt-dependent outputs (a promptable teacher's masks) are recomputed from the
cached embedding, which costs only the light mask decoder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from sard.atomic_files import atomic_write, atomic_write_json

logger = logging.getLogger(__name__)

ENTRY_FORMAT = 2  # bump when the entry layout changes; older entries are then recomputed
IDENTITY_FILE = "identity.json"
FINGERPRINT_CHARS = 16
W_SUM_TOLERANCE = 1e-2  # W is stored in fp16; its sum of 1 survives to about 1e-3


def image_key(image: torch.Tensor, valid_hw: Optional[Sequence[int]] = None) -> str:
    """SHA-1 of the image's shape, its pixels rounded to uint8 (mapper images are 0-255) and
    the valid (unpadded) region ``valid_hw`` when the teacher is told about padding."""
    pixels = image.detach().to("cpu").round().clamp(0, 255).to(torch.uint8).contiguous()
    h = hashlib.sha1(str(tuple(pixels.shape)).encode())
    if valid_hw is not None:
        h.update(str(tuple(int(v) for v in valid_hw)).encode())
    h.update(pixels.numpy().tobytes())
    return h.hexdigest()


def tensor_digest(tensor: torch.Tensor) -> str:
    """SHA-1 of a tensor's dtype, shape and bytes (any dtype, bf16 included)."""
    t = tensor.detach().to("cpu").contiguous()
    h = hashlib.sha1(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def state_dict_digest(module: torch.nn.Module) -> str:
    """SHA-1 over a module's parameters and buffers (names, dtypes, shapes, values): the
    identity of the weights actually loaded, whatever file (or random seed) they came from."""
    h = hashlib.sha1()
    for name, value in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor_digest(value).encode())
    return h.hexdigest()


def identity_fingerprint(identity: Dict[str, Any]) -> str:
    """Short stable hash of a JSON-able identity dict (key order does not matter)."""
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:FINGERPRINT_CHARS]


def _content_problem(tensors: Dict[str, torch.Tensor]) -> Optional[str]:
    """Checks that hold for any real teacher output, whatever its checksum says: no float
    tensor is all zeros (features, scores) and W sums to 1 (up to fp16 rounding)."""
    for name, value in tensors.items():
        if value.is_floating_point() and value.numel() and not value.any():
            return f"has {name!r} all zeros, which no teacher output is"
    weight = tensors.get("structure_weight")
    if weight is not None and abs(float(weight.float().sum()) - 1.0) > W_SUM_TOLERANCE:
        return f"has a structure map W summing to {float(weight.float().sum()):.4g}, not 1"
    return None


def open_entry_store(
    store: Any,
    directory: str,
    identity: Optional[Dict[str, Any]],
    folder_prefix: str,
    identity_indent: Optional[int] = None,
) -> None:
    """Set up what the teacher cache and the pseudo-label store share on ``store``: its
    ``identity`` and ``fingerprint``, its ``directory`` (``directory/<folder_prefix><fingerprint>``,
    "" = in memory), counters ``hits``, ``misses``, ``recomputed`` at 0; on disk, the folder
    and its identity file (written once, so a folder always says what it holds)."""
    store.identity = dict(identity or {})
    store.fingerprint = identity_fingerprint(store.identity)
    store.directory = (
        os.path.join(directory, folder_prefix + store.fingerprint) if directory else ""
    )
    store.hits = store.misses = store.recomputed = 0
    if store.directory:
        os.makedirs(store.directory, exist_ok=True)
        path = os.path.join(store.directory, IDENTITY_FILE)
        if not os.path.isfile(path):
            atomic_write_json(
                path,
                store.identity,
                durable=False,
                indent=identity_indent,
                sort_keys=True,
                default=str,
            )


def load_entry(
    store: Any,
    key: str,
    read: Callable[[str], Any],
    problem_of: Callable[[Any], Optional[str]],
    what: str,
) -> Optional[Any]:
    """The raw disk entry of ``key`` in a store set up by ``open_entry_store`` (with a folder),
    read through ``read_entry``: None when absent, or unusable (counted in ``store.recomputed``)."""
    path = store._path(key)
    if not os.path.isfile(path):
        return None
    raw = read_entry(path, read, problem_of, what)
    if raw is None:
        store.recomputed += 1
    return raw


def read_entry(
    path: str,
    read: Callable[[str], Any],
    problem_of: Callable[[Any], Optional[str]],
    what: str,
) -> Optional[Any]:
    """``read(path)`` when the file reads and ``problem_of`` finds nothing wrong with it; else
    None, with a warning naming ``what`` and ``path`` and saying why it is recomputed (a cache
    entry is never trusted blindly, nor is a bad one fatal)."""
    try:
        raw = read(path)
    except Exception as err:  # noqa: BLE001 - any unreadable file is recomputed
        problem = f"cannot be read ({type(err).__name__}: {str(err).strip()[:120]})"
    else:
        problem = problem_of(raw)
    if problem is None:
        return raw
    message = f"{what} {path} {problem}; recomputing it"
    warnings.warn(message, stacklevel=4)
    logger.warning(message)
    return None


class TeacherCache:
    """In-memory (``directory=""``) or on-disk store of per-image teacher tensors.

    ``get(keys)`` returns a list (None where missing or unusable); ``put(keys, batch)`` stores one
    dict of tensors per image, each without the batch dimension, as fp16 on the CPU. With
    ``identity["outputs"]``, every entry must hold at least those tensors, on both sides.
    Disk files are written atomically (temporary file + rename): a crash never leaves a torn
    entry. Counters: ``hits``, ``misses`` (including unusable entries) and ``recomputed``
    (unusable disk entries).
    """

    def __init__(self, directory: str = "", identity: Optional[Dict[str, Any]] = None) -> None:
        open_entry_store(self, directory, identity, folder_prefix="", identity_indent=1)
        self.outputs = sorted(self.identity["outputs"]) if "outputs" in self.identity else None
        self._memory: Dict[str, Dict[str, torch.Tensor]] = {}
        # Shapes per image shape seen in this process: every entry must agree with the first.
        self._layout: Dict[Tuple[int, ...], Dict[str, Tuple[int, ...]]] = {}

    def _path(self, key: str) -> str:
        return os.path.join(self.directory, f"{key}.pt")

    # ------------------------------------------------------------------ reading
    def _load(self, key: str, layout_key: Tuple[int, ...]) -> Optional[Dict[str, torch.Tensor]]:
        if not self.directory:
            return self._memory.get(key)
        raw = load_entry(
            self,
            key,
            lambda p: torch.load(p, map_location="cpu", weights_only=True),
            lambda raw: self._entry_problem(raw, key)
            or self._layout_problem(raw["tensors"], layout_key),
            "teacher cache entry",
        )
        return None if raw is None else raw["tensors"]

    def _entry_problem(self, raw: Any, key: str) -> Optional[str]:
        """Why a loaded disk entry is unusable, or None."""
        if not isinstance(raw, dict) or raw.get("format") != ENTRY_FORMAT:
            return "is not a teacher cache entry of this SARD version"
        if raw.get("identity") != self.fingerprint or raw.get("key") != key:
            return "belongs to another teacher, setting or image"
        tensors, shapes, digests = raw.get("tensors"), raw.get("shapes"), raw.get("sha1")
        if not (
            isinstance(tensors, dict) and isinstance(shapes, dict) and isinstance(digests, dict)
        ):
            return "lacks its tensors, shapes or checksums"
        if self.outputs is not None and not set(self.outputs) <= set(tensors):
            return f"holds {sorted(tensors)}, not all of the expected outputs {self.outputs}"
        for name, value in tensors.items():
            if not torch.is_tensor(value):
                return f"holds a {type(value).__name__} as {name!r}"
            if list(value.shape) != list(shapes.get(name, [])):
                return f"has {name!r} of shape {tuple(value.shape)}, recorded {shapes.get(name)}"
            if tensor_digest(value) != digests.get(name):
                return f"has {name!r} whose checksum does not match (replaced or damaged)"
        return _content_problem(tensors)

    def _layout_problem(
        self, tensors: Dict[str, torch.Tensor], layout_key: Tuple[int, ...]
    ) -> Optional[str]:
        shapes = {name: tuple(t.shape) for name, t in tensors.items()}
        known = self._layout.setdefault(layout_key, shapes)
        if known != shapes:
            return f"has shapes {shapes}, but entries of this image size have {known}"
        return None

    def get(
        self, keys: List[str], image_shape: Sequence[int] = ()
    ) -> List[Optional[Dict[str, torch.Tensor]]]:
        """Entries for ``keys`` (None where missing or unusable); ``image_shape`` (C, H, W)
        groups entries whose tensor shapes must agree."""
        layout_key = tuple(int(v) for v in image_shape)
        found = [self._load(k, layout_key) for k in keys]
        hits = sum(f is not None for f in found)
        self.hits += hits
        self.misses += len(keys) - hits
        return found

    # ------------------------------------------------------------------ writing
    def put(
        self, keys: List[str], batch: Dict[str, torch.Tensor], image_shape: Sequence[int] = ()
    ) -> None:
        """Store image i of every batched tensor under ``keys[i]``."""
        if self.outputs is not None and not set(self.outputs) <= set(batch):
            raise RuntimeError(
                f"teacher outputs {sorted(batch)} lack some of the cache identity's "
                f"{self.outputs}: the cache identity is built wrongly"
            )
        layout_key = tuple(int(v) for v in image_shape)
        for i, key in enumerate(keys):
            entry = {
                name: t[i].detach().to("cpu", torch.float16 if t.is_floating_point() else t.dtype)
                for name, t in batch.items()
            }
            self._layout.setdefault(layout_key, {n: tuple(t.shape) for n, t in entry.items()})
            if not self.directory:
                self._memory[key] = entry
                continue
            record = {
                "format": ENTRY_FORMAT,
                "identity": self.fingerprint,
                "key": key,
                "tensors": entry,
                "shapes": {name: list(t.shape) for name, t in entry.items()},
                "sha1": {name: tensor_digest(t) for name, t in entry.items()},
            }
            atomic_write(self._path(key), lambda f: torch.save(record, f), durable=False)

    def __len__(self) -> int:
        if not self.directory:
            return len(self._memory)
        return sum(f.endswith(".pt") for f in os.listdir(self.directory))


def stack_entries(
    entries: List[Dict[str, torch.Tensor]], device: torch.device, dtype: torch.dtype
) -> Dict[str, torch.Tensor]:
    """Inverse of ``put``: stack per-image entries back into batched tensors on ``device``.

    Each fp16 entry is cast before stacking: under CPU bf16 autocast, stacking fp16 tensors
    raises ("Unexpected floating ScalarType in at::autocast::prioritize").
    """
    return {
        name: torch.stack([e[name].to(device=device, dtype=dtype) for e in entries])
        for name in entries[0]
    }

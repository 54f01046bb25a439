"""Cache of the frozen teacher's per-image outputs (taps, W, semantic scores) in fp16.

The teacher is by far the most expensive part of a SARD step (SAM ViT-H: ~90 s per 1024 image on
two CPU cores). Its image-level outputs depend only on the input image, so they are cached under a
key computed from the exact model-input pixels: the image id is not enough on its own, because a
random flip or rescale changes the input. Hashing the input makes the key "image id + the
deterministic part of the transform" by construction, and a flipped view simply gets its own entry.
Prompt-dependent outputs (a promptable teacher's masks) are recomputed from the cached embedding,
which costs only the light mask decoder.
"""

from __future__ import annotations

import hashlib
import os
from typing import Dict, List, Optional

import torch


def image_key(image: torch.Tensor) -> str:
    """SHA-1 of the image's shape and its pixels rounded to uint8 (mapper images are 0-255)."""
    pixels = image.detach().to("cpu").round().clamp(0, 255).to(torch.uint8).contiguous()
    h = hashlib.sha1(str(tuple(pixels.shape)).encode())
    h.update(pixels.numpy().tobytes())
    return h.hexdigest()


class TeacherCache:
    """In-memory (``directory=""``) or on-disk store of per-image teacher tensors.

    ``get(keys)`` returns a list (None where missing); ``put(keys, batch)`` stores one dict of
    tensors per image, each tensor without the batch dimension, as fp16 on the CPU.
    Disk files are written atomically (temporary file + rename): a crash never leaves a torn
    entry.
    """

    def __init__(self, directory: str = "") -> None:
        self.directory = directory
        self._memory: Dict[str, Dict[str, torch.Tensor]] = {}
        self.hits = 0
        self.misses = 0
        if directory:
            os.makedirs(directory, exist_ok=True)

    def _path(self, key: str) -> str:
        return os.path.join(self.directory, f"{key}.pt")

    def _load(self, key: str) -> Optional[Dict[str, torch.Tensor]]:
        if not self.directory:
            return self._memory.get(key)
        path = self._path(key)
        if not os.path.isfile(path):
            return None
        return torch.load(path, map_location="cpu", weights_only=True)

    def get(self, keys: List[str]) -> List[Optional[Dict[str, torch.Tensor]]]:
        found = [self._load(k) for k in keys]
        hits = sum(f is not None for f in found)
        self.hits += hits
        self.misses += len(keys) - hits
        return found

    def put(self, keys: List[str], batch: Dict[str, torch.Tensor]) -> None:
        for i, key in enumerate(keys):
            entry = {
                name: t[i].detach().to("cpu", torch.float16 if t.is_floating_point() else t.dtype)
                for name, t in batch.items()
            }
            if not self.directory:
                self._memory[key] = entry
                continue
            tmp = self._path(key) + f".tmp{os.getpid()}"
            torch.save(entry, tmp)
            os.replace(tmp, self._path(key))

    def __len__(self) -> int:
        if not self.directory:
            return len(self._memory)
        return sum(f.endswith(".pt") for f in os.listdir(self.directory))


def stack_entries(
    entries: List[Dict[str, torch.Tensor]], device: torch.device, dtype: torch.dtype
) -> Dict[str, torch.Tensor]:
    """Inverse of ``put``: stack per-image entries back into batched tensors on ``device``."""
    return {
        name: torch.stack([e[name] for e in entries]).to(device=device, dtype=dtype)
        for name in entries[0]
    }

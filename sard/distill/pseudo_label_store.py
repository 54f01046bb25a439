"""Storage of the teacher's pseudo-masks, one entry per model input (label-free distillation).

Entries are keyed like the teacher cache's (``sard.distill.teacher_cache.image_key``: the
model input's pixels and valid region) and live in memory, or, with a directory, as one JSON
file per input in ``<directory>/pseudo_labels-<fingerprint>/``, beside the teacher cache's own
folders. The fingerprint hashes the store's identity (the teacher: family, size, architecture,
image size, a digest of its loaded weights; the resize mode; every pseudo-label setting), so
another teacher or another threshold never reads these masks; ``identity.json`` in the folder
says whose they are.

An entry holds the masks as COCO compressed RLE in the valid region's frame (h, w), their
predicted IoUs and stability scores, and a SHA-1 of that content. An entry that cannot be read,
belongs to another identity or input, fails its checksum or holds a malformed RLE is treated as
missing (recomputed and rewritten) with a warning naming the file. Files are written atomically
(temporary file + rename).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from sard.atomic_files import atomic_write_json
from sard.data.masks import rle_problem

from .teacher_cache import IDENTITY_FILE, load_entry, open_entry_store

logger = logging.getLogger(__name__)

ENTRY_FORMAT = 1  # bump when the entry layout changes; older entries are then recomputed


@dataclass
class PseudoLabels:
    """The pseudo-masks of one model input: compressed RLEs of the valid region (h, w)."""

    hw: Tuple[int, int]
    rles: List[Dict[str, Any]] = field(default_factory=list)
    predicted_iou: List[float] = field(default_factory=list)
    stability_score: List[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rles)

    def content(self) -> Dict[str, Any]:
        """JSON-ready content (what the checksum covers)."""
        return {
            "hw": [int(v) for v in self.hw],
            "rles": [{"size": list(r["size"]), "counts": str(r["counts"])} for r in self.rles],
            "predicted_iou": [float(v) for v in self.predicted_iou],
            "stability_score": [float(v) for v in self.stability_score],
        }


def content_digest(content: Dict[str, Any]) -> str:
    """SHA-1 of the canonical JSON of an entry's content."""
    return hashlib.sha1(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _entry_problem(raw: Any, fingerprint: str, key: str) -> Optional[str]:
    """Why a loaded entry is unusable, or None."""
    if not isinstance(raw, dict) or raw.get("format") != ENTRY_FORMAT:
        return "is not a pseudo-label entry of this SARD version"
    if raw.get("identity") != fingerprint or raw.get("key") != key:
        return "belongs to another teacher, setting or image"
    content = raw.get("content")
    if not isinstance(content, dict) or content_digest(content) != raw.get("sha1"):
        return "does not match its checksum (edited or damaged)"
    hw = content.get("hw")
    rles = content.get("rles")
    lists = [rles, content.get("predicted_iou"), content.get("stability_score")]
    if not (isinstance(hw, list) and len(hw) == 2 and all(isinstance(x, list) for x in lists)):
        return "lacks its frame, masks or scores"
    if len({len(x) for x in lists}) != 1:
        return "holds different numbers of masks and scores"
    for i, rle in enumerate(rles):
        problem = rle_problem(rle, int(hw[0]), int(hw[1]))
        if problem is not None:
            return f"has mask #{i} {problem}"
    return None


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class PseudoLabelStore:
    """In-memory (``directory=""``) or on-disk store of :class:`PseudoLabels` per model input.

    Counters: ``hits``, ``misses`` (unusable entries included) and ``recomputed`` (unusable disk
    entries).
    """

    def __init__(self, directory: str = "", identity: Optional[Dict[str, Any]] = None) -> None:
        open_entry_store(self, directory, identity, folder_prefix="pseudo_labels-")
        self._memory: Dict[str, PseudoLabels] = {}

    def _path(self, key: str) -> str:
        return os.path.join(self.directory, f"{key}.json")

    def get(self, key: str) -> Optional[PseudoLabels]:
        """The entry of ``key``, or None when missing or unusable."""
        found = self._load(key)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def _load(self, key: str) -> Optional[PseudoLabels]:
        if not self.directory:
            return self._memory.get(key)
        raw = load_entry(
            self,
            key,
            _read_json,
            lambda raw: _entry_problem(raw, self.fingerprint, key),
            "pseudo-label entry",
        )
        if raw is None:
            return None
        c = raw["content"]
        return PseudoLabels(
            hw=(int(c["hw"][0]), int(c["hw"][1])),
            rles=c["rles"],
            predicted_iou=c["predicted_iou"],
            stability_score=c["stability_score"],
        )

    def put(self, key: str, labels: PseudoLabels) -> None:
        """Store ``labels`` under ``key`` (atomically on disk)."""
        if not self.directory:
            self._memory[key] = labels
            return
        content = labels.content()
        record = {
            "format": ENTRY_FORMAT,
            "identity": self.fingerprint,
            "key": key,
            "content": content,
            "sha1": content_digest(content),
        }
        atomic_write_json(self._path(key), record, durable=False, sort_keys=True, default=str)

    def __len__(self) -> int:
        if not self.directory:
            return len(self._memory)
        return sum(f.endswith(".json") and f != IDENTITY_FILE for f in os.listdir(self.directory))

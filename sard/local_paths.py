"""SARD never downloads anything: every weights path is a local file or folder.

One home for the rule: ``is_remote_path`` recognises URLs and other non-local paths ("http://",
"s3://", "detectron2://", "file://", ...) and ``require_local_path`` refuses them before any
library (fvcore, iopath, torch.hub) could fetch them.
"""

from __future__ import annotations

import re
from pathlib import Path

from .user_errors import UserError

URL_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class RemoteWeightsError(UserError, ValueError):
    """A weights path is a URL: nothing is ever downloaded."""


def is_remote_path(path: str | Path) -> bool:
    """True for URLs and other scheme-prefixed, non-local paths."""
    return bool(URL_PATTERN.match(str(path).strip()))


def require_local_path(path: str | Path, key: str = "weights path") -> Path:
    """``path`` as a local Path; a URL raises :class:`RemoteWeightsError` naming ``key``."""
    text = str(path)
    if is_remote_path(text):
        raise RemoteWeightsError(
            f"{key} {text!r} is a URL, and SARD never downloads anything: download the file "
            "yourself and give its local path"
        )
    return Path(text).expanduser()

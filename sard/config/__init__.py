"""Configs: ``get_cfg()`` gives detectron2-compatible defaults plus SARD's keys."""

from __future__ import annotations

import os
from typing import Sequence

import yaml
from fvcore.common.config import CfgNode

from .base_defaults import base_config
from .sard_config import METHODS, add_sard_config

__all__ = [
    "CfgNode",
    "METHODS",
    "add_sard_config",
    "detectron2_available",
    "get_cfg",
    "load_config",
    "validate_config",
]


def detectron2_available() -> bool:
    """True when ``import detectron2`` works (its C++ ops need not be built for this check)."""
    try:
        import detectron2  # noqa: F401
    except ImportError:
        return False
    return True


def get_cfg(use_detectron2: bool = False) -> CfgNode:
    """Return default config with SARD's keys.

    With ``use_detectron2`` the node is detectron2's own ``get_cfg()`` (so detectron2 tools accept
    it); otherwise the built-in subset of detectron2's defaults. Both carry the same SARD keys.
    """
    if use_detectron2:
        from detectron2.config import get_cfg as d2_get_cfg

        cfg = d2_get_cfg()
    else:
        cfg = base_config()
    add_sard_config(cfg)
    return cfg


_ARCH_PREFIXES = ("MODEL.TEACHER.ARCH.", "MODEL.STUDENT.ARCH.")


def load_config(
    config_file: str = "", opts: Sequence[str] = (), use_detectron2: bool = False
) -> CfgNode:
    """Defaults, then ``config_file`` (with ``_BASE_`` chains), then ``KEY VALUE`` overrides.

    Unknown keys raise an error naming the key, except under ``MODEL.{TEACHER,STUDENT}.ARCH``,
    which holds free-form architecture overrides (YAML or command line alike).
    """
    cfg = get_cfg(use_detectron2)
    if config_file:
        if not os.path.isfile(config_file):
            raise FileNotFoundError(f"config file not found: {config_file}")
        cfg.merge_from_file(config_file)
    opts = list(opts)
    if len(opts) % 2:
        raise ValueError(f"overrides must be KEY VALUE pairs, got an odd count: {opts}")
    rest = []
    for key, value in zip(opts[0::2], opts[1::2]):
        # yacs' merge_from_list ignores new_allowed, so ARCH overrides are set directly.
        if key.startswith(_ARCH_PREFIXES):
            node = (
                cfg.MODEL.TEACHER.ARCH
                if key.startswith(_ARCH_PREFIXES[0])
                else cfg.MODEL.STUDENT.ARCH
            )
            node[key.rsplit(".", 1)[1]] = yaml.safe_load(value) if isinstance(value, str) else value
        else:
            rest += [key, value]
    cfg.merge_from_list(rest)
    return cfg


def validate_config(cfg: CfgNode) -> None:
    """Fail at once, before anything heavy is built, on settings that cannot work.

    Checks the method name and that every non-empty teacher/student WEIGHTS path exists (the
    message names the file to get and the key to set).
    """
    method = cfg.MODEL.SARD.METHOD
    if method not in METHODS:
        raise ValueError(f"MODEL.SARD.METHOD={method!r}; choose one of {', '.join(METHODS)}")
    for role in ("TEACHER", "STUDENT"):
        if role == "TEACHER" and method == "none":
            continue  # the scratch baseline never builds the teacher
        node = cfg.MODEL[role]
        if node.WEIGHTS and not os.path.exists(node.WEIGHTS):
            raise FileNotFoundError(
                f"MODEL.{role}.WEIGHTS: {node.WEIGHTS!r} does not exist. Get the {node.FAMILY} "
                f"{node.SIZE} checkpoint and put it there, or set MODEL.{role}.WEIGHTS to its path."
            )

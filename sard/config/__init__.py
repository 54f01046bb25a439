"""Configs: ``get_cfg()`` gives detectron2-compatible defaults plus SARD's keys."""

from __future__ import annotations

from typing import Sequence

import yaml
from fvcore.common.config import CfgNode

from .base_defaults import base_config
from .optional import detectron2_available, detectron2_import_error
from .sard_config import add_sard_config
from .validation import ConfigError, check_renamed_keys, check_yaml_file, validate_config

__all__ = [
    "CfgNode",
    "ConfigError",
    "add_sard_config",
    "detectron2_available",
    "detectron2_import_error",
    "get_cfg",
    "load_config",
    "validate_config",
]


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
        check_yaml_file(config_file)
        cfg.merge_from_file(config_file)
    opts = list(opts)
    check_renamed_keys([str(k) for k in opts[0::2]], "command line")
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

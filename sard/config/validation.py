"""Fail at once, before anything heavy is built, on settings that cannot work.

Every message names the key (or file) and the fix. ``check_yaml_file`` runs before a YAML file
is merged; ``validate_config`` on the merged config.
"""

from __future__ import annotations

import math
import os
from typing import Any, List, Optional

import yaml
from fvcore.common.config import CfgNode

from sard.local_paths import require_local_path
from sard.user_errors import UserError

from .sard_config import METHODS


class ConfigError(UserError, ValueError):
    """A config value that cannot work; the message names the key (or file) and the fix."""


def check_local_weights(key: str, path: str, what: str = "checkpoint") -> None:
    """``path`` (the value of ``key``) is empty or an existing local file or folder."""
    if not path:
        return
    require_local_path(path, key)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{key}: {path!r} does not exist. Put the {what} there, or set " f"{key} to its path."
        )


def check_yaml_file(path: str, _chain: Optional[List[str]] = None) -> None:
    """The file and its ``_BASE_`` chain are YAML mappings, and the chain has no cycle."""
    chain = list(_chain or [])
    real = os.path.realpath(path)
    if real in chain:
        loop = " -> ".join(os.path.basename(p) for p in chain + [real])
        raise ConfigError(f"{path}: _BASE_ chain loops back on itself ({loop}); remove the cycle")
    if not os.path.isfile(path):
        where = f" (the _BASE_ of {chain[-1]})" if chain else ""
        raise FileNotFoundError(f"config file not found: {path}{where}")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{path} is not valid YAML: {first}") from None
    if data is None:
        return  # an empty file is an empty mapping
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of KEY: value (like configs/Base-SARD.yaml), "
            f"got a {type(data).__name__}"
        )
    base = data.get("_BASE_")
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: _BASE_ must be one file path, got {base!r}")
        base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
        check_yaml_file(base_path, chain + [real])


def _check(cond: bool, key: str, value: Any, need: str) -> None:
    if not cond:
        raise ConfigError(f"{key}={value!r}: {need}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_solver_values(cfg: CfgNode) -> None:
    """Counts, periods, sizes and rates are of the right type and range."""
    s = cfg.SOLVER
    _check(
        _is_int(s.IMS_PER_BATCH) and s.IMS_PER_BATCH >= 1,
        "SOLVER.IMS_PER_BATCH",
        s.IMS_PER_BATCH,
        "set the global batch size to an integer >= 1",
    )
    _check(
        _is_number(s.MAX_EPOCHS) and s.MAX_EPOCHS >= 0,
        "SOLVER.MAX_EPOCHS",
        s.MAX_EPOCHS,
        "set a number of epochs >= 0 (0 = use SOLVER.MAX_ITER)",
    )
    if not (_is_number(s.MAX_EPOCHS) and s.MAX_EPOCHS > 0):
        _check(
            _is_int(s.MAX_ITER) and s.MAX_ITER >= 1,
            "SOLVER.MAX_ITER",
            s.MAX_ITER,
            "set the number of iterations to an integer >= 1 (or SOLVER.MAX_EPOCHS > 0)",
        )
    for key in ("CHECKPOINT_PERIOD", "LOG_PERIOD"):
        _check(
            _is_int(s[key]) and s[key] >= 1,
            f"SOLVER.{key}",
            s[key],
            "set a period of at least 1 iteration",
        )
    _check(
        _is_int(s.WARMUP_ITERS) and s.WARMUP_ITERS >= 0,
        "SOLVER.WARMUP_ITERS",
        s.WARMUP_ITERS,
        "set an integer >= 0 (0 = no warm-up)",
    )
    _check(
        _is_number(s.WARMUP_FACTOR) and 0 <= s.WARMUP_FACTOR <= 1,
        "SOLVER.WARMUP_FACTOR",
        s.WARMUP_FACTOR,
        "set the warm-up start factor in [0, 1]",
    )
    _check(
        _is_number(s.BASE_LR) and s.BASE_LR > 0,
        "SOLVER.BASE_LR",
        s.BASE_LR,
        "set a finite learning rate > 0",
    )
    _check(
        _is_number(s.WEIGHT_DECAY) and s.WEIGHT_DECAY >= 0,
        "SOLVER.WEIGHT_DECAY",
        s.WEIGHT_DECAY,
        "set a finite weight decay >= 0",
    )
    _check(
        s.AMP.DTYPE in ("", "float16", "bfloat16"),
        "SOLVER.AMP.DTYPE",
        s.AMP.DTYPE,
        'choose "" (float16 on CUDA, bfloat16 on the CPU), "float16" or "bfloat16"',
    )
    if s.AMP.DTYPE == "float16" and s.AMP.ENABLED and not str(cfg.MODEL.DEVICE).startswith("cuda"):
        raise ConfigError(
            'SOLVER.AMP.DTYPE="float16" needs MODEL.DEVICE cuda: autocast on the '
            'CPU runs in bfloat16 (set SOLVER.AMP.DTYPE "" or "bfloat16")'
        )
    clip = s.CLIP_GRADIENTS
    if clip.ENABLED:
        _check(
            clip.CLIP_TYPE in ("full_model", "norm", "value"),
            "SOLVER.CLIP_GRADIENTS.CLIP_TYPE",
            clip.CLIP_TYPE,
            'choose "full_model", "norm" or "value"',
        )
        _check(
            _is_number(clip.CLIP_VALUE) and clip.CLIP_VALUE > 0,
            "SOLVER.CLIP_GRADIENTS.CLIP_VALUE",
            clip.CLIP_VALUE,
            "set a finite value > 0",
        )
    t = cfg.TEST
    for key in ("EVAL_PERIOD", "MAX_IMAGES", "MAX_PROMPTS"):
        _check(_is_int(t[key]) and t[key] >= 0, f"TEST.{key}", t[key], "set an integer >= 0")
    _check(
        _is_int(t.PROMPT_CHUNK) and t.PROMPT_CHUNK >= 1,
        "TEST.PROMPT_CHUNK",
        t.PROMPT_CHUNK,
        "set an integer >= 1",
    )
    _check(
        _is_int(cfg.DATALOADER.NUM_WORKERS) and cfg.DATALOADER.NUM_WORKERS >= 0,
        "DATALOADER.NUM_WORKERS",
        cfg.DATALOADER.NUM_WORKERS,
        "set an integer >= 0",
    )


def check_input_values(cfg: CfgNode) -> None:
    """Image size, scale jitter and prompt counts are usable."""
    i = cfg.INPUT
    size = tuple(i.IMAGE_SIZE) if isinstance(i.IMAGE_SIZE, (list, tuple)) else ()
    _check(
        len(size) == 2 and all(_is_int(v) and v >= 16 for v in size),
        "INPUT.IMAGE_SIZE",
        i.IMAGE_SIZE,
        "set (H, W), two integers >= 16, e.g. (1024, 1024)",
    )
    jitter = tuple(i.SCALE_JITTER) if isinstance(i.SCALE_JITTER, (list, tuple)) else ()
    _check(
        len(jitter) == 2
        and all(_is_number(v) and v > 0 for v in jitter)
        and jitter[0] <= jitter[1],
        "INPUT.SCALE_JITTER",
        i.SCALE_JITTER,
        "set (low, high) with 0 < low <= high, e.g. (1.0, 1.0) for none",
    )
    p = i.PROMPT
    _check(
        _is_int(p.MAX_PROMPTS) and p.MAX_PROMPTS >= 1,
        "INPUT.PROMPT.MAX_PROMPTS",
        p.MAX_PROMPTS,
        "set an integer >= 1",
    )
    _check(
        _is_int(p.NUM_POINTS) and p.NUM_POINTS >= 0,
        "INPUT.PROMPT.NUM_POINTS",
        p.NUM_POINTS,
        "set an integer >= 0",
    )
    _check(
        _is_int(p.NUM_NEG_POINTS) and p.NUM_NEG_POINTS >= 0,
        "INPUT.PROMPT.NUM_NEG_POINTS",
        p.NUM_NEG_POINTS,
        "set an integer >= 0",
    )
    _check(
        _is_number(p.BOX_JITTER) and p.BOX_JITTER >= 0,
        "INPUT.PROMPT.BOX_JITTER",
        p.BOX_JITTER,
        "set a fraction >= 0",
    )


def check_pseudo_label_values(cfg: CfgNode) -> None:
    """MODEL.SARD.PSEUDO_LABELS: counts, thresholds and fractions in range, a promptable pair."""
    p, name = cfg.MODEL.SARD.PSEUDO_LABELS, "MODEL.SARD.PSEUDO_LABELS"
    _check(isinstance(p.ENABLED, bool), f"{name}.ENABLED", p.ENABLED, "set True or False")
    for key in ("POINTS_PER_SIDE", "POINTS_PER_BATCH"):
        _check(_is_int(p[key]) and p[key] >= 1, f"{name}.{key}", p[key], "set an integer >= 1")
    for key in ("CROP_N_LAYERS", "MIN_MASK_REGION_AREA", "MIN_AREA"):
        _check(_is_int(p[key]) and p[key] >= 0, f"{name}.{key}", p[key], "set an integer >= 0")
    for key in ("PRED_IOU_THRESH", "STABILITY_SCORE_THRESH", "BOX_NMS_THRESH"):
        _check(
            _is_number(p[key]) and 0 <= p[key] <= 1,
            f"{name}.{key}",
            p[key],
            "set a threshold in [0, 1]",
        )
    _check(
        _is_number(p.STABILITY_SCORE_OFFSET) and p.STABILITY_SCORE_OFFSET > 0,
        f"{name}.STABILITY_SCORE_OFFSET",
        p.STABILITY_SCORE_OFFSET,
        "set a logit offset > 0",
    )
    _check(
        _is_number(p.MAX_AREA_FRACTION) and 0 < p.MAX_AREA_FRACTION <= 1,
        f"{name}.MAX_AREA_FRACTION",
        p.MAX_AREA_FRACTION,
        "set a fraction of the image in (0, 1] (1 = keep every mask)",
    )
    _check(
        _is_number(p.UNLABELED_FRACTION) and 0 <= p.UNLABELED_FRACTION < 1,
        f"{name}.UNLABELED_FRACTION",
        p.UNLABELED_FRACTION,
        "set a share in [0, 1) (0 = each image once per epoch)",
    )
    promptable = ("sam", "efficient_sam")
    if p.ENABLED and not (
        cfg.MODEL.TEACHER.FAMILY in promptable and cfg.MODEL.STUDENT.FAMILY in promptable
    ):
        raise ConfigError(
            f"{name}.ENABLED needs a promptable pair (MODEL.TEACHER/STUDENT.FAMILY sam or "
            f"efficient_sam), got {cfg.MODEL.TEACHER.FAMILY} -> {cfg.MODEL.STUDENT.FAMILY}"
        )


def validate_config(cfg: CfgNode, *, training: bool = True) -> None:
    """Method, weights paths (local, existing) and every count, period, size and rate.

    ``training`` False (evaluation, export, prediction): the teacher is never built, so its
    weights are not needed.
    """
    method = cfg.MODEL.SARD.METHOD
    if method not in METHODS:
        raise ConfigError(f"MODEL.SARD.METHOD={method!r}; choose one of {', '.join(METHODS)}")
    pseudo = bool(cfg.MODEL.SARD.PSEUDO_LABELS.ENABLED)
    for role in ("TEACHER", "STUDENT"):
        if role == "TEACHER" and ((method == "none" and not pseudo) or not training):
            # The scratch baseline (without pseudo-labels) and evaluation never build it.
            continue
        node = cfg.MODEL[role]
        check_local_weights(
            f"MODEL.{role}.WEIGHTS", node.WEIGHTS, f"{node.FAMILY} {node.SIZE} " "checkpoint"
        )
    check_local_weights("MODEL.WEIGHTS", cfg.MODEL.WEIGHTS, "SARD checkpoint")
    check_solver_values(cfg)
    check_input_values(cfg)
    check_pseudo_label_values(cfg)

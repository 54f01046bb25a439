"""Fail at once, before anything heavy is built, on settings that cannot work.

Every message names the key (or file) and the fix. ``check_yaml_file`` runs before a YAML file
is merged; ``validate_config`` on the merged config.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, List, Optional, Tuple

import yaml
from fvcore.common.config import CfgNode

from sard.local_paths import require_local_path
from sard.user_errors import UserError

from .sard_config import RENAMED_KEYS


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


def _dotted_keys(data: Any, prefix: str = "") -> List[str]:
    if not isinstance(data, dict):
        return []
    keys = []
    for k, v in data.items():
        name = f"{prefix}{k}"
        keys.append(name)
        keys += _dotted_keys(v, name + ".")
    return keys


def check_renamed_keys(keys: List[str], where: str) -> None:
    """A key of an earlier version is an error naming the key it became."""
    for key in keys:
        if key in RENAMED_KEYS:
            raise ConfigError(
                f"{where}: {key} was renamed {RENAMED_KEYS[key]} (each method's "
                "hyperparameters have their own node); rename it there"
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
    check_renamed_keys(_dotted_keys(data), path)
    base = data.get("_BASE_")
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: _BASE_ must be one file path, got {base!r}")
        base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
        check_yaml_file(base_path, chain + [real])


def _int_at_least(low: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _number_in(low: float, high: float = math.inf, low_open: bool = False):
    def ok(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        return (v > low if low_open else v >= low) and v <= high

    return ok


def _pair(item_ok: Callable[[Any], bool], ordered: bool = False) -> Callable[[Any], bool]:
    def ok(v: Any) -> bool:
        pair = tuple(v) if isinstance(v, (list, tuple)) else ()
        return (
            len(pair) == 2 and all(item_ok(x) for x in pair) and (not ordered or pair[0] <= pair[1])
        )

    return ok


def _always(cfg: CfgNode) -> bool:
    return True


def _by_iterations(cfg: CfgNode) -> bool:
    return not _number_in(0, low_open=True)(cfg.SOLVER.MAX_EPOCHS)


def _clipping(cfg: CfgNode) -> bool:
    return bool(cfg.SOLVER.CLIP_GRADIENTS.ENABLED)


# (key, test of its value, what to set, when the rule applies)
VALUE_RULES: List[Tuple[str, Callable[[Any], bool], str, Callable[[CfgNode], bool]]] = [
    ("SOLVER.IMS_PER_BATCH", _int_at_least(1), "set the global batch size to an integer >= 1", _always),
    ("SOLVER.MAX_EPOCHS", _number_in(0), "set a number of epochs >= 0 (0 = use SOLVER.MAX_ITER)", _always),
    ("SOLVER.MAX_ITER", _int_at_least(1), "set the number of iterations to an integer >= 1 (or SOLVER.MAX_EPOCHS > 0)", _by_iterations),
    ("SOLVER.CHECKPOINT_PERIOD", _int_at_least(1), "set a period of at least 1 iteration", _always),
    ("SOLVER.LOG_PERIOD", _int_at_least(1), "set a period of at least 1 iteration", _always),
    ("SOLVER.WARMUP_ITERS", _int_at_least(0), "set an integer >= 0 (0 = no warm-up)", _always),
    ("SOLVER.WARMUP_FACTOR", _number_in(0, 1), "set the warm-up start factor in [0, 1]", _always),
    ("SOLVER.BASE_LR", _number_in(0, low_open=True), "set a finite learning rate > 0", _always),
    ("SOLVER.WEIGHT_DECAY", _number_in(0), "set a finite weight decay >= 0", _always),
    ("SOLVER.AMP.DTYPE", lambda v: v in ("", "float16", "bfloat16"), 'choose "" (float16 on CUDA, bfloat16 on the CPU), "float16" or "bfloat16"', _always),
    ("SOLVER.CLIP_GRADIENTS.CLIP_TYPE", lambda v: v in ("full_model", "norm", "value"), 'choose "full_model", "norm" or "value"', _clipping),
    ("SOLVER.CLIP_GRADIENTS.CLIP_VALUE", _number_in(0, low_open=True), "set a finite value > 0", _clipping),
    ("TEST.EVAL_PERIOD", _int_at_least(0), "set an integer >= 0 (0 = only at the end)", _always),
    ("TEST.MAX_IMAGES", _int_at_least(0), "set an integer >= 0 (0 = all)", _always),
    ("TEST.MAX_PROMPTS", _int_at_least(0), "set an integer >= 0 (0 = every instance)", _always),
    ("TEST.PROMPT_CHUNK", _int_at_least(1), "set an integer >= 1", _always),
    ("DATALOADER.NUM_WORKERS", _int_at_least(0), "set an integer >= 0", _always),
    ("INPUT.IMAGE_SIZE", _pair(_int_at_least(16)), "set (H, W), two integers >= 16, e.g. (1024, 1024)", _always),
    ("INPUT.SCALE_JITTER", _pair(_number_in(0, low_open=True), ordered=True), "set (low, high) with 0 < low <= high, e.g. (1.0, 1.0) for none", _always),
    ("INPUT.PROMPT.MAX_PROMPTS", _int_at_least(1), "set an integer >= 1", _always),
    ("INPUT.PROMPT.NUM_POINTS", _int_at_least(0), "set an integer >= 0", _always),
    ("INPUT.PROMPT.NUM_NEG_POINTS", _int_at_least(0), "set an integer >= 0", _always),
    ("INPUT.PROMPT.BOX_JITTER", _number_in(0), "set a fraction >= 0", _always),
    ("MODEL.SARD.PSEUDO_LABELS.ENABLED", lambda v: isinstance(v, bool), "set True or False", _always),
    ("MODEL.SARD.PSEUDO_LABELS.POINTS_PER_SIDE", _int_at_least(1), "set an integer >= 1", _always),
    ("MODEL.SARD.PSEUDO_LABELS.POINTS_PER_BATCH", _int_at_least(1), "set an integer >= 1", _always),
    ("MODEL.SARD.PSEUDO_LABELS.CROP_N_LAYERS", _int_at_least(0), "set an integer >= 0", _always),
    ("MODEL.SARD.PSEUDO_LABELS.MIN_MASK_REGION_AREA", _int_at_least(0), "set an integer >= 0", _always),
    ("MODEL.SARD.PSEUDO_LABELS.MIN_AREA", _int_at_least(0), "set an integer >= 0", _always),
    ("MODEL.SARD.PSEUDO_LABELS.PRED_IOU_THRESH", _number_in(0, 1), "set a threshold in [0, 1]", _always),
    ("MODEL.SARD.PSEUDO_LABELS.STABILITY_SCORE_THRESH", _number_in(0, 1), "set a threshold in [0, 1]", _always),
    ("MODEL.SARD.PSEUDO_LABELS.BOX_NMS_THRESH", _number_in(0, 1), "set a threshold in [0, 1]", _always),
    ("MODEL.SARD.PSEUDO_LABELS.STABILITY_SCORE_OFFSET", _number_in(0, low_open=True), "set a logit offset > 0", _always),
    ("MODEL.SARD.PSEUDO_LABELS.MAX_AREA_FRACTION", _number_in(0, 1, low_open=True), "set a fraction of the image in (0, 1] (1 = keep every mask)", _always),
    ("MODEL.SARD.PSEUDO_LABELS.UNLABELED_FRACTION", lambda v: _number_in(0)(v) and v < 1, "set a share in [0, 1) (0 = each image once per epoch)", _always),
]  # fmt: skip


def _value(cfg: CfgNode, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def check_values(cfg: CfgNode) -> None:
    """Every count, period, size and rate of ``VALUE_RULES`` has the right type and range."""
    for key, ok, need, applies in VALUE_RULES:
        if applies(cfg) and not ok(_value(cfg, key)):
            raise ConfigError(f"{key}={_value(cfg, key)!r}: {need}")
    s = cfg.SOLVER
    if s.AMP.DTYPE == "float16" and s.AMP.ENABLED and not str(cfg.MODEL.DEVICE).startswith("cuda"):
        raise ConfigError(
            'SOLVER.AMP.DTYPE="float16" needs MODEL.DEVICE cuda: autocast on the CPU runs in '
            'bfloat16 (set SOLVER.AMP.DTYPE "" or "bfloat16")'
        )


def check_pseudo_label_values(cfg: CfgNode) -> None:
    """MODEL.SARD.PSEUDO_LABELS.ENABLED needs a promptable teacher and student."""
    from sard.models.base import PROMPTABLE_FAMILIES, is_promptable_family

    t, st = cfg.MODEL.TEACHER.FAMILY, cfg.MODEL.STUDENT.FAMILY
    promptable = is_promptable_family(t) and is_promptable_family(st)
    if cfg.MODEL.SARD.PSEUDO_LABELS.ENABLED and not promptable:
        raise ConfigError(
            "MODEL.SARD.PSEUDO_LABELS.ENABLED needs a promptable pair (MODEL.TEACHER/STUDENT.FAMILY"
            f" {' or '.join(PROMPTABLE_FAMILIES)}), got {t} -> {st}"
        )


def validate_config(cfg: CfgNode, *, training: bool = True) -> None:
    """Method, weights paths (local, existing) and every count, period, size and rate.

    ``training`` False (evaluation, export, prediction): the teacher is never built, so its
    weights are not needed.
    """
    from sard.losses.registry import method_names

    method = cfg.MODEL.SARD.METHOD
    if method not in method_names():
        raise ConfigError(
            f"MODEL.SARD.METHOD={method!r}; choose one of {', '.join(method_names())}"
        )
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
    check_values(cfg)
    check_pseudo_label_values(cfg)

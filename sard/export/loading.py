"""Config + checkpoint -> the bare student, for export and prediction (no teacher is built)."""

from __future__ import annotations

import logging
import os
import warnings
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
from fvcore.common.config import CfgNode

logger = logging.getLogger(__name__)


def load_student(
    config_file: str, opts: Sequence[str] = (), *, require_weights: bool = True
) -> Tuple[CfgNode, nn.Module]:
    """(config, student in eval mode on the CPU) from a SARD config and ``KEY VALUE`` opts.

    Weights come from ``MODEL.WEIGHTS`` (a SARD training checkpoint such as
    ``OUTPUT_DIR/model_final.pth``, whose ``student.*`` entries are taken, or a bare student
    state dict), else ``MODEL.STUDENT.WEIGHTS``. With neither, ``require_weights`` makes it an
    error (an untrained student is rarely what one means to deploy).
    """
    from sard.config import load_config
    from sard.distill import build_member
    from sard.local_paths import require_local_path

    cfg = load_config(config_file, list(opts))
    weights = cfg.MODEL.WEIGHTS or cfg.MODEL.STUDENT.WEIGHTS
    if not weights and require_weights:
        raise ValueError(
            f"{config_file}: no student weights given. Add `MODEL.WEIGHTS path/to/model_final.pth` "
            "(a SARD training checkpoint or a bare student state dict) to the command line."
        )
    key = "MODEL.WEIGHTS" if cfg.MODEL.WEIGHTS else "MODEL.STUDENT.WEIGHTS"
    if weights:
        require_local_path(weights, key)  # a URL is refused: nothing is ever downloaded
    if weights and not os.path.isfile(weights):
        raise FileNotFoundError(f"{key}: checkpoint {weights!r} does not exist")
    cfg.defrost()
    cfg.MODEL.STUDENT.WEIGHTS = weights
    # The family builder warns "random initialisation" before build_member loads WEIGHTS into
    # the model; with weights given that warning is false, so it is held back here.
    quiet = logging.getLogger("sard.models.checkpoint")
    level = quiet.level
    with warnings.catch_warnings():
        if weights or not require_weights:
            warnings.filterwarnings("ignore", message=".*random(ly)? initiali[sz]")
            quiet.setLevel(logging.ERROR)
        try:
            student = build_member(cfg, cfg.MODEL.STUDENT, "student")
        finally:
            quiet.setLevel(level)
    return cfg, student.eval()


def config_resize_mode(cfg: CfgNode) -> str:
    """How the training mapper resized images for this config's student."""
    from sard.config.sard_config import resize_mode
    from sard.models.base import is_promptable_family

    return resize_mode(cfg) if is_promptable_family(cfg.MODEL.STUDENT.FAMILY) else "fit_pad"


def pick_device(requested: Optional[str]) -> torch.device:
    """``requested`` ("cpu", "cuda", "cuda:1"), falling back to the CPU with a warning when CUDA
    is asked for but absent (export and prediction work on either)."""
    device = torch.device(requested or "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        warnings.warn(
            f"device {requested!r} requested but CUDA is not available; using the CPU",
            stacklevel=2,
        )
        return torch.device("cpu")
    return device

"""The training contract: what both engines do with one YAML.

``effective_config(cfg, num_train_images)`` turns a merged config and the size of the training
set into the frozen config that the built-in trainer and the detectron2 Trainer both train by:

* iterations: ``SOLVER.MAX_EPOCHS > 0`` sets ``SOLVER.MAX_ITER = ceil(epochs * images /
  IMS_PER_BATCH)`` (images = every image of ``DATASETS.TRAIN``, which detectron2 keeps too since
  SARD turns ``DATALOADER.FILTER_EMPTY_ANNOTATIONS`` off); otherwise ``MAX_ITER`` as given;
* the LR schedule (warm-up, then cosine or poly decay) spans exactly those ``MAX_ITER``
  iterations, so the LR of the last iteration is about 0 (``sard.engine.solver``);
* ``MODEL.DEVICE`` "cuda" (or "cuda:N") becomes "cpu", with a warning, where CUDA is absent;
* gradient clipping, evaluation limits and log period are read from the same keys by both
  engines (``SOLVER.CLIP_GRADIENTS``, ``TEST.EVAL_PERIOD``, ``TEST.MAX_IMAGES``,
  ``SOLVER.LOG_PERIOD``); evaluation always maps images in the main process;
* both engines make CPU arithmetic flush subnormal floats to zero
  (``sard.engine.subnormals.flush_subnormal_floats``: the same numbers, faster CPU steps).

``effective_settings(cfg)`` lists those settings as a plain dict, for logs and tests.
The function is idempotent: applying it to its own output changes nothing.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, Optional

from fvcore.common.config import CfgNode

logger = logging.getLogger(__name__)


def effective_max_iter(cfg: CfgNode, num_train_images: int) -> int:
    """``ceil(MAX_EPOCHS * num_train_images / IMS_PER_BATCH)`` if MAX_EPOCHS > 0, else MAX_ITER."""
    epochs = float(cfg.SOLVER.MAX_EPOCHS)
    if epochs > 0:
        if num_train_images <= 0:
            raise ValueError(
                f"SOLVER.MAX_EPOCHS={cfg.SOLVER.MAX_EPOCHS} needs a training set, but "
                f"DATASETS.TRAIN={tuple(cfg.DATASETS.TRAIN)} has no image: fix DATASETS.TRAIN "
                "or set SOLVER.MAX_EPOCHS 0 and SOLVER.MAX_ITER"
            )
        return max(1, math.ceil(epochs * num_train_images / int(cfg.SOLVER.IMS_PER_BATCH)))
    return int(cfg.SOLVER.MAX_ITER)


def effective_device(device: str) -> str:
    """``device``, or "cpu" when it names CUDA and CUDA is not available (with a warning)."""
    import torch

    if str(device).startswith("cuda") and not torch.cuda.is_available():
        logger.warning("MODEL.DEVICE=%s but CUDA is not available: using the CPU", device)
        return "cpu"
    return str(device)


def effective_config(cfg: CfgNode, num_train_images: Optional[int]) -> CfgNode:
    """A frozen copy of ``cfg`` with the contract applied (see the module docstring).

    ``num_train_images`` None: no training follows (evaluation only), MAX_ITER is left alone.
    """
    out = cfg.clone()
    out.defrost()
    if num_train_images is not None:
        out.SOLVER.MAX_ITER = effective_max_iter(cfg, num_train_images)
    out.MODEL.DEVICE = effective_device(cfg.MODEL.DEVICE)
    out.freeze()
    return out


def effective_settings(cfg: CfgNode) -> Dict[str, Any]:
    """What a trainer does with an effective config, as plain values (both engines agree)."""
    s, clip = cfg.SOLVER, cfg.SOLVER.CLIP_GRADIENTS
    return {
        "max_iter": int(s.MAX_ITER),
        "ims_per_batch": int(s.IMS_PER_BATCH),
        "lr_scheduler": str(s.LR_SCHEDULER_NAME),
        "base_lr": float(s.BASE_LR),
        "schedule_iters": int(s.MAX_ITER),
        "warmup_iters": int(s.WARMUP_ITERS),
        "warmup_factor": float(s.WARMUP_FACTOR),
        "weight_decay": float(s.WEIGHT_DECAY),
        "clip": (
            (str(clip.CLIP_TYPE), float(clip.CLIP_VALUE), float(clip.NORM_TYPE))
            if clip.ENABLED
            else None
        ),
        "amp": (str(s.AMP.DTYPE) or "auto") if s.AMP.ENABLED else None,
        "checkpoint_period": int(s.CHECKPOINT_PERIOD),
        "log_period": int(s.LOG_PERIOD),
        "eval_period": int(cfg.TEST.EVAL_PERIOD),
        "test_max_images": int(cfg.TEST.MAX_IMAGES),
        "eval_num_workers": 0,
        "device": str(cfg.MODEL.DEVICE),
        "seed": int(cfg.SEED),
    }


def describe_contract(cfg: CfgNode, num_train_images: int) -> str:
    """One log line saying how many iterations, which schedule, clipping and evaluation."""
    s = cfg.SOLVER
    if float(s.MAX_EPOCHS) > 0:
        how = f"{s.MAX_EPOCHS:g} epochs x {num_train_images} images / batch {s.IMS_PER_BATCH}"
    else:
        how = "SOLVER.MAX_ITER"
    clip = s.CLIP_GRADIENTS
    clipping = f"{clip.CLIP_TYPE} at {clip.CLIP_VALUE:g}" if clip.ENABLED else "off"
    evaluation = (
        f"every {cfg.TEST.EVAL_PERIOD} iterations and at the end"
        if cfg.TEST.EVAL_PERIOD > 0
        else "at the end"
    )
    limit = f" on the first {cfg.TEST.MAX_IMAGES} images" if cfg.TEST.MAX_IMAGES > 0 else ""
    return (
        f"training contract: {s.MAX_ITER} iterations ({how}); {s.LR_SCHEDULER_NAME} over "
        f"{s.MAX_ITER} iterations after {s.WARMUP_ITERS} warm-up; gradient clipping {clipping}; "
        f"evaluation {evaluation}{limit}; metrics every {s.LOG_PERIOD} iterations; device "
        f"{cfg.MODEL.DEVICE}"
    )

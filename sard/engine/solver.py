"""Optimizer and learning-rate schedule: AdamW, linear warmup, cosine or poly decay.

The schedule is fvcore's parameter schedulers (the ones detectron2 uses) wrapped in a LambdaLR:
``lr(it) = BASE_LR * warmup(it) * decay(it / MAX_ITER)`` with
``warmup(it) = f + (1 - f) * it / WARMUP_ITERS`` for ``it < WARMUP_ITERS`` (else 1),
f = WARMUP_FACTOR, and ``decay`` = ``CosineParamScheduler(1, 0)`` or
``PolynomialDecayParamScheduler(1, POLY_LR_POWER)``.
"""

from __future__ import annotations

from typing import Iterable

import torch
from fvcore.common.config import CfgNode
from fvcore.common.param_scheduler import CosineParamScheduler, PolynomialDecayParamScheduler


def trainable_parameters(model: torch.nn.Module) -> Iterable[torch.nn.Parameter]:
    """Parameters that require grad (a FrozenTeacher contributes none)."""
    return [p for p in model.parameters() if p.requires_grad]


def build_optimizer(cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; no weight decay on norms and biases (1-D tensors)."""
    if str(cfg.SOLVER.OPTIMIZER).upper() != "ADAMW":
        raise ValueError(f"SOLVER.OPTIMIZER={cfg.SOLVER.OPTIMIZER!r}: SARD supports only ADAMW")
    params = trainable_parameters(model)
    if not params:
        raise ValueError("the model has no trainable parameters")
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.SOLVER.WEIGHT_DECAY}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=cfg.SOLVER.BASE_LR)


def lr_multiplier(cfg: CfgNode):
    """The function ``it -> lr / BASE_LR`` described in the module docstring."""
    name = cfg.SOLVER.LR_SCHEDULER_NAME
    if name == "WarmupCosineLR":
        decay = CosineParamScheduler(1.0, 0.0)
    elif name == "WarmupPolyLR":
        decay = PolynomialDecayParamScheduler(1.0, cfg.SOLVER.POLY_LR_POWER)
    else:
        raise ValueError(f"SOLVER.LR_SCHEDULER_NAME={name!r}: use WarmupCosineLR or WarmupPolyLR")
    max_iter = max(1, int(cfg.SOLVER.MAX_ITER))
    warmup_iters = int(cfg.SOLVER.WARMUP_ITERS)
    factor = float(cfg.SOLVER.WARMUP_FACTOR)

    def multiplier(it: int) -> float:
        warm = factor + (1 - factor) * it / warmup_iters if it < warmup_iters else 1.0
        return warm * decay(min(it, max_iter - 1) / max_iter)

    return multiplier


def build_lr_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(cfg))


def clip_gradients(cfg: CfgNode, params) -> None:
    """Apply SOLVER.CLIP_GRADIENTS (whole-model norm, per-parameter norm, or value)."""
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if not clip.ENABLED:
        return
    params = [p for p in params if p.grad is not None]
    if clip.CLIP_TYPE == "value":
        torch.nn.utils.clip_grad_value_(params, clip.CLIP_VALUE)
    elif clip.CLIP_TYPE == "norm":
        for p in params:
            torch.nn.utils.clip_grad_norm_([p], clip.CLIP_VALUE, clip.NORM_TYPE)
    elif clip.CLIP_TYPE == "full_model":
        torch.nn.utils.clip_grad_norm_(params, clip.CLIP_VALUE, clip.NORM_TYPE)
    else:
        raise ValueError(f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE={clip.CLIP_TYPE!r} is unknown")

"""Optimizer and learning-rate schedule: AdamW, linear warmup, cosine or poly decay.

The schedule is fvcore's parameter schedulers (the ones detectron2 uses) wrapped in a LambdaLR:
``lr(it) = BASE_LR * warmup(it) * decay(it / MAX_ITER)`` with
``warmup(it) = f + (1 - f) * it / WARMUP_ITERS`` for ``it < WARMUP_ITERS`` (else 1),
f = WARMUP_FACTOR, and ``decay`` = ``CosineParamScheduler(1, 0)`` or
``PolynomialDecayParamScheduler(1, POLY_LR_POWER)``.
"""

from __future__ import annotations

from typing import Callable, Iterable, List, Optional

import torch
from fvcore.common.config import CfgNode
from fvcore.common.param_scheduler import CosineParamScheduler, PolynomialDecayParamScheduler


def trainable_parameters(model: torch.nn.Module) -> Iterable[torch.nn.Parameter]:
    """Parameters that require grad (a FrozenTeacher contributes none)."""
    return [p for p in model.parameters() if p.requires_grad]


def build_optimizer(cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; no weight decay on norms and biases (1-D tensors).

    With ``SOLVER.CLIP_GRADIENTS.ENABLED`` the optimizer clips its own gradients at the start of
    every ``step()`` (as Mask2Former's trainer does for "full_model"), so both engines clip the
    same way whoever calls ``step`` (detectron2's trainers, a GradScaler, or ours). Under a
    GradScaler, ``scaler.step`` unscales before calling ``step``, so clipping sees true gradients.
    """
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
    clip = gradient_clipper(cfg)
    if clip is None:
        return torch.optim.AdamW(groups, lr=cfg.SOLVER.BASE_LR)
    return ClippingAdamW(groups, lr=cfg.SOLVER.BASE_LR, clip=clip)


class ClippingAdamW(torch.optim.AdamW):
    """AdamW whose ``step`` first applies ``clip`` to the gradients of its parameters."""

    def __init__(self, params, *, clip: Callable[[List[torch.nn.Parameter]], None], **kwargs):
        super().__init__(params, **kwargs)
        self.clip = clip

    def step(self, closure=None):
        self.clip([p for group in self.param_groups for p in group["params"]])
        return super().step(closure)


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


def gradient_clipper(cfg: CfgNode) -> Optional[Callable[[List[torch.nn.Parameter]], None]]:
    """``SOLVER.CLIP_GRADIENTS`` as a function of the parameters (None when disabled).

    "full_model": one norm over all gradients, scaled to at most CLIP_VALUE; "norm": the same
    per parameter; "value": every gradient entry clamped to [-CLIP_VALUE, CLIP_VALUE].
    """
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if not clip.ENABLED:
        return None
    kind, value, norm_type = clip.CLIP_TYPE, float(clip.CLIP_VALUE), float(clip.NORM_TYPE)
    if kind not in ("full_model", "norm", "value"):
        raise ValueError(
            f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE={kind!r}: choose full_model, norm or value"
        )

    def apply(params: List[torch.nn.Parameter]) -> None:
        params = [p for p in params if p.grad is not None]
        if not params:
            return
        if kind == "value":
            torch.nn.utils.clip_grad_value_(params, value)
        elif kind == "norm":
            for p in params:
                torch.nn.utils.clip_grad_norm_([p], value, norm_type)
        else:
            torch.nn.utils.clip_grad_norm_(params, value, norm_type)

    return apply

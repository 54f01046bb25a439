"""One training step, shared by the built-in trainer and the detectron2 Trainer.

``forward_backward``: set the distiller's iteration (for the distillation warm-up), forward under
autocast, refuse a non-finite loss BEFORE any gradient or weight changes, backward (scaled when
a GradScaler is active). ``optimizer_step``: ``scaler.step`` (which unscales, then calls the
optimizer's ``step``, which clips: ``sard.engine.solver``) and ``scaler.update``.

Mixed precision (``SOLVER.AMP.ENABLED``), in both engines: ``SOLVER.AMP.DTYPE`` "" means float16
with a GradScaler on CUDA and bfloat16 on the CPU; "bfloat16" never needs a GradScaler.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List

import torch
from fvcore.common.config import CfgNode

from sard.user_errors import UserError


class NonFiniteLossError(FloatingPointError):
    """The loss of ``iteration`` is NaN or Inf; the weights were not touched."""

    def __init__(self, iteration: int, terms: Dict[str, float]) -> None:
        total = sum(terms.values())
        super().__init__(f"loss became {total} at iteration {iteration} (terms: {terms})")
        self.iteration = iteration
        self.terms = terms


class TrainingDiverged(UserError, FloatingPointError):
    """Training stopped on a non-finite loss; the message names the last good checkpoint."""


def nonfinite_loss_message(err: NonFiniteLossError, last_good: str | None) -> str:
    """What to tell the user when training stops on ``err``."""
    where = (
        f"the last good checkpoint is {last_good} (last_checkpoint names it, so --resume "
        "continues from it)"
        if last_good
        else "no checkpoint was saved before it"
    )
    return (
        f"{err}. Training stopped; {where}. Lower SOLVER.BASE_LR, enable "
        "SOLVER.CLIP_GRADIENTS, or raise SOLVER.WARMUP_ITERS."
    )


@dataclass
class Precision:
    """Autocast settings and the GradScaler (a disabled one when not needed)."""

    enabled: bool
    dtype: torch.dtype
    device_type: str
    scaler: torch.amp.GradScaler

    @classmethod
    def from_cfg(cls, cfg: CfgNode, device: torch.device) -> "Precision":
        enabled = bool(cfg.SOLVER.AMP.ENABLED)
        dtype = str(cfg.SOLVER.AMP.DTYPE) or ("float16" if device.type == "cuda" else "bfloat16")
        fp16 = enabled and dtype == "float16"
        return cls(
            enabled=enabled,
            dtype=torch.float16 if fp16 else torch.bfloat16,
            device_type=device.type,
            scaler=torch.amp.GradScaler(device.type, enabled=fp16),
        )


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def forward_backward(
    model: torch.nn.Module,
    batch: List[Dict],
    optimizer: torch.optim.Optimizer,
    precision: Precision,
    iteration: int,
) -> Dict[str, torch.Tensor]:
    """Losses of ``batch`` (detached), with gradients accumulated in the parameters.

    Raises ``NonFiniteLossError`` before the backward pass when the total is NaN or Inf.
    """
    _unwrap(model).iteration = iteration  # the distiller ramps its distillation terms by it
    with torch.autocast(precision.device_type, dtype=precision.dtype, enabled=precision.enabled):
        loss_dict = model(batch)
    total = sum(loss_dict.values())
    if not torch.isfinite(total):
        raise NonFiniteLossError(iteration, {k: float(v.detach()) for k, v in loss_dict.items()})
    optimizer.zero_grad(set_to_none=True)
    precision.scaler.scale(total).backward()
    return {k: v.detach() for k, v in loss_dict.items()}


def optimizer_step(optimizer: torch.optim.Optimizer, precision: Precision) -> None:
    """Unscale (if scaled), clip (inside the optimizer), step, update the scale."""
    precision.scaler.step(optimizer)
    precision.scaler.update()

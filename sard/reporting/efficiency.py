"""Parameters, GFLOPs and latency of a deployed model, measured the same way for every row.

GFLOPs are counted once with ``torch.utils.flop_counter`` (2 × multiply-adds; attention is
routed through the math SDPA kernel, the one the counter can see). Latency is the median of
``reps`` timed runs after ``warmup`` runs (robust to a busy machine), GPU synchronised.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class Efficiency:
    """params_m: parameters in millions; gflops and latency_ms per image."""

    params_m: float
    gflops: float
    latency_ms: float

    def as_dict(self) -> Dict[str, float]:
        """{"params_m", "gflops", "latency_ms"} for JSON."""
        return asdict(self)


def count_params(module: nn.Module) -> float:
    """Parameters of ``module`` in millions (buffers excluded)."""
    return sum(p.numel() for p in module.parameters()) / 1e6


def count_gflops(step: Callable[[], object], batch: int = 1) -> float:
    """GFLOPs per image of one call of ``step`` that processes ``batch`` images."""
    if batch <= 0:
        raise ValueError(f"batch must be positive, got {batch}")
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops() / 1e9 / batch


def time_ms(step: Callable[[], object], device: str, warmup: int = 1, reps: int = 3) -> float:
    """Median wall time of ``step`` in milliseconds over ``reps`` runs after ``warmup`` runs."""
    if reps <= 0:
        raise ValueError(f"reps must be positive, got {reps}")
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    for _ in range(warmup):
        step()
    times = []
    for _ in range(reps):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def deployed_module(model: nn.Module) -> nn.Module:
    """The part of a model that runs at inference: a distiller's student, else the model."""
    return getattr(model, "student", None) or model


def measure_inference(
    model: nn.Module,
    sample: Dict,
    *,
    warmup: int = 1,
    reps: int = 3,
    device: Optional[str] = None,
) -> Efficiency:
    """Params of the deployed module, GFLOPs and latency of ``model([sample])`` in eval mode.

    ``model`` follows the distiller contract (a list of mapper dicts in, predictions out; only
    the student runs), so the figures cover exactly what evaluation runs for one image: image
    encoder, every prompt of ``sample`` through the decoder, and resizing to the original size.
    """
    device = device or str(next(deployed_module(model).parameters()).device)
    was_training = model.training
    model.eval()
    step = lambda: model([sample])  # noqa: E731
    try:
        with torch.inference_mode():
            gflops = count_gflops(step, 1)
            latency = time_ms(step, device, warmup, reps)
    finally:
        model.train(was_training)
    return Efficiency(count_params(deployed_module(model)), gflops, latency)

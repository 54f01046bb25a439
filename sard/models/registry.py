"""One way in: every teacher and student is built by family name from a registry.

``build_model(family, size=..., image_size=..., weights=..., **overrides)`` looks the family up
and calls its builder. Builders are registered with ``@register_model("family")`` in the module
that implements the family; importing ``sard.models`` imports them all.
"""
from __future__ import annotations

from typing import Callable, Dict

import torch.nn as nn

MODEL_REGISTRY: Dict[str, Callable[..., nn.Module]] = {}


def register_model(family: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register ``builder(size, image_size, weights, **overrides) -> nn.Module``."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if family in MODEL_REGISTRY:
            raise KeyError(f"model family {family!r} is registered twice")
        MODEL_REGISTRY[family] = builder
        return builder

    return wrap


def build_model(family: str, **kwargs) -> nn.Module:
    """Build a model of ``family`` (e.g. "sam", "efficient_sam", "mask2former")."""
    if family not in MODEL_REGISTRY:
        known = ", ".join(sorted(MODEL_REGISTRY)) or "none"
        raise KeyError(f"unknown model family {family!r}; registered families: {known}")
    return MODEL_REGISTRY[family](**kwargs)

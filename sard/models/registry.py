"""One way in: every teacher and student is built by family name from a registry.

``build_model(family, size=..., image_size=..., weights=..., **overrides)`` looks the family up
and calls its builder. Builders are registered with ``@register_model("family")`` in the module
that implements the family; importing ``sard.models`` imports them all.
"""

from __future__ import annotations

import importlib
from typing import Callable, Dict

import torch.nn as nn

MODEL_REGISTRY: Dict[str, Callable[..., nn.Module]] = {}

# Families whose modules pull in heavy libraries (transformers, timm) are imported on first use,
# so `import sard.models` stays fast for SAM-only users.
LAZY_FAMILIES: Dict[str, str] = {
    "mask2former": "sard.models.mask2former",
    "vit_semantic": "sard.models.vit_semantic",
}


def register_model(family: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register ``builder(size, image_size, weights, **overrides) -> nn.Module``."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if family in MODEL_REGISTRY:
            raise KeyError(f"model family {family!r} is registered twice")
        MODEL_REGISTRY[family] = builder
        return builder

    return wrap


def model_builder(family: str) -> Callable[..., nn.Module]:
    """The registered builder of ``family``, importing a lazy family's module first."""
    if family not in MODEL_REGISTRY and family in LAZY_FAMILIES:
        importlib.import_module(LAZY_FAMILIES[family])
    if family not in MODEL_REGISTRY:
        known = ", ".join(sorted(set(MODEL_REGISTRY) | set(LAZY_FAMILIES)))
        raise KeyError(f"unknown model family {family!r}; registered families: {known}")
    return MODEL_REGISTRY[family]


def build_model(family: str, **kwargs) -> nn.Module:
    """Build a model of ``family`` (e.g. "sam", "efficient_sam", "mask2former")."""
    return model_builder(family)(**kwargs)

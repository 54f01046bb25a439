"""Registers ``SARDDistiller`` with detectron2's META_ARCH_REGISTRY.

The class is ``sard.distill.SARDDistiller`` with detectron2's ``@configurable`` constructor, so
``detectron2.modeling.build_model(cfg)`` builds it from ``MODEL.META_ARCHITECTURE: SARDDistiller``.
"""

from __future__ import annotations

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY

from sard.distill import SARDDistiller as _SARDDistiller
from sard.distill import distiller_kwargs


@META_ARCH_REGISTRY.register()
class SARDDistiller(_SARDDistiller):
    """Frozen teacher + trainable student + SARD head, built from a detectron2 config."""

    @configurable
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)

    @classmethod
    def from_config(cls, cfg):
        return distiller_kwargs(cfg)

"""SARD as a detectron2 project: config keys, the registered meta-architecture, the evaluator."""

from sard.config import add_sard_config

from .meta_arch import SARDDistiller

__all__ = ["SARDDistiller", "add_sard_config"]

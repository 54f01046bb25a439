"""EfficientSAM implemented in sard from its published architecture (not on PyPI)."""

from .model import EFFICIENT_SAM_SIZES, EfficientSam, build_efficient_sam

__all__ = ["EFFICIENT_SAM_SIZES", "EfficientSam", "build_efficient_sam"]

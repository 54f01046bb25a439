"""SARD's losses (L_FC, L_DA, Dice+BCE) and the distillation baselines it is compared with.

Build a distillation loss by name with ``build_distillation_loss(method, ...)``; every one
returns a dict of named, already weighted terms, summed with ``total_loss``.
"""

from .cwd import ChannelWiseDistillationLoss
from .dkd import DKDLoss
from .factory import DISTILLATION_METHODS, NoDistillation, build_distillation_loss, total_loss
from .logit_kd import LogitKDLoss, PixelwiseKDLoss
from .mgd import MGDLoss
from .prompt_mask import PromptMaskLoss
from .representation import DistributionAlignmentLoss, FeatureConsistencyLoss
from .review_kd import AttentionBasedFusion, ReviewKDLoss, hierarchical_context_loss
from .sard_head import SARDDistillationHead, normalize_per_position

__all__ = [
    "AttentionBasedFusion",
    "ChannelWiseDistillationLoss",
    "DISTILLATION_METHODS",
    "DKDLoss",
    "DistributionAlignmentLoss",
    "FeatureConsistencyLoss",
    "LogitKDLoss",
    "MGDLoss",
    "NoDistillation",
    "PixelwiseKDLoss",
    "PromptMaskLoss",
    "ReviewKDLoss",
    "SARDDistillationHead",
    "build_distillation_loss",
    "hierarchical_context_loss",
    "normalize_per_position",
    "total_loss",
]

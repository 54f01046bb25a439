"""SARD's losses (L_FC, L_DA, Dice+BCE) and the distillation baselines it is compared with.

Every method registers itself in its own file (``sard.losses.registry``); build one from a config
with ``get_method(name).from_config(cfg, inputs)`` or by name with explicit hyper-parameters with
``build_distillation_loss(method, ...)``. Every one returns a dict of named, already weighted
terms, summed with ``total_loss``.
"""

from ._common import resize_labels, resize_to
from .base import DistillationLoss, DistillationPair
from .cwd import ChannelWiseDistillationLoss
from .dkd import DKDLoss
from .factory import build_distillation_loss, total_loss
from .logit_kd import LogitKDLoss, PixelwiseKDLoss
from .mgd import MGDLoss
from .prompt_mask import PromptMaskLoss
from .registry import DistillationMethod, MethodInputs, get_method, method_names
from .representation import DistributionAlignmentLoss, FeatureConsistencyLoss
from .review_kd import AttentionBasedFusion, ReviewKDLoss, hierarchical_context_loss
from .sard_head import SARDDistillationHead, normalize_per_position

__all__ = [
    "AttentionBasedFusion",
    "ChannelWiseDistillationLoss",
    "DKDLoss",
    "DistillationLoss",
    "DistillationMethod",
    "DistillationPair",
    "DistributionAlignmentLoss",
    "FeatureConsistencyLoss",
    "LogitKDLoss",
    "MethodInputs",
    "MGDLoss",
    "PixelwiseKDLoss",
    "PromptMaskLoss",
    "ReviewKDLoss",
    "SARDDistillationHead",
    "build_distillation_loss",
    "get_method",
    "hierarchical_context_loss",
    "method_names",
    "normalize_per_position",
    "resize_labels",
    "resize_to",
    "total_loss",
]

"""Teachers and students: SAM, EfficientSAM, Mask2Former and friends, behind one registry.

Importing this package imports every family module so that its ``@register_model`` runs.
"""

from sard.local_paths import RemoteWeightsError, require_local_path

from .base import PromptableOutput, Prompts, SemanticOutput
from .checkpoint import (
    CheckpointMismatchError,
    CorruptCheckpointError,
    LoadReport,
    UnsafeCheckpointError,
    load_checkpoint,
    read_state_dict,
)
from .efficient_sam import EfficientSam, build_efficient_sam
from .frozen import FrozenTeacher
from .registry import MODEL_REGISTRY, build_model, model_builder, register_model
from .sam import SamModel, build_sam

# Semantic families (mask2former, vit_semantic) are imported by build_model on first use.

__all__ = [
    "MODEL_REGISTRY",
    "CheckpointMismatchError",
    "CorruptCheckpointError",
    "EfficientSam",
    "FrozenTeacher",
    "LoadReport",
    "PromptableOutput",
    "Prompts",
    "SamModel",
    "RemoteWeightsError",
    "SemanticOutput",
    "UnsafeCheckpointError",
    "build_efficient_sam",
    "build_model",
    "build_sam",
    "model_builder",
    "load_checkpoint",
    "read_state_dict",
    "register_model",
    "require_local_path",
]

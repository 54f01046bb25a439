"""Teachers and students: SAM, EfficientSAM, Mask2Former and friends, behind one registry."""
from .base import PromptableOutput, Prompts, SemanticOutput
from .registry import MODEL_REGISTRY, build_model, register_model

__all__ = [
    "MODEL_REGISTRY",
    "PromptableOutput",
    "Prompts",
    "SemanticOutput",
    "build_model",
    "register_model",
]

"""The distiller meta-architecture: frozen teacher + trainable student + distillation head."""

from .build import build_distiller, build_member, distiller_kwargs, student_state_dict
from .distiller import SARDDistiller
from .teacher_cache import TeacherCache

__all__ = [
    "SARDDistiller",
    "TeacherCache",
    "build_distiller",
    "build_member",
    "distiller_kwargs",
    "student_state_dict",
]

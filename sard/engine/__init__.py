"""The built-in training engine (used when detectron2 is absent or ``--engine sard``)."""

from .launch import launch
from .trainer import Trainer

__all__ = ["Trainer", "launch"]

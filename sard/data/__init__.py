"""Data: catalogs, COCO registration, semantic datasets, mappers with prompts, synthetic RockFrag.

Importing this package registers the built-in datasets whose files exist under
``$DETECTRON2_DATASETS`` (default ``./datasets``); see ``sard.data.register``. The two mappers
(which need torch) are imported on first use, so dataset scripts start fast.
"""

from importlib import import_module
from typing import Any

from .catalog import BOX_MODE_XYWH_ABS, HAS_DETECTRON2, DatasetCatalog, Metadata, MetadataCatalog
from .coco import load_coco_instances
from .image_io import ImageReadError, read_image, read_label_image
from .problems import DatasetError
from .register import (
    datasets_root,
    register_ade20k_semantic,
    register_builtin_datasets,
    register_cityscapes_semantic,
    register_rockfrag,
    register_rockfrag_semantic,
)
from .semantic import (
    ADE20K_CLASSES,
    CITYSCAPES_CLASSES,
    IGNORE_LABEL,
    instances_to_semantic,
    load_ade20k_semantic,
    load_cityscapes_semantic,
)
from .synthetic import SynthConfig, render_image
from .synthetic_dataset import generate_rockfrag_synth

__all__ = [
    "ADE20K_CLASSES",
    "BOX_MODE_XYWH_ABS",
    "CITYSCAPES_CLASSES",
    "DatasetCatalog",
    "DatasetError",
    "HAS_DETECTRON2",
    "IGNORE_LABEL",
    "ImageReadError",
    "Metadata",
    "MetadataCatalog",
    "PromptDatasetMapper",
    "SemanticDatasetMapper",
    "SynthConfig",
    "datasets_root",
    "generate_rockfrag_synth",
    "instances_to_semantic",
    "load_ade20k_semantic",
    "load_cityscapes_semantic",
    "load_coco_instances",
    "read_image",
    "read_label_image",
    "register_ade20k_semantic",
    "register_builtin_datasets",
    "register_cityscapes_semantic",
    "register_rockfrag",
    "register_rockfrag_semantic",
    "render_image",
]

_LAZY = {"PromptDatasetMapper": ".mapper", "SemanticDatasetMapper": ".semantic_mapper"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


register_builtin_datasets()

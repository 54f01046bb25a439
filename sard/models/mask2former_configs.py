"""Mask2Former size presets as `transformers` configs, built entirely offline.

Official model-zoo sizes (Mask2Former, Cheng et al. 2022, Cityscapes / ADE20K semantic configs):

=========  =========================================================================
size       backbone
=========  =========================================================================
swin_l     Swin-L: embed 192, depths 2-2-18-2, heads 6-12-24-48, window 12, pretrain 384
swin_t     Swin-T: embed 96, depths 2-2-6-2, heads 3-6-12-24, window 7, pretrain 224
r50        ResNet-50: bottleneck blocks 3-4-6-3, widths 256-512-1024-2048, stride in the 3x3
tiny       Swin, embed 16, depths 1-1-1-1, window 4 (CPU tests, 64x64 images)
tiny_resnet  ResNet, bottleneck 1-1-1-1, widths 32-64-128-256 (CPU tests of the R50 path)
=========  =========================================================================

Head for the official sizes: 100 queries, ``decoder_layers=10`` (one prediction from the learnable
queries plus 9 masked-attention layers, exactly detectron2's ``DEC_LAYERS: 10``, which also builds
``DEC_LAYERS - 1`` layers), hidden 256, 6 deformable pixel-decoder layers, mask features 256 at
1/4 resolution. Swin backbones use drop-path 0.3 as in the zoo configs.

Backbones are given as explicit ``SwinConfig`` / ``ResNetConfig`` objects, never as hub names, so
building touches no network and needs no downloaded file.
"""

from __future__ import annotations

import dataclasses
import logging
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence

from transformers import Mask2FormerConfig, PretrainedConfig, ResNetConfig, SwinConfig

STAGES = ["stage1", "stage2", "stage3", "stage4"]


def _swin(
    image_size: int,
    embed_dim: int,
    depths: Sequence[int],
    num_heads: Sequence[int],
    window_size: int,
    drop_path_rate: float,
) -> Dict[str, Any]:
    """A Swin preset row: pretraining image size, embed dim, depths and heads per stage."""
    return dict(
        kind="swin",
        image_size=image_size,
        embed_dim=embed_dim,
        depths=list(depths),
        num_heads=list(num_heads),
        window_size=window_size,
        drop_path_rate=drop_path_rate,
    )


def _resnet(
    embedding_size: int, hidden_sizes: Sequence[int], depths: Sequence[int]
) -> Dict[str, Any]:
    """A bottleneck ResNet preset row: stem width, widths and blocks per stage."""
    return dict(
        kind="resnet",
        embedding_size=embedding_size,
        hidden_sizes=list(hidden_sizes),
        depths=list(depths),
        layer_type="bottleneck",
    )


# One row per size (the table in the module docstring).
BACKBONE_PRESETS: Dict[str, Dict[str, Any]] = {
    "swin_l": _swin(384, 192, (2, 2, 18, 2), (6, 12, 24, 48), 12, 0.3),
    "swin_t": _swin(224, 96, (2, 2, 6, 2), (3, 6, 12, 24), 7, 0.3),
    "r50": _resnet(64, (256, 512, 1024, 2048), (3, 4, 6, 3)),
    "tiny": _swin(64, 16, (1, 1, 1, 1), (1, 1, 2, 2), 4, 0.0),
    "tiny_resnet": _resnet(16, (32, 64, 128, 256), (1, 1, 1, 1)),
}

# The transformers defaults already equal the official head; listed to make the contract visible.
OFFICIAL_HEAD: Dict[str, Any] = dict(
    num_queries=100,
    decoder_layers=10,
    hidden_dim=256,
    feature_size=256,
    mask_feature_size=256,
    encoder_layers=6,
    encoder_feedforward_dim=1024,
    dim_feedforward=2048,
    num_attention_heads=8,
    train_num_points=12544,
    no_object_weight=0.1,
    class_weight=2.0,
    mask_weight=5.0,
    dice_weight=5.0,
)

TINY_HEAD: Dict[str, Any] = dict(
    OFFICIAL_HEAD,
    num_queries=8,
    decoder_layers=3,
    hidden_dim=32,
    feature_size=32,
    mask_feature_size=32,
    encoder_layers=1,
    encoder_feedforward_dim=64,
    dim_feedforward=64,
    num_attention_heads=2,
    train_num_points=256,
)

HEAD_PRESETS: Dict[str, Dict[str, Any]] = {
    "swin_l": OFFICIAL_HEAD,
    "swin_t": OFFICIAL_HEAD,
    "r50": OFFICIAL_HEAD,
    "tiny": TINY_HEAD,
    "tiny_resnet": TINY_HEAD,
}

MASK2FORMER_SIZES = tuple(BACKBONE_PRESETS)

# Fields that decide parameter shapes: a saved model must agree on all of them to be loadable.
ARCHITECTURE_FIELDS = (
    "num_labels",
    "hidden_dim",
    "feature_size",
    "mask_feature_size",
    "num_queries",
    "decoder_layers",
    "encoder_layers",
    "encoder_feedforward_dim",
    "dim_feedforward",
    "num_attention_heads",
)
BACKBONE_ARCHITECTURE_FIELDS = (
    "model_type",
    "embed_dim",
    "depths",
    "num_heads",
    "window_size",
    "embedding_size",
    "hidden_sizes",
    "layer_type",
)


@contextmanager
def quiet_backbone_support_warning() -> Iterator[None]:
    """Hide transformers' "backbone resnet is not a supported model" notice.

    Mask2Former with a ResNet backbone is an official zoo model and works in transformers; the
    notice would only alarm users of the R50 student.
    """
    logger = logging.getLogger("transformers.models.mask2former.configuration_mask2former")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


def build_backbone_config(size: str, **overrides: Any) -> PretrainedConfig:
    """Swin or ResNet backbone config of preset ``size``; ``overrides`` replace preset fields.

    All four stages are returned as features (``stage1``..``stage4``, strides 4, 8, 16, 32).
    """
    if size not in BACKBONE_PRESETS:
        raise KeyError(f"unknown Mask2Former size {size!r}; choose one of {MASK2FORMER_SIZES}")
    preset = dict(BACKBONE_PRESETS[size])
    kind = preset.pop("kind")
    preset.update(overrides)
    config_class = SwinConfig if kind == "swin" else ResNetConfig
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(
            f"unknown {config_class.__name__} field(s) in backbone overrides: {unknown}"
        )
    return config_class(out_features=list(STAGES), **preset)


def build_mask2former_config(
    size: str,
    num_classes: int,
    backbone_overrides: Optional[Mapping[str, Any]] = None,
    **head_overrides: Any,
) -> Mask2FormerConfig:
    """Full ``Mask2FormerConfig`` for preset ``size`` with ``num_classes`` semantic classes.

    ``head_overrides`` are ``Mask2FormerConfig`` fields (e.g. ``num_queries=50``);
    ``backbone_overrides`` are fields of the backbone's Swin/ResNet config.
    """
    if size not in HEAD_PRESETS:
        raise KeyError(f"unknown Mask2Former size {size!r}; choose one of {MASK2FORMER_SIZES}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    known = {f.name for f in dataclasses.fields(Mask2FormerConfig)}
    unknown = sorted(set(head_overrides) - known)
    if unknown:
        raise TypeError(f"unknown Mask2FormerConfig field(s) in overrides: {unknown}")
    head = dict(HEAD_PRESETS[size])
    head.update(head_overrides)
    backbone = build_backbone_config(size, **dict(backbone_overrides or {}))
    with quiet_backbone_support_warning():
        return Mask2FormerConfig(backbone_config=backbone, num_labels=num_classes, **head)


def architecture_differences(ours: Mask2FormerConfig, theirs: Mask2FormerConfig) -> Dict[str, str]:
    """Shape-deciding fields on which two configs disagree, as {field: "ours vs theirs"}."""
    diffs: Dict[str, str] = {}
    for name in ARCHITECTURE_FIELDS:
        a, b = getattr(ours, name, None), getattr(theirs, name, None)
        if a != b:
            diffs[name] = f"{a!r} vs {b!r}"
    for name in BACKBONE_ARCHITECTURE_FIELDS:
        a = getattr(ours.backbone_config, name, None)
        b = getattr(theirs.backbone_config, name, None)
        a, b = (list(a) if isinstance(a, tuple) else a), (list(b) if isinstance(b, tuple) else b)
        if a != b:
            diffs[f"backbone.{name}"] = f"{a!r} vs {b!r}"
    return diffs

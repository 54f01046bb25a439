"""Plain ViT (timm) + a light semantic decoder: the ViT-L -> ViT-Ti pair of the paper.

Backbone: timm ``VisionTransformer`` built with ``pretrained=False`` (no download), at the
configured image size with ``dynamic_img_size`` (other sizes interpolate ``pos_embed``).
Decoder: a ViTDet-style simple feature pyramid from the last block (strides 4, 8, 16, 32),
then a per-pixel head that refines each level, upsamples it to stride 4, sums and classifies.

==========  =======================================================  ================
size        backbone                                                 decoder channels
==========  =======================================================  ================
vit_l       vit_large_patch16_224: embed 1024, depth 24, heads 16   256
vit_ti      vit_tiny_patch16_224: embed 192, depth 12, heads 3      256
tiny        patch 16, embed 32, depth 4, heads 2 (CPU tests)         32
==========  =======================================================  ================

Both real sizes share the same decoder width, so a teacher/student comparison isolates the
backbone.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Dict, List, Optional, Tuple

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from .base import SemanticOutput
from .checkpoint import load_exactly, read_state_dict
from .registry import register_model

logger = logging.getLogger(__name__)

IGNORE_LABEL = 255
STAGES = ["stage1", "stage2", "stage3", "stage4"]
PYRAMID = ["pyramid_s4", "pyramid_s8", "pyramid_s16", "pyramid_s32"]

VIT_SIZES: Dict[str, Dict[str, Any]] = {
    "vit_l": dict(arch="vit_large_patch16_224", decoder_channels=256),
    "vit_ti": dict(arch="vit_tiny_patch16_224", decoder_channels=256),
    "tiny": dict(arch=None, patch_size=16, embed_dim=32, depth=4, num_heads=2, decoder_channels=32),
}


def stage_block_indices(depth: int) -> List[int]:
    """Blocks whose outputs are ``stage1..4``: the ends of the four depth quarters.

    depth 24 -> [5, 11, 17, 23] (ViTDet's ViT-L choice), 12 -> [2, 5, 8, 11], 4 -> [0, 1, 2, 3].
    """
    return [max(0, (depth * k) // 4 - 1) for k in (1, 2, 3, 4)]


def _conv_norm(in_ch: int, out_ch: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False), LayerNorm2d(out_ch)
    )


class SimpleFeaturePyramid(nn.Module):
    """ViTDet simple feature pyramid: one stride-16 map -> maps at strides 4, 8, 16, 32.

    Stride 4: two 2x2 transposed convs (C -> C/2 -> C/4); stride 8: one (C -> C/2); stride 16:
    identity; stride 32: 2x2 max-pool. Each level then goes 1x1 conv + LN, 3x3 conv + LN to
    ``out_channels``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        c = in_channels
        self.resample = nn.ModuleList(
            [
                nn.Sequential(
                    nn.ConvTranspose2d(c, c // 2, 2, stride=2),
                    LayerNorm2d(c // 2),
                    nn.GELU(),
                    nn.ConvTranspose2d(c // 2, c // 4, 2, stride=2),
                ),
                nn.ConvTranspose2d(c, c // 2, 2, stride=2),
                nn.Identity(),
                nn.MaxPool2d(2),
            ]
        )
        level_channels = [c // 4, c // 2, c, c]
        self.project = nn.ModuleList(
            [
                nn.Sequential(
                    _conv_norm(ch, out_channels, 1), _conv_norm(out_channels, out_channels, 3)
                )
                for ch in level_channels
            ]
        )

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """x: (B, C, h, w) at stride 16 -> [stride 4, 8, 16, 32] maps with out_channels."""
        return [proj(resample(x)) for resample, proj in zip(self.resample, self.project)]


class PerPixelHead(nn.Module):
    """logits = Conv1x1( sum_l up4( GELU(LN(Conv3x3(P_l))) ) ), at stride 4."""

    def __init__(self, channels: int, num_classes: int, num_levels: int = 4) -> None:
        super().__init__()
        self.refine = nn.ModuleList(
            [nn.Sequential(_conv_norm(channels, channels, 3), nn.GELU()) for _ in range(num_levels)]
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, levels: List[torch.Tensor]) -> torch.Tensor:
        """levels: finest first; returns (B, K, h4, w4) logits at the finest level's size."""
        size = levels[0].shape[-2:]
        fused = 0
        for refine, level in zip(self.refine, levels):
            y = refine(level)
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            fused = fused + y
        return self.classifier(fused)


class ViTSemantic(nn.Module):
    """timm ViT + simple feature pyramid + per-pixel head, behind the semantic-model contract.

    Taps (``features`` of ``forward_semantic``), input (H, W), patch 16, embed C, decoder D:

    * ``last_block``: final-normed tokens as a map, (B, C, H/16, W/16); the decoder's input and
      the default distillation tap.
    * ``stage1`` .. ``stage4``: raw outputs of blocks ``stage_block_indices(depth)``,
      (B, C, H/16, W/16) each (for ReviewKD).
    * ``pyramid_s4``, ``pyramid_s8``, ``pyramid_s16``, ``pyramid_s32``: pyramid levels, D channels.

    ``sem_logits``: raw class logits (B, K, H/4, W/4) (``sem_logits_kind = "logits"``). Task loss
    ``loss_sem_ce``: cross-entropy of the logits upsampled bilinearly to (H, W), ignore 255.
    """

    family = "vit_semantic"
    ignore_label = IGNORE_LABEL
    sem_logits_kind = "logits"

    def __init__(
        self,
        backbone: VisionTransformer,
        *,
        num_classes: int,
        image_size: Tuple[int, int],
        decoder_channels: int,
        pixel_mean: Tuple[float, float, float],
        pixel_std: Tuple[float, float, float],
        size: str = "custom",
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.backbone = backbone
        self.size = size
        self.num_classes = int(num_classes)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.patch_size = int(backbone.patch_embed.patch_size[0])
        if tuple(backbone.patch_embed.patch_size) != (16, 16):
            # Tap names and strides (pyramid_s4 .. s32) are those of a stride-16 token grid.
            raise ValueError(
                f"ViTSemantic needs patch size 16, got {backbone.patch_embed.patch_size}"
            )
        embed_dim = int(backbone.embed_dim)
        self.stage_indices = stage_block_indices(len(backbone.blocks))
        self.pyramid = SimpleFeaturePyramid(embed_dim, decoder_channels)
        self.seg_head = PerPixelHead(decoder_channels, num_classes)
        self.tap_channels: Dict[str, int] = {"last_block": embed_dim}
        self.tap_channels.update({s: embed_dim for s in STAGES})
        self.tap_channels.update({p: decoder_channels for p in PYRAMID})
        self.tap_strides: Dict[str, int] = {"last_block": 16, **{s: 16 for s in STAGES}}
        self.tap_strides.update(dict(zip(PYRAMID, (4, 8, 16, 32))))
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(images - mean) / std, with the architecture's timm statistics scaled to 0-255."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W) RGB, got shape {tuple(images.shape)}")
        h, w = images.shape[-2:]
        if h % 32 or w % 32:
            # Stride-32 pyramid level and patch 16 both need it; silent cropping would shift maps.
            raise ValueError(f"image height and width must be multiples of 32, got {(h, w)}")
        return (images - self.pixel_mean) / self.pixel_std

    def _backbone_maps(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        final, stages = self.backbone.forward_intermediates(
            x, indices=self.stage_indices, norm=False, output_fmt="NCHW"
        )
        b, c = final.shape[0], final.shape[-1]
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        tokens = final[:, self.backbone.num_prefix_tokens :]
        last = tokens.transpose(1, 2).reshape(b, c, *grid)
        return {"last_block": last, **dict(zip(STAGES, stages))}

    def forward_semantic(
        self, images: torch.Tensor, targets: Optional[List[torch.Tensor]] = None
    ) -> SemanticOutput:
        """Taps, logits (B, K, H/4, W/4) and, with ``targets`` ((H, W) long, 255 = ignore),
        ``{"loss_sem_ce": CE}``."""
        features = self._backbone_maps(self.preprocess(images))
        levels = self.pyramid(features["last_block"])
        features.update(dict(zip(PYRAMID, levels)))
        sem_logits = self.seg_head(levels)
        losses = None
        if targets is not None:
            losses = {"loss_sem_ce": self.task_loss(sem_logits, targets, images.shape[-2:])}
        return SemanticOutput(features=features, sem_logits=sem_logits, losses=losses)

    def task_loss(
        self, sem_logits: torch.Tensor, targets: List[torch.Tensor], size: torch.Size
    ) -> torch.Tensor:
        """Mean CE over labelled pixels of bilinearly upsampled logits; 0 if none is labelled."""
        if len(targets) != sem_logits.shape[0]:
            raise ValueError(f"got {len(targets)} targets for {sem_logits.shape[0]} images")
        labels = torch.stack([t.to(sem_logits.device).long() for t in targets])
        if labels.shape[-2:] != tuple(size):
            raise ValueError(f"targets are {tuple(labels.shape[-2:])}, images {tuple(size)}")
        valid = labels != self.ignore_label
        bad = labels[valid & ((labels < 0) | (labels >= self.num_classes))]
        if bad.numel():
            raise ValueError(
                f"targets hold label(s) {sorted(set(bad.tolist()))[:10]} outside "
                f"[0, {self.num_classes}) and not the ignore label {self.ignore_label}"
            )
        logits = F.interpolate(sem_logits, size=tuple(size), mode="bilinear", align_corners=False)
        if not valid.any():
            return logits.sum() * 0.0  # keeps the graph (and DDP) happy with nothing to learn
        return F.cross_entropy(logits, labels, ignore_index=self.ignore_label)

    @staticmethod
    def kd_logits(sem_logits: torch.Tensor) -> torch.Tensor:
        """Logits for logit KD: ``sem_logits`` already are logits, returned unchanged."""
        return sem_logits

    @torch.no_grad()
    def semantic_inference(
        self, images: torch.Tensor, output_size: Optional[Tuple[int, int]] = None
    ) -> torch.Tensor:
        """Class probabilities (B, K, *output_size): softmax of logits resized bilinearly."""
        logits = self.forward_semantic(images).sem_logits
        size = tuple(output_size) if output_size is not None else tuple(images.shape[-2:])
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits.softmax(dim=1)

    def load_weights(self, path: str, allow_unsafe_pickle: bool = False) -> Dict[str, List[str]]:
        """Load a local checkpoint: this model's own state dict, or a bare timm ViT state dict.

        A timm backbone checkpoint (keys ``patch_embed.*``, ``blocks.*``, ...) fills the backbone
        only: its classification ``head.*`` is dropped and ``pos_embed`` is resampled to this
        image size (logged); the decoder keeps its initialisation. Any other missing,
        unexpected or mis-shaped key raises CheckpointMismatchError. Returns what was done.
        """
        state = read_state_dict(path, allow_unsafe_pickle=allow_unsafe_pickle)
        report: Dict[str, List[str]] = {"dropped": [], "resized": [], "not_loaded": []}
        target: nn.Module = self
        if not any(k.startswith(("backbone.", "pyramid.", "seg_head.")) for k in state):
            target = self.backbone
            report["dropped"] = sorted(k for k in state if k.startswith("head."))
            state = {k: v for k, v in state.items() if not k.startswith("head.")}
            old = state.get("pos_embed")
            state = checkpoint_filter_fn(state, self.backbone)
            if old is not None and old.shape != state["pos_embed"].shape:
                report["resized"].append("backbone.pos_embed")
                logger.info(
                    "%s: resampled pos_embed %s -> %s",
                    path,
                    tuple(old.shape),
                    tuple(state["pos_embed"].shape),
                )
            report["not_loaded"] = sorted(
                k for k in self.state_dict() if not k.startswith("backbone.")
            )
        where = "the ViT backbone" if target is self.backbone else "ViTSemantic"
        load_exactly(target, state, path, f"{where} ({self.size})")
        logger.info("loaded %s into %s (%d tensors)", path, type(target).__name__, len(state))
        return report


def build_vit_backbone(
    size: str, image_size: Tuple[int, int], **overrides: Any
) -> Tuple[VisionTransformer, Dict[str, Any]]:
    """timm ViT of ``size`` without pretrained weights; returns it and the decoder settings.

    ``overrides`` go to timm's ``VisionTransformer`` (e.g. ``drop_path_rate``), except
    ``decoder_channels`` (decoder width) and ``pixel_mean`` / ``pixel_std`` (0-255 RGB; default:
    the architecture's timm statistics, 127.5 / 127.5 for the ViT-L/16 and ViT-Ti/16 tags).
    """
    if size not in VIT_SIZES:
        raise KeyError(f"unknown vit_semantic size {size!r}; choose one of {sorted(VIT_SIZES)}")
    preset = dict(VIT_SIZES[size])
    arch = preset.pop("arch")
    overrides = dict(overrides)
    decoder_channels = int(overrides.pop("decoder_channels", preset.pop("decoder_channels")))
    pixel_mean = overrides.pop("pixel_mean", None)
    pixel_std = overrides.pop("pixel_std", None)
    common = dict(img_size=tuple(image_size), num_classes=0, dynamic_img_size=True)
    if arch is None:
        backbone = VisionTransformer(**{**preset, **common, **overrides})
    else:
        backbone = timm.create_model(arch, pretrained=False, **common, **overrides)
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    mean = pixel_mean or tuple(255.0 * m for m in cfg.get("mean", (0.5, 0.5, 0.5)))
    std = pixel_std or tuple(255.0 * s for s in cfg.get("std", (0.5, 0.5, 0.5)))
    return backbone, dict(decoder_channels=decoder_channels, pixel_mean=mean, pixel_std=std)


@register_model("vit_semantic")
def build_vit_semantic(
    size: str = "vit_ti",
    image_size: Tuple[int, int] = (512, 1024),
    num_classes: int = 19,
    weights: Optional[str] = "",
    allow_unsafe_pickle: bool = False,
    **overrides: Any,
) -> ViTSemantic:
    """ViT semantic model of ``size`` ("vit_l", "vit_ti", "tiny"); nothing is downloaded.

    ``weights``: a local file, either a ViTSemantic state dict or a timm ViT backbone state
    dict (see ``ViTSemantic.load_weights``); "" means random initialisation, with a warning.
    """
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    backbone, settings = build_vit_backbone(size, image_size, **overrides)
    model = ViTSemantic(
        backbone, num_classes=num_classes, image_size=image_size, size=size, **settings
    )
    if weights:
        model.load_weights(weights, allow_unsafe_pickle=allow_unsafe_pickle)
    elif weights == "":  # None: the caller loads the weights itself
        warnings.warn(
            f"vit_semantic {size!r}: no weights path given, parameters are randomly initialised",
            stacklevel=2,
        )
    return model

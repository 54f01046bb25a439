"""Mask2Former semantic teacher/student on top of `transformers` (pure PyTorch, CPU-capable).

Build with ``build_model("mask2former", size="swin_l" | "r50" | "swin_t" | "tiny" |
"tiny_resnet", image_size=(h, w), num_classes=K, weights="path/to/dir")``. Sizes are described in
``sard.models.mask2former_configs``.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerForUniversalSegmentationOutput,
)

from sard.local_paths import require_local_path

from .base import SemanticOutput
from .checkpoint import load_exactly, read_state_dict
from .mask2former_configs import (
    STAGES,
    quiet_backbone_support_warning,
    architecture_differences,
    build_mask2former_config,
)
from .registry import register_model

# detectron2 Mask2Former PIXEL_MEAN / PIXEL_STD, 0-255 RGB.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
IGNORE_LABEL = 255

# transformers' loss keys (plus "_<layer>" suffixes for auxiliary layers) -> our names.
_LOSS_NAMES = {
    "loss_cross_entropy": "loss_m2f_ce",
    "loss_mask": "loss_m2f_mask",
    "loss_dice": "loss_m2f_dice",
}


def semantic_scores(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """detectron2's Mask2Former semantic inference.

    S[b, k, y, x] = sum_q softmax(class_logits[b, q])[k] * sigmoid(mask_logits[b, q, y, x]),
    with the last ("no object") class dropped after the softmax. class_logits: (B, Q, K+1);
    mask_logits: (B, Q, h, w); returns (B, K, h, w) non-negative scores (not probabilities: a
    pixel's scores sum to at most Q).
    """
    class_probs = class_logits.softmax(dim=-1)[..., :-1]
    return torch.einsum("bqk,bqhw->bkhw", class_probs, mask_logits.sigmoid())


def semantic_log_scores(scores: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """log(max(S, eps)): logit-like values for KD on Mask2Former scores.

    softmax over classes of these values equals S / sum_k S, the scores renormalised per pixel,
    so logit-distillation losses (KD, DKD, CWD) can treat them as ordinary logits.
    """
    return scores.clamp_min(eps).log()


def semantic_targets_to_masks(
    targets: Sequence[torch.Tensor], num_classes: int, ignore_label: int = IGNORE_LABEL
) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """Per-pixel labels -> Mask2Former's set targets, as detectron2's semantic mapper does.

    For each image: one binary mask (float, (H, W)) per class present, class ids in ascending
    order. Ignored pixels belong to no mask, so they count as background for every query (as in
    detectron2). An image with no labelled pixel gives zero masks. Raises ValueError for labels
    outside [0, num_classes) other than ``ignore_label``.
    """
    mask_labels: List[torch.Tensor] = []
    class_labels: List[torch.Tensor] = []
    for i, target in enumerate(targets):
        if target.dim() != 2:
            raise ValueError(f"targets[{i}] must be (H, W), got shape {tuple(target.shape)}")
        classes = torch.unique(target)
        classes = classes[classes != ignore_label]
        bad = classes[(classes < 0) | (classes >= num_classes)]
        if bad.numel():
            raise ValueError(
                f"targets[{i}] holds label(s) {bad.tolist()} outside [0, {num_classes}) "
                f"and not the ignore label {ignore_label}"
            )
        class_labels.append(classes.long())
        mask_labels.append((target[None] == classes[:, None, None]).float())
    return mask_labels, class_labels


logger = logging.getLogger(__name__)


class Mask2FormerSemantic(nn.Module):
    """Mask2Former (transformers) behind the semantic-model contract of ``sard.models.base``.

    Taps (``features`` of ``forward_semantic``), for an input of (H, W):

    * ``mask_features``: pixel decoder's last hidden state, (B, mask_feature_size, H/4, W/4);
      detectron2's ``mask_features``, the SARD distillation tap (256 channels at official sizes).
    * ``stage1`` .. ``stage4``: backbone outputs at strides 4, 8, 16, 32 (for ReviewKD / MGD);
      Swin-L 192-384-768-1536, Swin-T 96-192-384-768, R50 256-512-1024-2048 channels.

    ``sem_logits`` are ``semantic_scores`` at mask resolution (H/4, W/4): NON-NEGATIVE SCORES,
    not logits (``sem_logits_kind = "scores"``). Logit-based KD should use
    ``kd_logits(sem_logits)`` = ``semantic_log_scores(sem_logits)`` = log(max(S, 1e-6)).
    Losses (when targets are given) are transformers' own Hungarian-matched losses, already
    weighted (class CE 2 with no-object weight 0.1, mask BCE 5, Dice 5, both on 12544 sampled
    points) and summed over the final and the 9 auxiliary decoder layers: ``loss_m2f_ce``,
    ``loss_m2f_mask``, ``loss_m2f_dice``.

    ``image_size`` is the configured input size (the data mapper resizes to it); the network
    itself accepts any size (multiples of 32 keep every stage aligned).
    """

    family = "mask2former"
    ignore_label = IGNORE_LABEL
    sem_logits_kind = "scores"

    def __init__(
        self,
        hf_model: Mask2FormerForUniversalSegmentation,
        *,
        image_size: Tuple[int, int],
        size: str,
    ) -> None:
        super().__init__()
        self.model = hf_model
        self.size = size
        self.image_size = (int(image_size[0]), int(image_size[1]))
        config = hf_model.config
        self.num_classes = int(config.num_labels)
        channels = hf_model.model.pixel_level_module.encoder.channels
        self.tap_channels: Dict[str, int] = {"mask_features": int(config.mask_feature_size)}
        self.tap_channels.update({name: int(c) for name, c in zip(STAGES, channels)})
        self.tap_strides: Dict[str, int] = {"mask_features": 4, **dict(zip(STAGES, (4, 8, 16, 32)))}
        # Not persistent: the state_dict stays exactly transformers' layout under "model.".
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), False)

    @property
    def config(self) -> Mask2FormerConfig:
        """The transformers config of the wrapped model."""
        return self.model.config

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(images - mean) / std with detectron2's ImageNet statistics on 0-255 RGB."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W) RGB, got shape {tuple(images.shape)}")
        return (images - self.pixel_mean) / self.pixel_std

    def forward_semantic(
        self, images: torch.Tensor, targets: Optional[List[torch.Tensor]] = None
    ) -> SemanticOutput:
        """Taps, per-pixel scores (B, K, H/4, W/4) and, with ``targets``, the matched losses.

        images: (B, 3, H, W) float 0-255 RGB. targets: B long tensors (H, W), 255 = ignore.
        """
        pixel_values = self.preprocess(images)
        want_loss = targets is not None
        out = self.model(
            pixel_values=pixel_values,
            output_hidden_states=True,
            output_auxiliary_logits=want_loss and self.config.use_auxiliary_loss,
        )
        features = {"mask_features": out.pixel_decoder_last_hidden_state}
        features.update(dict(zip(STAGES, out.encoder_hidden_states)))
        sem_logits = semantic_scores(out.class_queries_logits, out.masks_queries_logits)
        losses = None
        if want_loss:
            losses = self._matched_losses(out, targets, images.shape)
        return SemanticOutput(features=features, sem_logits=sem_logits, losses=losses)

    def _matched_losses(
        self,
        out: Mask2FormerForUniversalSegmentationOutput,
        targets: List[torch.Tensor],
        image_shape: torch.Size,
    ) -> Dict[str, torch.Tensor]:
        """transformers' Hungarian-matched losses, grouped into three named, weighted terms."""
        if len(targets) != image_shape[0]:
            raise ValueError(f"got {len(targets)} targets for a batch of {image_shape[0]} images")
        for i, t in enumerate(targets):
            if tuple(t.shape) != tuple(image_shape[-2:]):
                raise ValueError(
                    f"targets[{i}] has shape {tuple(t.shape)}, images are {tuple(image_shape[-2:])}"
                )
        device = out.masks_queries_logits.device
        mask_labels, class_labels = semantic_targets_to_masks(
            [t.to(device) for t in targets], self.num_classes, self.ignore_label
        )
        raw = self.model.get_loss_dict(
            masks_queries_logits=out.masks_queries_logits,
            class_queries_logits=out.class_queries_logits,
            mask_labels=mask_labels,
            class_labels=class_labels,
            auxiliary_predictions=out.auxiliary_logits,
        )
        losses: Dict[str, torch.Tensor] = {}
        for key, value in raw.items():
            # Auxiliary layers' keys carry a "_<layer>" suffix; all layers add into one term.
            name = next(ours for theirs, ours in _LOSS_NAMES.items() if key.startswith(theirs))
            losses[name] = losses[name] + value if name in losses else value
        return losses

    @staticmethod
    def kd_logits(sem_logits: torch.Tensor) -> torch.Tensor:
        """Logit-like values for logit KD (KD, DKD, CWD): ``semantic_log_scores(sem_logits)``."""
        return semantic_log_scores(sem_logits)

    @torch.no_grad()
    def semantic_inference(
        self, images: torch.Tensor, output_size: Optional[Tuple[int, int]] = None
    ) -> torch.Tensor:
        """detectron2 ``sem_seg`` scores (B, K, *output_size) (default: the input size).

        As detectron2: mask logits are upsampled bilinearly to the input size, resized to
        ``output_size``, then combined with ``semantic_scores`` (sigmoid after resizing).
        """
        out = self.model(pixel_values=self.preprocess(images))
        masks = F.interpolate(
            out.masks_queries_logits, size=images.shape[-2:], mode="bilinear", align_corners=False
        )
        if output_size is not None and tuple(output_size) != tuple(images.shape[-2:]):
            masks = F.interpolate(
                masks, size=tuple(output_size), mode="bilinear", align_corners=False
            )
        return semantic_scores(out.class_queries_logits, masks)

    def save_pretrained(self, directory: str) -> None:
        """Write ``config.json`` + ``model.safetensors`` (transformers layout) to ``directory``."""
        self.model.save_pretrained(directory)

    def load_weights(self, path: str, allow_unsafe_pickle: bool = False) -> None:
        """Load local weights in place: a ``save_pretrained`` directory (architecture checked
        against this model's config), or a state-dict file (see
        ``load_mask2former_state_file``). Errors name the path and the offending keys; a URL
        is refused (nothing is ever downloaded)."""
        require_local_path(path, "Mask2Former weights path")
        if not os.path.isfile(path):
            loaded = load_mask2former_directory(path, self.config)
            self.model.load_state_dict(loaded.state_dict())
        else:
            load_mask2former_state_file(self, path, allow_unsafe_pickle)


def _check_directory(directory: str) -> None:
    if not os.path.exists(directory):
        raise FileNotFoundError(
            f"Mask2Former weights path {directory!r} does not exist (expected a transformers "
            "save_pretrained directory or a state-dict file)"
        )
    if not os.path.isfile(os.path.join(directory, "config.json")):
        raise FileNotFoundError(
            f"{directory!r} has no config.json; expected a transformers save_pretrained directory"
        )


def load_mask2former_directory(
    directory: str, config: Mask2FormerConfig
) -> Mask2FormerForUniversalSegmentation:
    """Load a ``save_pretrained`` directory into a model of ``config``, strictly and offline.

    Raises FileNotFoundError for a missing directory or ``config.json``, ValueError when the
    saved architecture differs from ``config`` (listing the fields) or when any key is missing,
    unexpected or of another shape.
    """
    _check_directory(directory)
    with quiet_backbone_support_warning():
        saved = Mask2FormerConfig.from_pretrained(directory, local_files_only=True)
    diffs = architecture_differences(config, saved)
    if diffs:
        listed = "; ".join(f"{k}: {v}" for k, v in diffs.items())
        raise ValueError(
            f"weights in {directory!r} are for another Mask2Former architecture "
            f"(requested vs saved) {listed}"
        )
    with quiet_backbone_support_warning():
        model, info = Mask2FormerForUniversalSegmentation.from_pretrained(
            directory, config=config, local_files_only=True, output_loading_info=True
        )
    problems = {k: sorted(info.get(k) or []) for k in ("missing_keys", "unexpected_keys")}
    problems["mismatched_keys"] = sorted(str(m) for m in info.get("mismatched_keys") or [])
    if any(problems.values()):
        raise ValueError(f"weights in {directory!r} do not match the model: {problems}")
    logger.info(
        "loaded %s (save_pretrained folder, strict: no key missing or unexpected)", directory
    )
    return model


def load_mask2former_state_file(
    model: Mask2FormerSemantic, path: str, allow_unsafe_pickle: bool = False
) -> None:
    """Load a state-dict file in transformers' key layout or this wrapper's (``model.`` prefix).

    Any missing, unexpected or mis-shaped key raises CheckpointMismatchError.
    """
    state = read_state_dict(path, allow_unsafe_pickle=allow_unsafe_pickle)
    wrapper_layout = "model.class_predictor.weight" in state
    target: nn.Module = model if wrapper_layout else model.model
    load_exactly(target, state, path, f"Mask2Former {model.size!r}")


@register_model("mask2former")
def build_mask2former(
    size: str = "r50",
    image_size: Tuple[int, int] = (512, 1024),
    num_classes: int = 19,
    weights: Optional[str] = "",
    allow_unsafe_pickle: bool = False,
    backbone_overrides: Optional[Dict[str, object]] = None,
    **overrides: object,
) -> Mask2FormerSemantic:
    """Mask2Former of preset ``size`` for ``num_classes`` classes; never touches the network.

    ``weights``: a local ``save_pretrained`` directory (or a state-dict file, see
    ``Mask2FormerSemantic.load_weights``), or "" for random initialisation (with a warning).
    ``overrides`` are ``Mask2FormerConfig`` fields; ``backbone_overrides`` are fields of the
    Swin/ResNet backbone config. The model is returned in train mode.
    """
    config = build_mask2former_config(size, num_classes, backbone_overrides, **overrides)
    from_directory = bool(weights) and not os.path.isfile(weights)
    if from_directory:
        hf_model = load_mask2former_directory(weights, config)
    else:
        with quiet_backbone_support_warning():
            hf_model = Mask2FormerForUniversalSegmentation(config)
    model = Mask2FormerSemantic(hf_model, image_size=image_size, size=size)
    if weights and not from_directory:
        load_mask2former_state_file(model, weights, allow_unsafe_pickle)
    elif weights == "":  # None: the caller loads the weights itself
        warnings.warn(
            f"Mask2Former {size!r}: no weights path given, parameters are randomly initialised",
            stacklevel=2,
        )
    # from_pretrained returns eval mode, a fresh module train mode: builders agree on train.
    return model.train()

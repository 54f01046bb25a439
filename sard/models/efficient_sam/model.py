"""EfficientSAM (Xiong et al., CVPR 2024) behind the promptable contract and its own API.

Two ways in:

* the contract (``extract_features`` / ``predict_masks`` / ``postprocess_masks``): images in
  0-255 at the model's input size, prompts in model-input pixels;
* the official one, ``forward(batched_images, batched_points, batched_point_labels,
  scale_to_original_image_size=True)``: images in 0-1 of any size (stretched to S x S), points
  in the images' own pixels; returns mask logits (B, Q, 3, H, W) and IoU (B, Q, 3), so code
  written against the official model can call this one.

Prompts hold at most 6 points (``decoder_max_num_input_points``); shorter prompts are padded
with label -1 at coordinates (-1, -1), as the official model does.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from sard.prompt_labels import LABEL_PAD

from ..base import PromptableOutput, Prompts
from ..checkpoint import load_checkpoint
from ..registry import register_model
from ..sam import check_prompts, resize_mask_logits
from .image_encoder import EfficientSamImageEncoder
from .mask_decoder import EfficientSamMaskDecoder
from .prompt_encoder import EfficientSamPromptEncoder

EFFICIENT_SAM_SIZES: Dict[str, Dict[str, int]] = {
    "ti": dict(embed_dim=192, depth=12, num_heads=3),
    "s": dict(embed_dim=384, depth=12, num_heads=6),
    "tiny": dict(embed_dim=64, depth=2, num_heads=2),  # CPU tests only
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PROMPT_DIM = 256


class EfficientSam(nn.Module):
    """EfficientSAM: ViT image encoder, point prompt encoder, two-way mask decoder."""

    family = "efficient_sam"
    resize_mode = "stretch"
    tap_channels = {"image_embedding": PROMPT_DIM}
    decoder_max_num_input_points = 6

    def __init__(self, *, image_size: int, embed_dim: int, depth: int, num_heads: int) -> None:
        """Sizes: ``EFFICIENT_SAM_SIZES`` (``build_efficient_sam``), the one home of each."""
        super().__init__()
        if image_size % 16:
            raise ValueError(f"EfficientSAM image_size {image_size} must be a multiple of 16")
        self.image_size = image_size
        self.mask_downsample = 4
        self.image_encoder = EfficientSamImageEncoder(
            img_size=image_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads
        )
        self.prompt_encoder = EfficientSamPromptEncoder(PROMPT_DIM)
        self.mask_decoder = EfficientSamMaskDecoder(PROMPT_DIM)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)

    # ----------------------------------------------------------------- images
    def _normalise01(self, images: torch.Tensor) -> torch.Tensor:
        """0-1 images of any size -> stretched (bilinear) to S x S, ImageNet-normalised."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"EfficientSAM expects images (B, 3, H, W), got {tuple(images.shape)}")
        if images.shape[-2:] != (self.image_size, self.image_size):
            images = F.interpolate(images, (self.image_size, self.image_size), mode="bilinear")
        return (images - self.pixel_mean) / self.pixel_std

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) 0-255 RGB -> (x / 255 - mean) / std at S x S (ImageNet mean/std)."""
        return self._normalise01(images / 255.0)

    def extract_features(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Images 0-255 -> {"image_embedding": (B, 256, S/16, S/16)} (the distillation tap)."""
        return {"image_embedding": self.image_encoder(self.preprocess(images))}

    def get_image_embeddings(self, batched_images: torch.Tensor) -> torch.Tensor:
        """Official API: 0-1 images (B, 3, H, W) -> (B, 256, S/16, S/16)."""
        return self.image_encoder(self._normalise01(batched_images))

    # ---------------------------------------------------------------- prompts
    def _fit_points(
        self, points: torch.Tensor, labels: torch.Tensor, move_padding: bool = True
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Pad to 6 points with (-1, -1, label -1). ``move_padding`` also puts every label -1
        point at (-1, -1), so padding never depends on where the caller left it (the official
        model keeps the caller's coordinates; its ``forward`` does the same here)."""
        n = labels.shape[-1]
        extra = self.decoder_max_num_input_points - n
        if extra > 0:
            points = F.pad(points, (0, 0, 0, extra), value=-1.0)
            labels = F.pad(labels, (0, extra), value=LABEL_PAD)
        if not move_padding:
            return points, labels
        pad = (labels == LABEL_PAD).unsqueeze(-1)
        return torch.where(pad, -1.0, points), labels

    def _decode(
        self, embedding: torch.Tensor, points: torch.Tensor, labels: torch.Tensor, multimask: bool
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """embedding (B, C, h, w), points (B, Q, 6, 2) in input pixels -> logits (B, Q, M, 4h, 4w)
        and IoU (B, Q, M)."""
        b, c, h, w = embedding.shape
        q = labels.shape[1]
        input_hw = (h * 16, w * 16)
        sparse = self.prompt_encoder(points.flatten(0, 1), labels.flatten(0, 1), input_hw)
        image = embedding.repeat_interleave(q, dim=0)  # the two-way transformer edits it per prompt
        masks, iou = self.mask_decoder(image, self.prompt_encoder.get_dense_pe((h, w)), sparse)
        sel = slice(1, None) if multimask else slice(0, 1)
        return masks[:, sel].unflatten(0, (b, q)), iou[:, sel].unflatten(0, (b, q))

    def predict_masks(
        self, features: Dict[str, torch.Tensor], prompts: Prompts, multimask: bool = True
    ) -> PromptableOutput:
        """Prompts in model-input pixels (at most 6 points each; labels -1/0/1/2/3) ->
        logits (B, Q, M, S/4, S/4) and IoU (B, Q, M), M = 3 if multimask else 1."""
        embedding = features["image_embedding"]
        points, labels = check_prompts(prompts, embedding.shape[0])
        if labels.shape[-1] > self.decoder_max_num_input_points:
            raise ValueError(
                f"EfficientSAM takes at most {self.decoder_max_num_input_points} points per "
                f"prompt, got {labels.shape[-1]}"
            )
        points, labels = self._fit_points(points, labels)
        masks, iou = self._decode(embedding, points, labels, multimask)
        return PromptableOutput(mask_logits=masks, iou_pred=iou)

    def postprocess_masks(
        self, mask_logits: torch.Tensor, input_hw: Sequence[int], original_hw: Sequence[int]
    ) -> torch.Tensor:
        """(..., h, w) logits -> bicubic to S, crop (input_h, input_w), -> original size."""
        return resize_mask_logits(mask_logits, self.image_size, input_hw, original_hw, "bicubic")

    # ----------------------------------------------------------- official API
    def forward(
        self,
        batched_images: torch.Tensor,
        batched_points: torch.Tensor,
        batched_point_labels: torch.Tensor,
        scale_to_original_image_size: bool = True,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Official signature. Images (B, 3, H, W) in 0-1, points (B, Q, N, 2) in image pixels
        (negative = padding), labels (B, Q, N). Returns logits (B, Q, 3, H, W) (or at S/4 when
        not scaled) and IoU (B, Q, 3). More than 6 points per prompt are cut to 6, as officially.
        """
        _, _, in_h, in_w = batched_images.shape
        embedding = self.get_image_embeddings(batched_images)
        scale = batched_points.new_tensor([self.image_size / in_w, self.image_size / in_h])
        points = torch.where(batched_points >= 0, batched_points * scale, -1.0)
        n = self.decoder_max_num_input_points
        labels = batched_point_labels[:, :, :n].long()
        points, labels = self._fit_points(points[:, :, :n], labels, move_padding=False)
        masks, iou = self._decode(embedding, points, labels, multimask=True)
        if scale_to_original_image_size:
            masks = F.interpolate(masks.flatten(0, 1), (in_h, in_w), mode="bicubic")
            masks = masks.unflatten(0, iou.shape[:2])
        return masks, iou


def build_efficient_sam(
    variant: str = "ti",
    checkpoint: Optional[str] = None,
    image_size: int = 1024,
    allow_unsafe_pickle: bool = False,
    load: bool = True,
    **overrides: int,
) -> EfficientSam:
    """EfficientSAM-Ti ("ti") or -S ("s") (or "tiny" for tests), optionally loading a local
    checkpoint such as ``efficient_sam_vitt.pt`` (state dict under "model"). Without one the
    random initialisation is kept with a warning, unless ``load=False`` (the caller loads)."""
    if variant not in EFFICIENT_SAM_SIZES:
        raise KeyError(
            f"unknown EfficientSAM variant {variant!r}; choose {sorted(EFFICIENT_SAM_SIZES)}"
        )
    unknown = set(overrides) - {"embed_dim", "depth", "num_heads"}
    if unknown:
        raise TypeError(f"build_efficient_sam got unknown overrides {sorted(unknown)}")
    model = EfficientSam(image_size=image_size, **{**EFFICIENT_SAM_SIZES[variant], **overrides})
    if load:
        load_checkpoint(model, checkpoint or "", allow_unsafe_pickle=allow_unsafe_pickle)
    return model


@register_model("efficient_sam")
def build_efficient_sam_model(
    size: str = "ti", image_size: int = 1024, weights: Optional[str] = "", **overrides
) -> EfficientSam:
    """Registry builder: ``build_model("efficient_sam", size="ti", weights=path, ...)``;
    ``weights=None`` builds silently for a caller that loads the weights itself."""
    return build_efficient_sam(
        size, weights or None, image_size=image_size, load=weights is not None, **overrides
    )

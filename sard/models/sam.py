"""SAM (vit_h / vit_l / vit_b and small configurable sizes) behind the promptable contract.

The modules are ``segment_anything``'s own (``ImageEncoderViT``, ``PromptEncoder``,
``MaskDecoder``), so the official ``sam_vit_*.pth`` state dicts load unchanged, but the forward
is ours: ``Sam.forward`` is decorated ``@torch.no_grad()`` and decodes one image at a time, while
training needs gradients and many prompts per image in one batch.

Prompt encoding reproduces SAM's: a point is PE(x + 0.5, y + 0.5) + e(label) with e from
``point_embeddings[label]`` for labels 0..3 (2 and 3 are box corners) and a padding point
(label -1) is ``not_a_point_embed`` alone. SAM appends one padding point when a prompt has no
box; we do the same when no prompt in the batch has a box corner, so point-only and box-only
batches give exactly the logits of the official predictor.

Memory: the two-way transformer updates the image tokens per prompt, so the image embedding is
repeated once per prompt (P = B*Q copies of (256, h, w), as SAM itself does). ``chunk_size``
bounds how many prompts are decoded at once; it saves memory when no graph is kept (teachers).

Cost: with small encoders and fine grids the per-prompt decoder dominates (at 128 px, patch 4 and
64 prompts per batch the decoder is about 97 % of a training step), so a student is only small
when its decoder is: ``decoder_dim`` (default SAM's 256) sets the width of the neck output, the
prompt encoder and the two-way transformer, whose MLP (8 x width) and upscaling channels
(width / 4, width / 8) scale with it as in SAM's own layout.
"""

from __future__ import annotations

from functools import partial
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from sard.prompt_labels import LABEL_BOX_BR, LABEL_BOX_TL, LABEL_PAD

from .base import PromptableOutput, Prompts
from .checkpoint import load_checkpoint
from .registry import register_model

SAM_SIZES: Dict[str, Dict] = {
    "vit_h": dict(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
    "vit_l": dict(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "vit_b": dict(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    # CPU tests and small experiments; the decoder keeps SAM's 256-channel layout unless
    # ``decoder_dim`` says otherwise.
    "tiny": dict(embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,), window_size=4),
}
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
PROMPT_DIM = 256


def check_prompts(prompts: Prompts, batch_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Validate a Prompts batch against an image batch; returns (points float, labels long)."""
    points, labels = prompts.points, prompts.labels
    if points.dim() != 4 or points.shape[-1] != 2:
        raise ValueError(f"prompts.points must be (B, Q, N, 2), got {tuple(points.shape)}")
    if labels.shape != points.shape[:3]:
        raise ValueError(
            f"prompts.labels must be (B, Q, N) = {tuple(points.shape[:3])}, "
            f"got {tuple(labels.shape)}"
        )
    if points.shape[0] != batch_size:
        raise ValueError(f"prompts are for {points.shape[0]} images, features for {batch_size}")
    if labels.numel() and (labels.min() < LABEL_PAD or labels.max() > LABEL_BOX_BR):
        raise ValueError(f"prompt labels must be in [-1, 3], got {labels.unique().tolist()}")
    return points.float(), labels.long()


def resize_mask_logits(
    mask_logits: torch.Tensor,
    image_size: int,
    input_hw: Sequence[int],
    original_hw: Sequence[int],
    mode: str = "bilinear",
) -> torch.Tensor:
    """Upsample (..., h, w) logits to image_size, keep [:input_h, :input_w], resize to original."""
    lead = mask_logits.shape[:-2]
    x = mask_logits.reshape(-1, 1, *mask_logits.shape[-2:])
    x = F.interpolate(x, (image_size, image_size), mode=mode, align_corners=False)
    x = x[..., : int(input_hw[0]), : int(input_hw[1])]
    x = F.interpolate(x, tuple(int(s) for s in original_hw), mode=mode, align_corners=False)
    return x.reshape(*lead, *x.shape[-2:])


class SamModel(nn.Module):
    """Trainable SAM: ``extract_features`` -> {"image_embedding": (B, D, S/p, S/p)} (D =
    ``decoder_dim``, 256 in every official size),
    ``predict_masks`` -> mask logits (B, Q, M, 4S/p, 4S/p) and IoU (B, Q, M), M = 3 or 1."""

    family = "sam"
    resize_mode = "longest_pad"

    def __init__(
        self,
        *,
        image_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        global_attn_indexes: Sequence[int],
        patch_size: int = 16,
        window_size: int = 14,
        decoder_dim: int = PROMPT_DIM,
    ) -> None:
        """Sizes: ``SAM_SIZES`` (``build_sam``), the one home of each; patch 16, window 14 and
        decoder width 256 are every official size's. ``decoder_dim`` (a multiple of 16: 8 heads
        on half-width attention) narrows the neck, prompt encoder and mask decoder for students
        whose cost must not be the decoder's."""
        # Imported here: `import segment_anything` pulls in torchvision (seconds of import time).
        from segment_anything.modeling import (
            ImageEncoderViT,
            MaskDecoder,
            PromptEncoder,
            TwoWayTransformer,
        )

        super().__init__()
        if image_size % patch_size or patch_size % 4:
            raise ValueError(
                f"SAM image_size {image_size} must be a multiple of patch_size {patch_size}, "
                "which must be a multiple of 4"
            )
        if decoder_dim <= 0 or decoder_dim % 16:
            raise ValueError(
                f"SAM decoder_dim must be a positive multiple of 16 (8 attention heads on "
                f"decoder_dim / 2 channels), got {decoder_dim}"
            )
        self.tap_channels = {"image_embedding": int(decoder_dim)}
        self.image_size = image_size
        self.patch_size = patch_size
        self.mask_downsample = patch_size // 4  # the decoder upsamples the grid 4x
        grid = image_size // patch_size
        self.image_encoder = ImageEncoderViT(
            img_size=image_size,
            patch_size=patch_size,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=4,
            out_chans=decoder_dim,
            qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            global_attn_indexes=tuple(global_attn_indexes),
            window_size=window_size,
        )
        self.prompt_encoder = PromptEncoder(
            embed_dim=decoder_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(image_size, image_size),
            mask_in_chans=16,
        )
        self.mask_decoder = MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2, embedding_dim=decoder_dim, mlp_dim=8 * decoder_dim, num_heads=8
            ),
            transformer_dim=decoder_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=decoder_dim,
        )
        self.register_buffer("pixel_mean", torch.tensor(SAM_PIXEL_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(SAM_PIXEL_STD).view(1, 3, 1, 1), False)

    def preprocess(
        self, images: torch.Tensor, valid_hw: Optional[Sequence[Sequence[int]]] = None
    ) -> torch.Tensor:
        """(B, 3, H, W) 0-255 RGB, H, W <= S -> (x - mean) / std, zero-padded bottom/right to S.

        SAM pads after normalising, so padding is 0 in normalised units. ``valid_hw`` (one (h, w)
        per image) zeroes the area outside each image for batches that arrive already padded.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"SAM expects images (B, 3, H, W), got {tuple(images.shape)}")
        h, w = images.shape[-2:]
        if h > self.image_size or w > self.image_size:
            raise ValueError(f"SAM image {h}x{w} is larger than its input size {self.image_size}")
        x = (images - self.pixel_mean) / self.pixel_std
        if valid_hw is not None:
            rows = torch.arange(h, device=x.device).view(1, h, 1)
            cols = torch.arange(w, device=x.device).view(1, 1, w)
            hw = torch.as_tensor(valid_hw, device=x.device).view(-1, 2)
            inside = (rows < hw[:, 0, None, None]) & (cols < hw[:, 1, None, None])
            x = x * inside.unsqueeze(1)
        return F.pad(x, (0, self.image_size - w, 0, self.image_size - h))

    def extract_features(
        self, images: torch.Tensor, valid_hw: Optional[Sequence[Sequence[int]]] = None
    ) -> Dict[str, torch.Tensor]:
        """Images (B, 3, H, W) 0-255 -> {"image_embedding": (B, D, S/p, S/p)} (the tap), D the
        decoder width (256 for every official size)."""
        return {"image_embedding": self.image_encoder(self.preprocess(images, valid_hw))}

    def embed_points(self, points: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(P, N, 2) input-pixel points, (P, N) labels -> (P, N, 256) sparse prompt embeddings."""
        enc = self.prompt_encoder
        pe = enc.pe_layer.forward_with_coords(points + 0.5, enc.input_image_size)
        pad = (labels == LABEL_PAD).unsqueeze(-1)
        table = torch.cat([e.weight for e in enc.point_embeddings] + [enc.not_a_point_embed.weight])
        return torch.where(pad, 0.0, pe) + table[torch.where(labels < 0, 4, labels)]

    def decode_embedded_prompts(
        self,
        embedding: torch.Tensor,
        sparse: torch.Tensor,
        dense: Optional[torch.Tensor],
        prompts_per_image: int,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """SAM's mask decoder on prompts already embedded, every output kept.

        ``embedding`` (B, C, h, w) image embeddings; ``sparse`` (P, N, C) prompt tokens from
        `embed_points`, P = B * prompts_per_image, image-major; ``dense`` (P or 1, C, h, w)
        mask-prompt embeddings, or None for "no mask". Returns all 4 mask outputs
        (P, 4, 4h, 4w) and their IoU predictions (P, 4). The export graph runs this same code.
        """
        dec = self.mask_decoder
        p = sparse.shape[0]
        _, c, h, w = embedding.shape
        out_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(p, -1, -1), sparse], dim=1)
        if dense is None:
            dense = self.prompt_encoder.no_mask_embed.weight.view(1, c, 1, 1)
        src = embedding.repeat_interleave(prompts_per_image, dim=0) + dense
        image_pe = self.prompt_encoder.pe_layer((h, w)).unsqueeze(0).expand(p, -1, -1, -1)
        hs, src = dec.transformer(src, image_pe, tokens)
        upscaled = dec.output_upscaling(src.transpose(1, 2).reshape(p, c, h, w))
        hyper = torch.stack(
            [mlp(hs[:, 1 + i]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1
        )
        _, cu, hu, wu = upscaled.shape
        masks = (hyper @ upscaled.reshape(p, cu, hu * wu)).reshape(p, -1, hu, wu)
        return masks, dec.iou_prediction_head(hs[:, 0])

    def predict_masks(
        self,
        features: Dict[str, torch.Tensor],
        prompts: Prompts,
        multimask: bool = True,
        mask_inputs: Optional[torch.Tensor] = None,
        chunk_size: Optional[int] = None,
    ) -> PromptableOutput:
        """Decode Q prompts per image from ``features["image_embedding"]``.

        prompts: points (B, Q, N, 2) in model-input pixels, labels (B, Q, N) (-1 pad, 0 bg, 1 fg,
        2/3 box corners). mask_inputs: optional (B, Q, 1, 4h, 4w) low-res logits of an earlier
        round. Returns logits (B, Q, M, 4h, 4w), IoU (B, Q, M), M = 3 if multimask else 1.
        """
        embedding = features["image_embedding"]
        b = embedding.shape[0]
        points, labels = check_prompts(prompts, b)
        q = labels.shape[1]
        if not ((labels == LABEL_BOX_TL) | (labels == LABEL_BOX_BR)).any():
            points = F.pad(points, (0, 0, 0, 1))
            labels = F.pad(labels, (0, 1), value=LABEL_PAD)
        step = max(1, q if not chunk_size or chunk_size <= 0 else chunk_size)
        masks, ious = [], []
        for start in range(0, max(q, 1), step):
            stop = min(start + step, q)
            sparse = self.embed_points(
                points[:, start:stop].flatten(0, 1), labels[:, start:stop].flatten(0, 1)
            )
            dense = None
            if mask_inputs is not None:
                dense = self.prompt_encoder.mask_downscaling(
                    mask_inputs[:, start:stop].flatten(0, 1)
                )
            m, i = self.decode_embedded_prompts(embedding, sparse, dense, stop - start)
            masks.append(m.unflatten(0, (b, stop - start)))
            ious.append(i.unflatten(0, (b, stop - start)))
        sel = slice(1, None) if multimask else slice(0, 1)
        mask_logits = torch.cat(masks, dim=1)[:, :, sel]
        return PromptableOutput(mask_logits=mask_logits, iou_pred=torch.cat(ious, dim=1)[:, :, sel])

    def postprocess_masks(
        self, mask_logits: torch.Tensor, input_hw: Sequence[int], original_hw: Sequence[int]
    ) -> torch.Tensor:
        """(..., h, w) logits -> bilinear to S, crop the unpadded input_hw, -> original_hw."""
        return resize_mask_logits(mask_logits, self.image_size, input_hw, original_hw, "bilinear")

    def forward(self, images: torch.Tensor, prompts: Prompts, multimask: bool = True):
        """extract_features then predict_masks; returns (features, PromptableOutput)."""
        features = self.extract_features(images)
        return features, self.predict_masks(features, prompts, multimask)


@register_model("sam")
def build_sam(
    size: str = "vit_h",
    image_size: int = 1024,
    weights: Optional[str] = "",
    allow_unsafe_pickle: bool = False,
    **overrides,
) -> SamModel:
    """SAM of ``size`` (vit_h, vit_l, vit_b, tiny) at ``image_size``; ``overrides`` replace
    embed_dim, depth, num_heads, patch_size, global_attn_indexes, window_size, decoder_dim.
    ``weights``: a local checkpoint (pos_embed and global rel-pos tables are resized to
    image_size on load); "" keeps the random initialisation with a warning, None silently (the
    caller loads)."""
    if size not in SAM_SIZES:
        raise KeyError(f"unknown SAM size {size!r}; choose one of {sorted(SAM_SIZES)}")
    allowed = {
        "embed_dim",
        "depth",
        "num_heads",
        "patch_size",
        "global_attn_indexes",
        "window_size",
        "decoder_dim",
    }
    unknown = set(overrides) - allowed
    if unknown:
        raise TypeError(
            f"build_sam got unknown overrides {sorted(unknown)}; allowed {sorted(allowed)}"
        )
    config = {**SAM_SIZES[size], **overrides}
    model = SamModel(image_size=image_size, **config)
    if weights is not None:
        load_checkpoint(model, weights, allow_unsafe_pickle=allow_unsafe_pickle)
    return model

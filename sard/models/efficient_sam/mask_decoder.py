"""EfficientSAM's mask decoder: SAM's two-way transformer with GELU MLPs and GroupNorm upscaling.

Key layout (as in the released checkpoints): ``iou_token``, ``mask_tokens`` (4 tokens: one
single-mask token then 3 multimask tokens), ``transformer.layers.K.*``,
``transformer.final_attn_token_to_image``, ``transformer.norm_final_attn``,
``final_output_upscaling_layers.{0,1}`` (ConvTranspose 256->64 + GroupNorm(1) + GELU, then
ConvTranspose 64->32 + GELU), ``output_hypernetworks_mlps.K`` and ``iou_prediction_head``, where
every MLP is ``layers.K.0`` (Linear, followed by GELU) plus a final ``fc``.
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


class MLPBlock(nn.Module):
    """num_layers x (Linear -> GELU) to ``hidden_dim``, then a Linear ``fc`` to ``output_dim``."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * num_layers
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Linear(d_in, d_out), nn.GELU()) for d_in, d_out in zip(dims, dims[1:])
        )
        self.fc = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.fc(x)


class TokenAttention(nn.Module):
    """Attention whose q/k/v are projected to ``dim / downsample_rate`` channels first."""

    def __init__(self, dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        internal = dim // downsample_rate
        if internal % num_heads:
            raise ValueError(f"num_heads {num_heads} must divide internal dim {internal}")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, internal)
        self.k_proj = nn.Linear(dim, internal)
        self.v_proj = nn.Linear(dim, internal)
        self.out_proj = nn.Linear(internal, dim)
        # SAM's init: Xavier-uniform with fan_out = 3 * internal, zero biases.
        bound = math.sqrt(6.0 / (dim + 3 * internal))
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.uniform_(proj.weight, -bound, bound)
            nn.init.zeros_(proj.bias)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = (
            self._heads(self.q_proj(q)),
            self._heads(self.k_proj(k)),
            self._heads(self.v_proj(v)),
        )
        out = F.scaled_dot_product_attention(q, k, v)
        b, _, n, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, -1))


class TwoWayAttentionBlock(nn.Module):
    """Token self-attn, token->image cross-attn, token MLP, image->token cross-attn (post-norm)."""

    def __init__(
        self, dim: int, num_heads: int, mlp_dim: int, skip_first_layer_pe: bool = False
    ) -> None:
        super().__init__()
        self.self_attn = TokenAttention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = TokenAttention(dim, num_heads, downsample_rate=2)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, mlp_dim, dim, num_layers=1)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = TokenAttention(dim, num_heads, downsample_rate=2)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        if not self.skip_first_layer_pe:
            queries = queries + query_pe
        queries = self.norm1(queries + self.self_attn(queries, queries, queries))
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """(image (P, C, h, w), PE (1 or P, C, h, w), tokens (P, T, C)) -> (tokens, image tokens)."""

    def __init__(self, depth: int = 2, dim: int = 256, num_heads: int = 8, mlp_dim: int = 2048):
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(dim, num_heads, mlp_dim, skip_first_layer_pe=(i == 0))
            for i in range(depth)
        )
        self.final_attn_token_to_image = TokenAttention(dim, num_heads, downsample_rate=2)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(
        self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        keys = image.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe)
        attn = self.final_attn_token_to_image(queries + tokens, keys + key_pe, keys)
        return self.norm_final_attn(queries + attn), keys


class EfficientSamMaskDecoder(nn.Module):
    """Per prompt: image embedding + sparse prompt tokens -> 4 mask logits (4x upscaled) + 4 IoUs.

    Index 0 is the single-mask output, 1..3 the multimask outputs (SAM's convention).
    """

    def __init__(
        self,
        dim: int = 256,
        num_multimask_outputs: int = 3,
        upscaling_dims: Sequence[int] = (64, 32),
        iou_head_hidden_dim: int = 256,
        iou_head_layers: int = 2,
        transformer_depth: int = 2,
        transformer_heads: int = 8,
        transformer_mlp_dim: int = 2048,
    ) -> None:
        super().__init__()
        self.num_mask_tokens = num_multimask_outputs + 1
        self.transformer = TwoWayTransformer(
            transformer_depth, dim, transformer_heads, transformer_mlp_dim
        )
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        layers, c_in = [], dim
        for i, c_out in enumerate(upscaling_dims):
            last = i == len(upscaling_dims) - 1
            layers.append(
                nn.Sequential(
                    nn.ConvTranspose2d(c_in, c_out, kernel_size=2, stride=2),
                    nn.Identity() if last else nn.GroupNorm(1, c_out),
                    nn.GELU(),
                )
            )
            c_in = c_out
        self.final_output_upscaling_layers = nn.ModuleList(layers)
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLPBlock(dim, dim, c_in, num_layers=2) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLPBlock(
            dim, iou_head_hidden_dim, self.num_mask_tokens, num_layers=iou_head_layers
        )

    def forward(
        self, image: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """image (P, C, h, w) already repeated per prompt, sparse (P, N, C).

        Returns all mask logits (P, 4, 4h, 4w) and IoU predictions (P, 4).
        """
        p, c, h, w = image.shape
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(p, -1, -1), sparse], dim=1)
        hs, src = self.transformer(image, image_pe, tokens)
        upscaled = src.transpose(1, 2).reshape(p, c, h, w)
        for layer in self.final_output_upscaling_layers:
            upscaled = layer(upscaled)
        hyper = torch.stack(
            [mlp(hs[:, 1 + i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        _, cu, hu, wu = upscaled.shape
        masks = (hyper @ upscaled.reshape(p, cu, hu * wu)).reshape(p, -1, hu, wu)
        return masks, self.iou_prediction_head(hs[:, 0])

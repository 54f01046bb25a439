"""EfficientSAM's image encoder: a plain ViT (global attention only) plus SAM's 256-channel neck.

Module and parameter names follow the released checkpoints (``patch_embed.proj``, ``pos_embed``,
``blocks.K.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``neck.{0,1,2,3}``) so that
``efficient_sam_vit{t,s}.pt`` load without renaming.

``pos_embed`` is stored as in pre-training: (1, 1 + 14*14, C), a cls slot followed by a 14x14 grid
for 224-pixel inputs. At run time the grid part is bicubically resized to the input's patch grid,
which is what lets one set of weights serve any image size (a multiple of the patch size).
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

PRETRAIN_IMAGE_SIZE = 224  # pos_embed is stored for this input size (14x14 patches + cls)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) map: y = w * (x - mean_c) / std_c + b."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: (B, 3, H, W) -> (B, C, H/p, W/p)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Attention(nn.Module):
    """Multi-head self-attention over tokens (B, N, C) with a fused qkv projection."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        # SDPA computes softmax(q k^T / sqrt(d)) v, the same as the reference attention.
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm ViT block: x + attn(norm1(x)), then x + mlp(norm2(x)); LayerNorm eps 1e-6."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def resize_abs_pos(pos_embed: torch.Tensor, grid_hw: Tuple[int, int]) -> torch.Tensor:
    """Drop the cls slot of a (1, 1 + g*g, C) table and resize its g x g grid to ``grid_hw``.

    Returns (1, H, W, C). Bicubic, align_corners=False, as the reference implementation does.
    """
    table = pos_embed[:, 1:]
    g = int(math.isqrt(table.shape[1]))
    if g * g != table.shape[1]:
        raise ValueError(f"pos_embed grid of {table.shape[1]} tokens is not square")
    grid = table.reshape(1, g, g, -1)
    if (g, g) == tuple(grid_hw):
        return grid
    grid = F.interpolate(
        grid.permute(0, 3, 1, 2), size=grid_hw, mode="bicubic", align_corners=False
    )
    return grid.permute(0, 2, 3, 1)


class EfficientSamImageEncoder(nn.Module):
    """ViT encoder: (B, 3, H, W) normalised image -> (B, 256, H/p, W/p) image embedding.

    H and W must be multiples of ``patch_size``; ``img_size`` is the size the model is meant to
    run at (used by the prompt and mask code), not a hard limit. The width, depth and heads of
    each size live in ``EFFICIENT_SAM_SIZES`` (``model.py``), so they have no defaults here.
    """

    def __init__(
        self,
        *,
        img_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        patch_size: int = 16,
        in_chans: int = 3,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        num_patches = (PRETRAIN_IMAGE_SIZE // patch_size) ** 2
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"EfficientSAM input {h}x{w} is not a multiple of the patch size {self.patch_size}"
            )
        x = self.patch_embed(x).permute(0, 2, 3, 1)  # (B, gh, gw, C)
        gh, gw = x.shape[1:3]
        x = x + resize_abs_pos(self.pos_embed, (gh, gw))
        x = x.reshape(x.shape[0], gh * gw, -1)
        for block in self.blocks:
            x = block(x)
        x = x.reshape(x.shape[0], gh, gw, -1).permute(0, 3, 1, 2)
        return self.neck(x)

"""EfficientSAM's prompt encoder: points only (clicks and box corners), no mask prompts.

Each point becomes PE(x, y) + e(label), where PE is SAM's random-Fourier positional encoding of the
pixel centre normalised by the input size and e(label) is a learned vector:
``point_embeddings`` for label 1, ``bbox_top_left_embeddings`` for 2,
``bbox_bottom_right_embeddings`` for 3 and ``invalid_points`` for -1 (padding). As in the released
model, label 0 (background click) adds nothing: such a point carries its position only.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn as nn


class PositionEmbeddingRandom(nn.Module):
    """PE(u) = [sin(2 pi (2u - 1) G), cos(2 pi (2u - 1) G)] for u in [0, 1]^2, G ~ N(0, 1)^(2 x F).

    ``positional_encoding_gaussian_matrix`` is a persistent buffer: it is part of the checkpoint.
    """

    def __init__(self, num_pos_feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_pos_feats))

    def encode(self, coords01: torch.Tensor) -> torch.Tensor:
        """(..., 2) coordinates in [0, 1] -> (..., 2F) features."""
        proj = (2 * coords01 - 1) @ self.positional_encoding_gaussian_matrix
        proj = 2 * math.pi * proj
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)

    def dense(self, grid_hw: Tuple[int, int]) -> torch.Tensor:
        """Encoding of every cell centre of an (h, w) grid: (2F, h, w)."""
        h, w = grid_hw
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (h, w, 2) as (x, y)
        return self.encode(grid).permute(2, 0, 1)

    def points(self, coords: torch.Tensor, input_hw: Tuple[int, int]) -> torch.Tensor:
        """(..., 2) pixel coordinates (x, y) -> (..., 2F), normalised by the input (h, w)."""
        scale = coords.new_tensor([1.0 / input_hw[1], 1.0 / input_hw[0]])
        return self.encode(coords.float() * scale)


class EfficientSamPromptEncoder(nn.Module):
    """(points (P, N, 2) in input pixels, labels (P, N)) -> sparse embeddings (P, N, C)."""

    def __init__(self, embed_dim: int = 256) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.invalid_points = nn.Embedding(1, embed_dim)
        self.point_embeddings = nn.Embedding(1, embed_dim)
        self.bbox_top_left_embeddings = nn.Embedding(1, embed_dim)
        self.bbox_bottom_right_embeddings = nn.Embedding(1, embed_dim)

    def get_dense_pe(self, grid_hw: Tuple[int, int]) -> torch.Tensor:
        """Positional encoding of the image-embedding grid: (1, C, h, w)."""
        return self.pe_layer.dense(grid_hw).unsqueeze(0)

    def forward(
        self, points: torch.Tensor, labels: torch.Tensor, input_hw: Tuple[int, int]
    ) -> torch.Tensor:
        pe = self.pe_layer.points(points + 0.5, input_hw)  # +0.5: centre of the pixel
        labels = labels.unsqueeze(-1)
        pe = pe + self.invalid_points.weight * (labels == -1)
        pe = pe + self.point_embeddings.weight * (labels == 1)
        pe = pe + self.bbox_top_left_embeddings.weight * (labels == 2)
        return pe + self.bbox_bottom_right_embeddings.weight * (labels == 3)

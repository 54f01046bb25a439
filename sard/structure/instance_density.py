"""Ground-truth density: how many distinct instances appear in a window of feature cells."""

from __future__ import annotations

import torch

from .filters import box_sum

# Bound on ids x cells held at once, so that images with thousands of instances stay in memory.
_MAX_PRESENCE_ELEMENTS = 1 << 22


def _cell_index(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    """Feature cell (0..n_out-1) of each of n_in id-map pixels along one axis."""
    return torch.div(torch.arange(n_in, device=device) * n_out, n_in, rounding_mode="floor")


def instance_count_density(
    instance_ids: torch.Tensor, size: tuple[int, int], radius: int
) -> torch.Tensor:
    """Distinct instances per window: float32 (B, 1, H, W) for ``size`` = (H, W).

    ``instance_ids`` is an integer (B, Hi, Wi) map at any resolution. Id-map pixel (i, j) lies
    in feature cell (floor(i*H/Hi), floor(j*W/Wi)); a map coarser than the features is first
    sampled at each cell (nearest). Then

        D_ids(y, x) = #{ k > 0 : some pixel with id k lies in a cell (y', x') of the image with
                         |y' - y| <= r and |x' - x| <= r }.

    Ids <= 0 are background or ignore and are never counted, so a window over background only
    has D_ids = 0, and a window touching one instance has 1 whatever its size on screen.
    """
    if instance_ids.dim() != 3:
        raise ValueError(f"instance_ids must be (B, H, W), got shape {tuple(instance_ids.shape)}")
    if instance_ids.dtype.is_floating_point or instance_ids.dtype.is_complex:
        raise TypeError(f"instance_ids must be an integer tensor, got {instance_ids.dtype}")
    h, w = size
    b, hi, wi = instance_ids.shape
    device = instance_ids.device
    ids = instance_ids.long()
    if hi < h:
        ids = ids[:, _cell_index(h, hi, device)]
        hi = h
    if wi < w:
        ids = ids[:, :, _cell_index(w, wi, device)]
        wi = w
    cells = (_cell_index(hi, h, device)[:, None] * w + _cell_index(wi, w, device)[None, :]).view(-1)
    out = torch.zeros(b, 1, h, w, dtype=torch.float32, device=device)
    ids_per_block = max(1, _MAX_PRESENCE_ELEMENTS // (h * w))
    for i in range(b):
        flat = ids[i].reshape(-1)
        foreground = flat > 0
        values, cell_of_value = flat[foreground], cells[foreground]
        if values.numel() == 0:
            continue
        unique, which = torch.unique(values, return_inverse=True)
        for first in range(0, unique.numel(), ids_per_block):
            count = min(ids_per_block, unique.numel() - first)
            keep = (which >= first) & (which < first + count)
            presence = torch.zeros(count * h * w, dtype=torch.float32, device=device)
            presence[(which[keep] - first) * (h * w) + cell_of_value[keep]] = 1.0
            windows = box_sum(presence.view(1, count, h, w), radius)
            out[i, 0] += (windows > 0.5).sum(dim=1)[0].float()
    return out

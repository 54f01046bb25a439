"""Channel-summed second moments of teacher features: everything W(i) needs from the C channels.

The only per-channel work in W(i) is linear filtering (Sobel, box sums) followed by a product;
every product is summed over channels straight away, so the C-channel tensor is walked once,
in cache-sized chunks, and what leaves this module is five (B, H, W) maps:

    gxx = sum_c gx_c^2      gyy = sum_c gy_c^2      gxy = sum_c gx_c * gy_c
    sq  = sum_c f_c^2       box_sq = sum_c (sum_{window} f_c)^2

with f_c = F_c - F_c[0, 0] (per image and channel). Any per-channel shift leaves gradients and
local variances unchanged; removing one keeps E[x^2] - E[x]^2 well conditioned in float32, and
shifting by a pixel's own value (rather than the mean) makes a constant channel exactly zero,
so constant features give exactly zero E, C and D. gx, gy are the Sobel derivatives
(normalised by 1/8 so a unit ramp has gradient 1; replicate padding) and the window the clipped
(2r+1)x(2r+1) box of ``filters.ClippedBoxSum``.
"""

from __future__ import annotations

import torch

from .filters import ClippedBoxSum

# Index of each moment in the (B, 5, H, W) result of `channel_moments`.
GXX, GYY, BOX_SQ, GXY, SQ = range(5)

# Elements per chunk. On CPU, 512 KiB of float32 per buffer keeps a chunk's working set (about
# seven buffers) in cache while launching few enough ops (2^16..2^18 measured, 2^17 best). On
# GPUs launches dominate, so chunks are large, capped to bound the scratch memory (~0.5 GB).
_CPU_CHUNK_ELEMENTS = 1 << 17
_GPU_CHUNK_ELEMENTS = 1 << 24


class _ChunkWorkspace:
    """Scratch buffers and all views of them for one chunk shape (n images, k channels, H, W).

    Reused across chunks: nothing is allocated and no view is built per chunk, which matters
    because a chunk is small (it must stay in cache) and a CPU op costs microseconds to launch.
    ``per_channel`` (n, 5, k, H, W) holds gx, gy, the window sums, gx*gy and f^2 in the slot
    order of the result, so that one sum over k reduces them all; ``scratch`` holds in turn the
    x- and y-differences and the box filter's row sums.
    """

    def __init__(self, n: int, k: int, h: int, w: int, radius: int | None, device) -> None:
        f32 = torch.float32
        p = torch.empty(n, k, h + 2, w + 2, dtype=f32, device=device)
        scratch = torch.empty(n * k * (h + 2) * (w + 2), dtype=f32, device=device)
        self.centred = p[:, :, 1:-1, 1:-1]
        # Replicate padding: rows first, then full columns (which fills the corners too).
        self.pad_pairs = [
            (p[:, :, 0, 1:-1], p[:, :, 1, 1:-1]),
            (p[:, :, -1, 1:-1], p[:, :, -2, 1:-1]),
            (p[:, :, :, 0], p[:, :, :, 1]),
            (p[:, :, :, -1], p[:, :, :, -2]),
        ]
        per_channel = torch.empty(n, 5, k, h, w, dtype=f32, device=device)
        self.gx, self.gy = per_channel[:, GXX], per_channel[:, GYY]
        self.gxy, self.sq = per_channel[:, GXY], per_channel[:, SQ]
        # Sobel = central difference along one axis, [1, 2, 1] smoothing along the other.
        dx = scratch[: n * k * (h + 2) * w].view(n, k, h + 2, w)
        dy = scratch[: n * k * h * (w + 2)].view(n, k, h, w + 2)
        self.dx, self.dx_args = dx, (p[..., 2:], p[..., :-2])
        self.gx_args = (dx[:, :, :-2], dx[:, :, 2:], dx[:, :, 1:-1])
        self.dy, self.dy_args = dy, (p[:, :, 2:], p[:, :, :-2])
        self.gy_args = (dy[..., :-2], dy[..., 2:], dy[..., 1:-1])
        self.box = None
        if radius is None:
            # No window sums: square gx, gy only and reduce around the unused slot.
            self.squared = per_channel[:, :BOX_SQ]
            self.reduce_pairs = [(per_channel[:, :BOX_SQ], slice(0, BOX_SQ))]
            self.reduce_pairs.append((per_channel[:, GXY:], slice(GXY, SQ + 1)))
        else:
            rows = scratch[: n * k * h * w].view(n, k, h, w)
            self.box = ClippedBoxSum((n, k, h, w), radius, device, rows=rows)
            self.box_out = per_channel[:, BOX_SQ]
            self.squared = per_channel[:, : BOX_SQ + 1]
            self.reduce_pairs = [(per_channel, slice(0, SQ + 1))]
        self.reduced = torch.empty(n, 5, h, w, dtype=f32, device=device)

    def run(self, x: torch.Tensor, target: torch.Tensor, accumulate: bool) -> None:
        """Add (or, if not ``accumulate``, write) the moments of chunk x into ``target``.

        x is (n, k, H, W) of any float dtype; target is float32 (n, 5, H, W) in the slot order of
        `channel_moments`, Sobel not yet scaled by 1/8.
        """
        centred = self.centred
        torch.sub(x, x[:, :, :1, :1].float(), out=centred)
        for dst, src in self.pad_pairs:
            dst.copy_(src)
        torch.sub(*self.dx_args, out=self.dx)
        up, down, mid = self.gx_args
        torch.add(up, down, out=self.gx).add_(mid, alpha=2.0)
        torch.sub(*self.dy_args, out=self.dy)
        left, right, mid = self.gy_args
        torch.add(left, right, out=self.gy).add_(mid, alpha=2.0)
        if self.box is not None:
            self.box(centred, out=self.box_out)
        torch.mul(self.gx, self.gy, out=self.gxy)
        torch.mul(centred, centred, out=self.sq)
        self.squared.square_()
        for source, slots in self.reduce_pairs:
            if accumulate:
                target[:, slots] += torch.sum(source, dim=2, out=self.reduced[:, slots])
            else:
                torch.sum(source, dim=2, out=target[:, slots])


def _chunk_plan(b: int, c: int, hw: int, device: torch.device) -> tuple[int, int]:
    """(images, channels) per chunk so that a chunk holds about the target element count."""
    target = _CPU_CHUNK_ELEMENTS if device.type == "cpu" else _GPU_CHUNK_ELEMENTS
    if c * hw <= target:
        return max(1, min(b, target // (c * hw))), c
    return 1, max(1, min(c, target // hw))


def channel_moments(features: torch.Tensor, radius: int | None) -> torch.Tensor:
    """Channel-summed moments of (B, C, H, W) features as float32 (B, 5, H, W).

    Slots (see the GXX.. constants): gxx, gyy, box_sq, gxy, sq, as in the module docstring, with
    the 1/8 Sobel normalisation applied. ``radius=None`` skips the window sums (box_sq is then
    zero), for callers that take the density from instance ids instead.
    """
    b, c, h, w = features.shape
    device = features.device
    out = torch.zeros(b, 5, h, w, dtype=torch.float32, device=device)
    nb, kb = _chunk_plan(b, c, h * w, device)
    workspaces: dict[tuple[int, int], _ChunkWorkspace] = {}
    for b0 in range(0, b, nb):
        n = min(nb, b - b0)
        for c0 in range(0, c, kb):
            k = min(kb, c - c0)
            ws = workspaces.get((n, k))
            if ws is None:
                ws = workspaces[(n, k)] = _ChunkWorkspace(n, k, h, w, radius, device)
            ws.run(features[b0 : b0 + n, c0 : c0 + k], out[b0 : b0 + n], accumulate=c0 > 0)
    out[:, [GXX, GYY, GXY]] *= 1.0 / 64.0
    return out

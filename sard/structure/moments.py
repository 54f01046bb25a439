"""Channel-summed second moments of teacher features: everything W(i) needs from the C channels.

The only per-channel work in W(i) is linear filtering (Sobel, box sums) followed by a product;
every product is summed over channels straight away, so the C-channel tensor is walked once,
in cache-sized chunks, and what leaves this module is five (B, H, W) maps:

    gxx = sum_c gx_c^2      gyy = sum_c gy_c^2      gxy = sum_c gx_c * gy_c
    sq  = sum_c f_c^2       mean_sq = sum_c (mean_{window} f_c)^2

with f_c = F_c - F_c[0, 0] (per image and channel). Any per-channel shift leaves gradients and
local variances unchanged; removing one keeps E[x^2] - E[x]^2 well conditioned in float32, and
shifting by a pixel's own value (rather than the mean) makes a constant channel exactly zero,
so constant features give exactly zero E, C and D. gx, gy are the Sobel derivatives
(normalised by 1/8 so a unit ramp has gradient 1; replicate padding) and the window the clipped
(2r+1)x(2r+1) box of ``filters.ClippedBoxSum``.

Two paths compute the same moments (`moments_path` picks one per device):

* ``"chunked"`` (CPU): cache-sized chunks through preallocated buffers, many small ops, window
  sums by running sums. Tuned on CPU, where a chunk that stays in cache beats a bigger op.
* ``"dense"`` (GPUs and any other device): a few whole-tensor ops per chunk of up to 2^24
  elements (replicate pad, shifted adds, `avg_pool2d` window means, channel sums). On a GPU the
  cost is kernel launches and memory passes, so fewer, larger ops win; no running sums (a
  scan is a poor GPU kernel) and no matrix unit (convolutions may run in TF32 there, which
  would round the gradients), so the arithmetic stays float32 on every device.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F

from .filters import ClippedBoxSum, box_pixel_count, window_mean

# Index of each moment in the (B, 5, H, W) result of `channel_moments`.
# The three structure-tensor entries are adjacent (slices, not gathers, pick them out), and so
# are the three slots the chunked path squares in place (mean_sq, gxx, gyy).
MEAN_SQ, GXX, GYY, GXY, SQ = range(5)

# Elements per chunk. On CPU, 512 KiB of float32 per buffer keeps a chunk's working set (about
# seven buffers) in cache while launching few enough ops (2^16..2^18 measured, 2^17 best). The
# dense path wants few launches, so its chunks are large, capped to bound the temporaries
# (about ten chunk-sized float32 tensors, ~0.7 GB at 2^24).
_CPU_CHUNK_ELEMENTS = 1 << 17
_DENSE_CHUNK_ELEMENTS = 1 << 24


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
            # No window sums: square gx, gy only and leave the mean_sq slot (the first) at zero.
            self.squared = per_channel[:, GXX : GYY + 1]
            self.reduce_pairs = [(per_channel[:, GXX:], slice(GXX, SQ + 1))]
        else:
            rows = scratch[: n * k * h * w].view(n, k, h, w)
            self.box = ClippedBoxSum((n, k, h, w), radius, device, rows=rows)
            self.box_out = per_channel[:, MEAN_SQ]
            self.squared = per_channel[:, MEAN_SQ : GYY + 1]
            self.reduce_pairs = [(per_channel, slice(0, SQ + 1))]
        self.reduced = torch.empty(n, 5, h, w, dtype=f32, device=device)

    def run(self, x: torch.Tensor, target: torch.Tensor, accumulate: bool) -> None:
        """Add (or, if not ``accumulate``, write) the moments of chunk x into ``target``.

        x is (n, k, H, W) of any float dtype; target is float32 (n, 5, H, W) in the slot order of
        `channel_moments`, Sobel not yet scaled by 1/8 and the MEAN_SQ slot holding squared
        window sums (running sums make sums, not means, cheap), not yet divided by count^2.
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


def _dense_chunk_moments(x: torch.Tensor, radius: int | None) -> torch.Tensor:
    """The moments of chunk x (n, k, H, W) as float32 (n, 5, H, W), with whole-tensor ops.

    Slot order of `channel_moments`, Sobel not yet scaled by 1/8 (as `_ChunkWorkspace.run`),
    but the MEAN_SQ slot is final: pooling gives window means directly. Each slot is a channel
    sum, so the moments of chunks of channels add up.
    """
    n, k, h, w = x.shape
    centred = x.float() - x[:, :, :1, :1].float()
    # F.pad's replicate mode wants (N, C, H, W); the flat view keeps it one kernel.
    p = F.pad(centred.reshape(n * k, 1, h, w), (1, 1, 1, 1), mode="replicate").view(
        n, k, h + 2, w + 2
    )
    dx = p[..., 2:] - p[..., :-2]  # (n, k, H + 2, W): x-differences on every padded row
    gx = torch.add(dx[:, :, :-2], dx[:, :, 2:]).add_(dx[:, :, 1:-1], alpha=2.0)
    dy = p[:, :, 2:] - p[:, :, :-2]  # (n, k, H, W + 2)
    gy = torch.add(dy[..., :-2], dy[..., 2:]).add_(dy[..., 1:-1], alpha=2.0)
    slots = [None] * 5
    slots[GXX] = gx.square().sum(dim=1)
    slots[GYY] = gy.square().sum(dim=1)
    slots[GXY] = (gx * gy).sum(dim=1)
    slots[SQ] = centred.square().sum(dim=1)
    if radius is None:
        slots[MEAN_SQ] = torch.zeros_like(slots[SQ])
    else:
        slots[MEAN_SQ] = window_mean(centred, radius).square().sum(dim=1)
    return torch.stack(slots, dim=1)


MOMENTS_PATHS = ("chunked", "dense")
_forced_path: str | None = None


def moments_path(device: torch.device) -> str:
    """Which implementation `channel_moments` uses on ``device``: "chunked" on CPU, "dense"
    elsewhere, unless `forced_moments_path` says otherwise."""
    if _forced_path is not None:
        return _forced_path
    return "chunked" if device.type == "cpu" else "dense"


@contextmanager
def forced_moments_path(path: str | None) -> Iterator[None]:
    """Within the block, every device uses ``path`` ("chunked" or "dense"; None = per device).

    For benchmarks and tests that compare the two implementations on one device.
    """
    global _forced_path
    if path is not None and path not in MOMENTS_PATHS:
        raise ValueError(f"path must be one of {MOMENTS_PATHS} or None, got {path!r}")
    previous, _forced_path = _forced_path, path
    try:
        yield
    finally:
        _forced_path = previous


def _chunk_plan(b: int, c: int, hw: int, target: int) -> tuple[int, int]:
    """(images, channels) per chunk so that a chunk holds about ``target`` elements."""
    if c * hw <= target:
        return max(1, min(b, target // (c * hw))), c
    return 1, max(1, min(c, target // hw))


def channel_moments(features: torch.Tensor, radius: int | None) -> torch.Tensor:
    """Channel-summed moments of (B, C, H, W) features as float32 (B, 5, H, W).

    Slots (see the MEAN_SQ.. constants): mean_sq, gxx, gyy, gxy, sq, as in the module docstring, with
    the 1/8 Sobel normalisation applied. ``radius=None`` skips the window means (mean_sq is then
    zero), for callers that take the density from instance ids instead.
    """
    b, c, h, w = features.shape
    device = features.device
    dense = moments_path(device) == "dense"
    nb, kb = _chunk_plan(b, c, h * w, _DENSE_CHUNK_ELEMENTS if dense else _CPU_CHUNK_ELEMENTS)
    out = (
        None
        if dense and (nb, kb) == (b, c)
        else torch.zeros(b, 5, h, w, dtype=torch.float32, device=device)
    )
    workspaces: dict[tuple[int, int], _ChunkWorkspace] = {}
    for b0 in range(0, b, nb):
        n = min(nb, b - b0)
        for c0 in range(0, c, kb):
            chunk = features[b0 : b0 + n, c0 : c0 + min(kb, c - c0)]
            if out is None:  # a single dense chunk: its moments are the result
                out = _dense_chunk_moments(chunk, radius)
            elif dense:
                out[b0 : b0 + n] += _dense_chunk_moments(chunk, radius)
            else:
                key = (n, chunk.shape[1])
                ws = workspaces.get(key)
                if ws is None:
                    ws = workspaces[key] = _ChunkWorkspace(n, key[1], h, w, radius, device)
                ws.run(chunk, out[b0 : b0 + n], accumulate=c0 > 0)
    out[:, GXX : GXY + 1] *= 1.0 / 64.0
    if workspaces and radius is not None:
        # The chunked path summed windows; a mean is the sum over the window's pixel count.
        out[:, MEAN_SQ] /= box_pixel_count(h, w, radius, device)[0].square()
    return out

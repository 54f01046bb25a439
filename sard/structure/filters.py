"""Separable spatial filters on (N, K, H, W) float32 maps, with the border rules of W(i).

* ``ClippedBoxSum``: sum over the (2r+1)x(2r+1) window around each pixel, the window clipped
  to the image (pixels outside the image are absent, not padded). Running sums (cumsum), so the
  cost per pixel does not depend on r.
* ``box_pixel_count``: how many in-image pixels each clipped window holds.
* ``window_mean``: the mean over the same clipped window (sum / count), by pooling.
* ``gaussian_blur_replicate``: separable Gaussian of std ``sigma`` pixels, taps on
  [-ceil(3 sigma), ceil(3 sigma)] normalised to sum 1, replicate padding.

Every rule here is symmetric under 90-degree rotations and flips, which is what makes W(i)
equivariant to them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class ClippedBoxSum:
    """Window sums ``out[..., y, x] = sum_{|y'-y|<=r, |x'-x|<=r, (y',x') in image} x[..., y', x']``.

    Built for one input shape (N, K, H, W) and reused: the scratch buffers and every view of them
    live on the object, so calling it on many same-sized chunks allocates nothing and spends
    little time outside the arithmetic. With Z the zero-led running sum along an axis (Z[0] = 0,
    Z[m] = x[0] + ... + x[m-1]), the clipped window sum along that axis is
    Z[min(i + r + 1, n)] - Z[max(i - r, 0)]; storing Z with r + 1 zeros in front and r copies of
    Z[n] behind turns both clamps into one shifted subtraction.

    ``rows`` may be given as scratch of the input's shape (N, K, H, W) that the caller lends.
    """

    def __init__(
        self,
        shape: tuple[int, int, int, int],
        radius: int,
        device: torch.device | str,
        rows: torch.Tensor | None = None,
    ) -> None:
        n, k, h, w = shape
        # A radius past the image size clips to the whole axis: clamp it to keep buffers small.
        rh, rw = min(radius, h), min(radius, w)
        f32 = torch.float32
        self._rows = torch.empty(shape, dtype=f32, device=device) if rows is None else rows
        # The leading zeros are written once here and never overwritten.
        zw = torch.zeros(n, k, h, w + 2 * rw + 1, dtype=f32, device=device)
        zh = torch.zeros(n, k, h + 2 * rh + 1, w, dtype=f32, device=device)
        self._w_sums, self._w_tail, self._w_last = (
            zw[..., rw + 1 : rw + 1 + w],
            zw[..., rw + 1 + w :],
            zw[..., rw + w : rw + w + 1],
        )
        self._w_hi, self._w_lo = zw[..., 2 * rw + 1 :], zw[..., :w]
        self._h_sums, self._h_tail, self._h_last = (
            zh[:, :, rh + 1 : rh + 1 + h],
            zh[:, :, rh + 1 + h :],
            zh[:, :, rh + h : rh + h + 1],
        )
        self._h_hi, self._h_lo = zh[:, :, 2 * rh + 1 :], zh[:, :, :h]
        self._fill_w, self._fill_h = rw > 0, rh > 0
        # The running sum along H treats each pair of neighbouring columns as one complex
        # number: a scalar scan then does two columns per step (CPU cumsum is latency-bound,
        # so this is ~1.7x faster) and the result is the same sums.
        self._h_in, self._h_out = self._rows, self._h_sums
        if w % 2 == 0 and self._rows.is_contiguous():
            self._h_in = torch.view_as_complex(self._rows.view(n, k, h, w // 2, 2))
            self._h_out = torch.view_as_complex(self._h_sums.view(n, k, h, w // 2, 2))

    def __call__(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Write the clipped window sums of ``x`` (the built shape, float32) into ``out``."""
        torch.cumsum(x, dim=3, out=self._w_sums)
        if self._fill_w:
            self._w_tail.copy_(self._w_last.expand_as(self._w_tail))
        torch.sub(self._w_hi, self._w_lo, out=self._rows)
        torch.cumsum(self._h_in, dim=2, out=self._h_out)
        if self._fill_h:
            self._h_tail.copy_(self._h_last.expand_as(self._h_tail))
        return torch.sub(self._h_hi, self._h_lo, out=out)


def box_sum(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Clipped (2r+1)x(2r+1) window sums of an (N, K, H, W) tensor, as a new float32 tensor."""
    x = x.float()
    out = torch.empty_like(x)
    return ClippedBoxSum(tuple(x.shape), radius, x.device)(x, out)


def box_pixel_count(h: int, w: int, radius: int, device: torch.device | str) -> torch.Tensor:
    """Number of in-image pixels in the clipped window around each pixel, shape (1, 1, H, W).

    count(y, x) = (min(y+r, H-1) - max(y-r, 0) + 1) * (min(x+r, W-1) - max(x-r, 0) + 1).
    """

    def axis_count(n: int) -> torch.Tensor:
        i = torch.arange(n, device=device)
        return ((i + radius).clamp(max=n - 1) - (i - radius).clamp(min=0) + 1).float()

    return (axis_count(h)[:, None] * axis_count(w)[None, :])[None, None]


def window_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean of float32 (N, K, H, W) ``x`` over the clipped (2r+1)x(2r+1) window of each pixel.

    mean(y, x) = box_sum(y, x) / box_pixel_count(y, x). The clipped window is a product of two
    intervals, so its mean is a mean over rows of means over columns: two 1-D average poolings
    that leave padding out of the count (``count_include_pad=False``). No scan and no matrix
    unit, which makes it the GPU-friendly form of ``box_sum``.
    """
    h, w = x.shape[-2:]
    # A radius past the image size clips to the whole axis; pooling needs the pad <= the image.
    rh, rw = min(radius, h), min(radius, w)
    if rw:
        x = F.avg_pool2d(x, (1, 2 * rw + 1), 1, (0, rw), count_include_pad=False)
    if rh:
        x = F.avg_pool2d(x, (2 * rh + 1, 1), 1, (rh, 0), count_include_pad=False)
    return x


def gaussian_taps(sigma: float) -> list[float]:
    """1-D Gaussian taps exp(-t^2 / (2 sigma^2)), t = -R..R with R = ceil(3 sigma), sum 1.

    Python floats (computed in float64), so that using them never waits on a GPU.
    """
    radius = max(1, math.ceil(3.0 * sigma))
    taps = [math.exp(-0.5 * (t / sigma) ** 2) for t in range(-radius, radius + 1)]
    total = math.fsum(taps)
    return [tap / total for tap in taps]


def gaussian_blur_replicate(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of float32 (N, K, H, W) maps with replicate padding.

    ``sigma`` is in pixels of the maps; ``sigma == 0`` returns the maps unchanged. Written as
    weighted sums of shifted copies rather than a convolution: the maps are few, and cuDNN may
    round convolution inputs to TF32 on recent GPUs (PyTorch's default), while W is float32.
    """
    if sigma == 0:
        return maps
    taps = gaussian_taps(sigma)
    radius = (len(taps) - 1) // 2
    for dim, pad in ((3, (radius, radius, 0, 0)), (2, (0, 0, radius, radius))):
        padded = F.pad(maps, pad, mode="replicate")
        size = maps.shape[dim]
        maps = padded.narrow(dim, 0, size) * taps[0]
        for shift, tap in enumerate(taps[1:], start=1):
            maps.add_(padded.narrow(dim, shift, size), alpha=tap)
    return maps

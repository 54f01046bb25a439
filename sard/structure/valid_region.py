"""Valid regions of padded images on a feature grid, as W(i) and the losses take them.

A resized image that does not fill the square model input is zero-padded bottom/right (SAM's
"longest_pad", the semantic "fit_pad"). Its features then hold an image/padding edge that is no
structure of the scene, and cells that show no scene at all. ``valid_mask`` (B, 1, H, W) bool
marks the cells that show the image; W(i) and the representation losses use only those.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch

# (y0, y1, x0, x1), half-open: one image's valid cells.
Rectangle = Tuple[int, int, int, int]


def valid_cells(
    valid_hw: Sequence[Sequence[int]],
    input_hw: Sequence[int],
    grid_hw: Sequence[int],
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(B, 1, Hg, Wg) bool: the grid cells whose centre lies inside each image's valid region.

    ``valid_hw`` is one (h, w) per image in input pixels (the mapper's ``input_hw``: the image
    occupies rows < h and columns < w of the ``input_hw`` frame); the grid covers the whole
    frame. Cell y (centre (y + 1/2) Hi / Hg) is valid iff that centre is < h, so a cell more
    than half covered by the image counts: n_y = ceil(h Hg / Hi - 1/2), at least 1.
    """
    hi, wi = (int(v) for v in input_hw)
    hg, wg = (int(v) for v in grid_hw)
    sizes = torch.as_tensor([[int(h), int(w)] for h, w in valid_hw], dtype=torch.float64)
    if sizes.numel() == 0:
        raise ValueError("valid_cells needs at least one image")
    if (sizes <= 0).any() or (sizes[:, 0] > hi).any() or (sizes[:, 1] > wi).any():
        raise ValueError(f"valid sizes {sizes.long().tolist()} must lie in (0, {hi}] x (0, {wi}]")
    rows = torch.ceil(sizes[:, 0] * hg / hi - 0.5).clamp(min=1).long()
    cols = torch.ceil(sizes[:, 1] * wg / wi - 0.5).clamp(min=1).long()
    inside_y = torch.arange(hg)[None, :] < rows[:, None]
    inside_x = torch.arange(wg)[None, :] < cols[:, None]
    return (inside_y[:, :, None] & inside_x[:, None, :])[:, None].to(device)


def valid_rectangles(valid_mask: torch.Tensor, shape: Sequence[int]) -> List[Rectangle]:
    """Each image's valid rectangle (y0, y1, x0, x1) from a (B, 1, H, W) bool mask.

    Raises ValueError when the mask is malformed, when an image has no valid cell, or when its
    valid cells are not one axis-aligned rectangle (the valid region of a resized and padded
    image always is; nearest-cell replication at the region's edge needs it to be).
    """
    b, _, h, w = (int(v) for v in shape)
    if not isinstance(valid_mask, torch.Tensor) or valid_mask.dtype != torch.bool:
        raise TypeError(f"valid_mask must be a bool tensor, got {type(valid_mask).__name__}")
    if tuple(valid_mask.shape) != (b, 1, h, w):
        raise ValueError(
            f"valid_mask must be (B, 1, H, W) = {(b, 1, h, w)} like the features, "
            f"got {tuple(valid_mask.shape)}"
        )
    mask = valid_mask[:, 0].cpu()
    rows, cols = mask.any(dim=2), mask.any(dim=1)  # (B, H), (B, W)
    out: List[Rectangle] = []
    for i in range(b):
        ys, xs = torch.nonzero(rows[i]).flatten(), torch.nonzero(cols[i]).flatten()
        if ys.numel() == 0:
            raise ValueError(f"valid_mask of image {i} has no valid cell")
        y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
        # The bounding box holds every valid cell: it is the region iff it is full.
        if int(mask[i].sum()) != (y1 - y0) * (x1 - x0):
            raise ValueError(
                f"valid_mask of image {i} is not one axis-aligned rectangle; pass the valid "
                "region of a resized, padded image (see valid_cells)"
            )
        out.append((y0, y1, x0, x1))
    return out

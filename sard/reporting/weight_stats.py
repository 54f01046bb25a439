"""How far a structure map W(i) is from uniform, and where its mass goes.

SARD differs from uniform feature distillation only through W. When the teacher's feature grid
is coarse next to the objects (several objects per cell), W has little to choose between and
SARD reduces to uniform distillation; these numbers make that measurable.

For a map W (sums to 1 over N = h*w cells) and a boolean map of the cells that hold a ground
truth instance boundary:

* ``ess_ratio`` = (sum W)^2 / (N sum W^2): the effective fraction of cells that carry the loss
  (1 for uniform W, 1/N for W on one cell);
* ``nw_p05`` / ``nw_p95``: the 5th / 95th percentile of N*W (1 everywhere for uniform W);
* ``boundary_cells``: fraction of cells holding a boundary pixel;
* ``boundary_share``: the W mass on those cells; ``boundary_lift`` = share / fraction (1: W
  ignores boundaries; > 1: it favours them);
* ``instances_per_cell``: mean number of distinct instances touching a cell;
* ``border_share``: W's mass on the outer ring of cells divided by the ring's share of cells
  (1: the image edge gets its fair share; > 1: W is drawn to the edge, which is no structure
  of the scene). With a valid region (a padded image), the ring is that region's outer ring and
  every share is taken over its cells;
* ``border_E``, ``border_C``, ``border_D``: the same ratio for each term alone (the term
  normalised to sum 1), to tell which of E, C, D pulls W to the edge.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F


def boundary_pixels(masks: torch.Tensor) -> torch.Tensor:
    """(Q, H, W) bool instance masks -> (H, W) bool: pixels of a mask with a 4-neighbour
    outside it (the image border counts as outside)."""
    m = masks.float()[:, None]
    inner = -F.max_pool2d(-F.pad(m, (1, 1, 1, 1), value=0.0), 3, stride=1)
    return ((m - inner) > 0).any(dim=0)[0]


def cells_touched(pixels: torch.Tensor, grid_hw: tuple) -> torch.Tensor:
    """(..., H, W) bool pixels -> (..., h, w) bool: cells of an h x w grid laid over the image
    (adaptive max pooling: each cell covers its share of pixels) holding any True pixel."""
    shape = pixels.shape
    flat = pixels.reshape(-1, 1, *shape[-2:]).float()
    pooled = F.adaptive_max_pool2d(flat, grid_hw) > 0
    return pooled.reshape(*shape[:-2], *grid_hw)


def outer_ring(valid: torch.Tensor) -> torch.Tensor:
    """(h, w) bool: the outermost cells of the valid rectangle ``valid`` (h, w) bool (the
    whole grid's outer ring when every cell is valid)."""
    rows = torch.nonzero(valid.any(dim=1)).flatten()
    cols = torch.nonzero(valid.any(dim=0)).flatten()
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    ring = valid.clone()
    ring[y0 + 1 : y1, x0 + 1 : x1] = False
    return ring & valid


def border_share(weight: torch.Tensor, valid: Optional[torch.Tensor] = None) -> float:
    """W's mass on the outer ring of (valid) cells / the ring's share of (valid) cells, for a
    non-negative (h, w) map (normalised here); NaN for an all-zero map."""
    valid = torch.ones_like(weight, dtype=torch.bool) if valid is None else valid.bool()
    ring = outer_ring(valid)
    w = weight.double() * valid
    total = float(w.sum())
    if total <= 0:
        return float("nan")
    return (float(w[ring].sum()) / total) / (float(ring.sum()) / float(valid.sum()))


SIDES = ("top", "bottom", "left", "right")


def side_shares(weight: torch.Tensor, valid: Optional[torch.Tensor] = None) -> Dict[str, float]:
    """Per side of the (valid) rectangle: W's mass on that outermost row/column divided by its
    share of cells (1 for uniform W). An artefact of padding at the bottom/right only (SAM's
    windowed attention pads its windows there) shows on those sides alone."""
    valid = torch.ones_like(weight, dtype=torch.bool) if valid is None else valid.bool()
    rows = torch.nonzero(valid.any(dim=1)).flatten()
    cols = torch.nonzero(valid.any(dim=0)).flatten()
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    w = weight.double() * valid
    total, count = float(w.sum()), float(valid.sum())
    lines = {
        "top": (slice(y0, y0 + 1), slice(x0, x1 + 1)),
        "bottom": (slice(y1, y1 + 1), slice(x0, x1 + 1)),
        "left": (slice(y0, y1 + 1), slice(x0, x0 + 1)),
        "right": (slice(y0, y1 + 1), slice(x1, x1 + 1)),
    }
    out = {}
    for side, (ys, xs) in lines.items():
        cells = float(valid[ys, xs].sum())
        out[side] = (
            (float(w[ys, xs].sum()) / total) / (cells / count) if total > 0 else float("nan")
        )
    return out


def weight_statistics(
    weight: torch.Tensor,
    masks: torch.Tensor,
    valid: Optional[torch.Tensor] = None,
    terms: Optional[Dict[str, torch.Tensor]] = None,
) -> Dict[str, float]:
    """Statistics of one image's W (h, w) against its instance masks (Q, H, W); see the module
    docstring. Masks cover the area the feature grid covers (the model input). ``valid`` (h, w)
    bool: the image's valid cells (W is 0 elsewhere; every statistic is over them). ``terms``:
    {"E": (h, w), "C": ..., "D": ...} adds each term's border share."""
    if weight.dim() != 2:
        raise ValueError(f"weight must be (h, w), got shape {tuple(weight.shape)}")
    grid = tuple(weight.shape)
    inside = torch.ones(grid, dtype=torch.bool) if valid is None else valid.bool().cpu()
    w = weight.double().cpu()[inside]
    n = w.numel()
    edge_cells = cells_touched(boundary_pixels(masks), grid).cpu()[inside] if len(masks) else None
    nw = (n * w).numpy()
    stats = {
        "grid_h": float(grid[0]),
        "grid_w": float(grid[1]),
        "ess_ratio": float(w.sum() ** 2 / (n * (w**2).sum())),
        "nw_p05": float(np.percentile(nw, 5)),
        "nw_p95": float(np.percentile(nw, 95)),
        "instances_per_cell": (
            float(cells_touched(masks, grid).sum(dim=0).cpu()[inside].double().mean())
            if len(masks)
            else 0.0
        ),
        "border_share": border_share(weight.cpu(), inside),
    }
    for side, value in side_shares(weight.cpu(), inside).items():
        stats[f"border_{side}"] = value
    for name, term in (terms or {}).items():
        stats[f"border_{name}"] = border_share(term.cpu(), inside)
    if edge_cells is None or not bool(edge_cells.any()):
        stats.update(boundary_cells=0.0, boundary_share=0.0, boundary_lift=float("nan"))
        return stats
    fraction = float(edge_cells.double().mean())
    share = float(w[edge_cells].sum() / w.sum())
    stats.update(boundary_cells=fraction, boundary_share=share, boundary_lift=share / fraction)
    return stats

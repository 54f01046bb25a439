"""Size distributions by number or by area, their percentiles, and the distance between two.

A distribution is a set of sizes x_i with weights w_i: 1 for the basis "number" (every object
counts once, as a Wolman or grid count), the object's area for "area" (the 2-D stand-in for
the mass basis of a sieve curve: big objects count for more).

- Cumulative curve ("% finer"): F(x) = sum_{x_i <= x} w_i / sum_i w_i (a step function).
- Percentile d_p (d10, d50, d80, d90): with the sizes sorted, each x_i sits at the midpoint of
  its step, P_i = 100 (sum_{j <= i} w_j - w_i / 2) / sum_j w_j, and d_p is linear between the
  P_i, clamped to the smallest and largest size outside them. With all w_i = 1 this is
  P_i = 100 (i - 1/2) / n, numpy's ``method="hazen"``.
- Kolmogorov-Smirnov distance: D = max_x |F_a(x) - F_b(x)|, the largest vertical gap between
  the two curves (0: the same distribution; 1: no overlap); unweighted it is the statistic of
  ``scipy.stats.ks_2samp``.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

BASES = ("number", "area")
PERCENTS = (10, 50, 80, 90)


def _prepare(values, weights) -> Tuple[np.ndarray, np.ndarray]:
    x = np.asarray(values, dtype=np.float64).ravel()
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w.shape != x.shape:
        raise ValueError(f"{w.size} weights for {x.size} sizes")
    if x.size == 0:
        raise ValueError("no objects to make a size distribution from")
    if not (np.isfinite(x).all() and np.isfinite(w).all()) or (w < 0).any() or w.sum() <= 0:
        raise ValueError("sizes must be finite and weights finite, >= 0 and not all 0")
    order = np.argsort(x, kind="stable")
    return x[order], w[order]


def weighted_percentiles(
    values: Sequence[float],
    weights: Optional[Sequence[float]] = None,
    percents: Sequence[float] = PERCENTS,
) -> np.ndarray:
    """d_p for each p in ``percents`` (0-100), midpoint rule (see the module doc)."""
    x, w = _prepare(values, weights)
    positions = 100.0 * (np.cumsum(w) - w / 2) / w.sum()
    return np.interp(np.asarray(percents, dtype=np.float64), positions, x)


def cumulative_curve(
    values: Sequence[float], weights: Optional[Sequence[float]] = None
) -> Tuple[np.ndarray, np.ndarray]:
    """(x, F): the distinct sizes ascending and the fraction of weight at or below each."""
    x, w = _prepare(values, weights)
    fraction = np.cumsum(w) / w.sum()
    last = np.r_[x[1:] != x[:-1], True]  # the last of each run of equal sizes
    return x[last], fraction[last]


def ks_distance(
    a: Sequence[float],
    b: Sequence[float],
    weights_a: Optional[Sequence[float]] = None,
    weights_b: Optional[Sequence[float]] = None,
) -> float:
    """max_x |F_a(x) - F_b(x)| over every size of either set (see the module doc)."""
    xa, fa = cumulative_curve(a, weights_a)
    xb, fb = cumulative_curve(b, weights_b)
    grid = np.union1d(xa, xb)

    def at(x: np.ndarray, f: np.ndarray) -> np.ndarray:
        index = np.searchsorted(x, grid, side="right") - 1
        return np.where(index >= 0, f[np.clip(index, 0, None)], 0.0)

    return float(np.max(np.abs(at(xa, fa) - at(xb, fb))))


def distribution_summary(
    values: Sequence[float],
    areas: Optional[Sequence[float]] = None,
    basis: str = "number",
    percents: Sequence[float] = PERCENTS,
) -> Dict[str, float]:
    """{"count", "basis", "d10", "d50", ...}: percentiles by number, or by area (weights =
    ``areas``, required then). An empty set gives the count 0 and None for every d_p."""
    if basis not in BASES:
        raise ValueError(f"basis must be one of {BASES}, got {basis!r}")
    if basis == "area" and areas is None:
        raise ValueError("the area basis needs the objects' areas")
    out: Dict[str, object] = {"count": int(len(values)), "basis": basis}
    if len(values) == 0:
        out.update({f"d{p:g}": None for p in percents})
        return out  # type: ignore[return-value]
    d = weighted_percentiles(values, areas if basis == "area" else None, percents)
    out.update({f"d{p:g}": float(v) for p, v in zip(percents, d)})
    return out  # type: ignore[return-value]


def basis_weights(areas: np.ndarray, basis: str) -> Optional[np.ndarray]:
    """The weights of ``basis``: None (every object 1) for "number", the areas for "area"."""
    if basis not in BASES:
        raise ValueError(f"basis must be one of {BASES}, got {basis!r}")
    return None if basis == "number" else np.asarray(areas, dtype=np.float64)

"""Cumulative size-distribution plot: "% finer" against size on a log axis, one curve per set."""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from .distribution import cumulative_curve, weighted_percentiles

Curve = Tuple[Sequence[float], Optional[Sequence[float]]]  # sizes, weights (None = by number)


def plot_cumulative(
    curves: Dict[str, Curve],
    path: str,
    *,
    xlabel: str,
    basis: str = "number",
    title: str = "",
    mark_percents: Sequence[float] = (50, 80),
) -> None:
    """Write a PNG with one step curve per entry of ``curves`` (label -> (sizes, weights)),
    x = size on a log axis labelled ``xlabel``, y = % finer by ``basis``; dotted lines mark
    each curve's d_p for ``mark_percents``. Empty sets are listed in the legend as empty."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (label, (sizes, weights)) in enumerate(curves.items()):
        colour = colours[k % len(colours)]
        if len(sizes) == 0:
            ax.plot([], [], color=colour, label=f"{label} (no objects)")
            continue
        x, f = cumulative_curve(sizes, weights)
        ax.step(
            np.r_[x[0], x],
            np.r_[0.0, f] * 100,
            where="post",
            color=colour,
            label=f"{label} (n = {len(sizes)})",
        )
        for p, d in zip(mark_percents, weighted_percentiles(sizes, weights, mark_percents)):
            ax.plot([d, d], [0, p], ":", color=colour, lw=1)
            ax.annotate(
                f"d{p:g}={d:.3g}",
                (d, p),
                textcoords="offset points",
                xytext=(3, -10 - 10 * k),
                fontsize=7,
                color=colour,
            )
    ax.set_xscale("log")
    # Plain numbers (0.5, 2, 20), not 2x10^1; minor ticks labelled at 2 and 5 only.
    from matplotlib.ticker import FuncFormatter

    def label(value: float, _pos: int) -> str:
        mantissa = round(value / 10 ** np.floor(np.log10(value)), 6) if value > 0 else 0
        return f"{value:g}" if mantissa in (1, 2, 5) else ""

    ax.xaxis.set_major_formatter(FuncFormatter(label))
    ax.xaxis.set_minor_formatter(FuncFormatter(label))
    ax.set_ylim(0, 100)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"% finer (by {basis})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

"""Numbers into text: mean ± std over seeds, per-method summaries, markdown tables."""

from __future__ import annotations

import math
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

Summary = Dict[str, Dict[str, Dict[str, object]]]

# The trivial model of box-prompted segmentation: every GT's own box, filled. The evaluator
# reports it as box_<metric> next to each metric (sard.evaluation.PromptableInstanceEvaluator).
BOX_FLOOR_LABEL = "prompt box (filled)"
BOX_FLOOR_PREFIX = "box_"
# Marks a mean below the box floor in a table cell.
BELOW_FLOOR_MARK = "↓"


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """(mean, sample standard deviation) of ``values``; std = 0 for a single value.

    std = sqrt(Σ (x − mean)² / (n − 1)) (Bessel's correction: seeds are a sample of runs).
    Raises ValueError on an empty input or a non-finite value.
    """
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("mean_std needs at least one value")
    if not all(math.isfinite(x) for x in xs):
        raise ValueError(f"mean_std got a non-finite value in {xs}")
    mean = sum(xs) / len(xs)
    if len(xs) == 1:
        return mean, 0.0
    var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
    return mean, math.sqrt(var)


def format_mean_std(values: Sequence[float], digits: int = 1) -> str:
    """ "m ± s" with ``digits`` decimals; a single value prints as "m" (no spread to show)."""
    mean, std = mean_std(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def summarise_runs(
    runs: Sequence[Mapping[str, object]], metrics: Sequence[str] = ("mIoU", "bIoU")
) -> Summary:
    """Group run records by "method" and reduce each metric over seeds.

    Each run is ``{"method": str, "seed": int, "metrics": {name: value}}``. Returns
    ``{method: {metric: {"mean", "std", "n", "values", "seeds"}}}`` with methods in order of
    first appearance; a metric missing from a run raises KeyError naming the run.
    """
    grouped: Dict[str, List[Mapping[str, object]]] = {}
    for run in runs:
        grouped.setdefault(str(run["method"]), []).append(run)
    summary: Summary = {}
    for method, members in grouped.items():
        summary[method] = {}
        for metric in metrics:
            values = []
            for run in members:
                run_metrics = run["metrics"]
                if metric not in run_metrics:
                    raise KeyError(
                        f"run {method} seed {run.get('seed')} has no metric {metric!r} "
                        f"(has {sorted(run_metrics)})"
                    )
                values.append(float(run_metrics[metric]))
            mean, std = mean_std(values)
            summary[method][metric] = {
                "mean": mean,
                "std": std,
                "n": len(values),
                "values": values,
                "seeds": [run.get("seed") for run in members],
            }
    return summary


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], align: Optional[str] = None
) -> str:
    """A GitHub markdown table; ``align`` has one of "l", "r", "c" per column (default: the
    first column left, the others right). Floats print with 2 decimals; other cells with str().
    """
    ncol = len(headers)
    align = align or ("l" + "r" * (ncol - 1))
    if len(align) != ncol or set(align) - set("lrc"):
        raise ValueError(f"align must have one of l/r/c per column ({ncol}), got {align!r}")
    for i, row in enumerate(rows):
        if len(row) != ncol:
            raise ValueError(f"row {i} has {len(row)} cells, the header has {ncol}: {row}")
    marks = {"l": ":---", "r": "---:", "c": ":---:"}
    cell = lambda v: f"{v:.2f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(marks[a] for a in align) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def paired_delta(stats: Mapping[str, object], base: Mapping[str, object]) -> List[float]:
    """Per-seed differences method − baseline over the seeds both have, in the method's order.

    Seeds fix the student's initialisation and data order, so the paired difference removes
    the seed-to-seed spread both runs share."""
    by_seed = dict(zip(base["seeds"], base["values"]))
    return [v - by_seed[s] for s, v in zip(stats["seeds"], stats["values"]) if s in by_seed]


def box_floor(
    records: Sequence[Mapping[str, object]], metrics: Sequence[str] = ("mIoU", "bIoU")
) -> Optional[Dict[str, float]]:
    """The prompt-box floor {metric: value} of a test set, read from run records' metrics
    (``box_<metric>``, which every run evaluated on that set carries), or None when a record
    lacks it (a run evaluated before the evaluator reported it). All records must agree:
    runs evaluated on different instances have different floors (ValueError)."""
    floor: Optional[Dict[str, float]] = None
    for record in records:
        run_metrics = record["metrics"]
        keys = [BOX_FLOOR_PREFIX + m for m in metrics]
        if not all(k in run_metrics for k in keys):
            return None
        values = {m: float(run_metrics[k]) for m, k in zip(metrics, keys)}
        if floor is None:
            floor = values
        elif any(abs(values[m] - floor[m]) > 1e-6 for m in metrics):
            raise ValueError(
                f"runs disagree on the prompt-box floor ({floor} vs {values} in "
                f"{record.get('label', record.get('method'))}): they were evaluated on "
                "different test instances"
            )
    return floor


def below_floor(
    summary: Summary, floor: Optional[Mapping[str, float]], metrics: Sequence[str]
) -> Dict[str, List[str]]:
    """{method: [metrics whose mean over seeds is below the box floor]}, methods with none
    left out; {} without a floor."""
    if not floor:
        return {}
    out: Dict[str, List[str]] = {}
    for method, stats in summary.items():
        low = [m for m in metrics if m in floor and stats[m]["mean"] < floor[m]]
        if low:
            out[method] = low
    return out


def floor_note(below: Mapping[str, Sequence[str]], floor: Optional[Mapping[str, float]]) -> str:
    """One sentence for under a table: the floor's values, and which models fall below it
    (marked ↓ in the table), or that none does. "" without a floor."""
    if not floor:
        return ""
    values = ", ".join(f"{m} {v:.1f}" for m, v in floor.items())
    text = f"{BOX_FLOOR_LABEL}: each GT's own box as the mask scores {values}."
    if not below:
        return text + " Every model is above it.\n"
    models = "; ".join(f"{name} ({', '.join(ms)})" for name, ms in below.items())
    return (
        f"{text} {BELOW_FLOOR_MARK} marks a mean below it: {models} "
        "learned nothing beyond the prompt there.\n"
    )


def comparison_rows(
    summary: Summary,
    metrics: Sequence[str] = ("mIoU", "bIoU"),
    baselines: Sequence[str] = (),
    digits: int = 1,
    floor: Optional[Mapping[str, float]] = None,
) -> List[List[str]]:
    """Rows "method | seeds | metric ± std ... | Δ metric vs each baseline ..." for
    ``markdown_table``. Δ is the mean over shared seeds of the paired difference method −
    baseline, with the std of those differences ("+d ± s"; "+d" for one seed) and how many
    seeds the method won ("+d ± s (w/n)"); without a shared seed, the difference of means.
    A baseline's own cells show "—". Baselines absent from ``summary`` raise KeyError.
    With ``floor`` (see `box_floor`), a mean below it is marked ↓ and a last row holds the
    floor itself (no seeds, no Δ).
    """
    for baseline in baselines:
        if baseline not in summary:
            raise KeyError(f"baseline {baseline!r} is not among the methods {list(summary)}")
    rows = []
    for method, stats in summary.items():
        row = [method, str(stats[metrics[0]]["n"])]
        for m in metrics:
            cell = format_mean_std(stats[m]["values"], digits)
            if floor and m in floor and stats[m]["mean"] < floor[m]:
                cell += f" {BELOW_FLOOR_MARK}"
            row.append(cell)
        for baseline in baselines:
            for m in metrics:
                if method == baseline:
                    row.append("—")
                    continue
                deltas = paired_delta(stats[m], summary[baseline][m])
                if not deltas:
                    delta = stats[m]["mean"] - summary[baseline][m]["mean"]
                    row.append(f"{delta:+.{digits}f}")
                    continue
                mean, std = mean_std(deltas)
                text = f"{mean:+.{digits}f}"
                if len(deltas) > 1:
                    wins = sum(d > 0 for d in deltas)
                    text += f" ± {std:.{digits}f} ({wins}/{len(deltas)})"
                row.append(text)
        rows.append(row)
    if floor:
        row = [BOX_FLOOR_LABEL, "—"] + [f"{floor[m]:.{digits}f}" for m in metrics]
        rows.append(row + ["—"] * (len(baselines) * len(metrics)))
    return rows


def comparison_headers(
    metrics: Sequence[str] = ("mIoU", "bIoU"), baselines: Sequence[str] = ()
) -> List[str]:
    """Headers matching ``comparison_rows`` with the same metrics and baselines."""
    headers = ["method", "seeds", *metrics]
    return headers + [f"Δ{m} vs {b}" for b in baselines for m in metrics]

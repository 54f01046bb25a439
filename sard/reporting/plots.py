"""PNG figures of a study: training curves, grouped bars with error bars, predictions side by side.

All figures use matplotlib's Agg canvas (no display, no pyplot state) and a modest dpi so a
committed PNG stays small.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from .tables import Summary


def _figure(width: float, height: float, dpi: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def read_metrics_json(path: str | Path) -> List[Dict[str, float]]:
    """The JSON lines a trainer wrote (``metrics.json``); a clear error if the file is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no training log at {path} (was the run trained here?)")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average: out[i] = mean(values[max(0, i − window + 1) : i + 1])."""
    x = np.asarray(values, dtype=np.float64)
    if window <= 1 or x.size == 0:
        return x
    csum = np.concatenate([[0.0], np.cumsum(x)])
    idx = np.arange(1, x.size + 1)
    lo = np.maximum(0, idx - window)
    return (csum[idx] - csum[lo]) / (idx - lo)


def split_loss_terms(logs: Mapping[str, List[Dict[str, float]]]) -> tuple[set, set]:
    """(task terms, distillation terms): loss_* keys logged by every run are the task loss
    (the scratch run logs only those); the rest are the distillation method's own terms."""
    keysets = []
    for rows in logs.values():
        keys = {k for row in rows for k in row if k.startswith("loss_")}
        keysets.append(keys)
    if not keysets:
        return set(), set()
    common = set.intersection(*keysets)
    return common, set.union(*keysets) - common


def plot_training_curves(
    logs: Mapping[str, List[Dict[str, float]]],
    path: str | Path,
    *,
    window: int = 10,
    dpi: int = 90,
) -> Path:
    """Two panels per run label: the task loss (sum of shared loss terms) and the distillation
    terms (sum of the rest), smoothed with a ``window``-iteration moving average."""
    task_keys, distill_keys = split_loss_terms(logs)
    figure = _figure(10, 3.6, dpi)
    ax_task, ax_dist = figure.subplots(1, 2)
    for label, rows in logs.items():
        rows = [r for r in rows if "total_loss" in r]
        if not rows:
            continue
        its = [r["iteration"] + 1 for r in rows]
        task = [sum(r.get(k, 0.0) for k in task_keys) for r in rows]
        ax_task.plot(its, smooth(task, window), label=label)
        present = [k for k in distill_keys if any(k in r for r in rows)]
        if present:
            dist = [sum(r.get(k, 0.0) for k in present) for r in rows]
            ax_dist.plot(its, smooth(dist, window), label=f"{label} ({', '.join(sorted(present))})")
    ax_task.set_title(f"task loss ({' + '.join(sorted(task_keys)) or 'none'})", fontsize=9)
    ax_dist.set_title("distillation loss", fontsize=9)
    for ax in (ax_task, ax_dist):
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    figure.tight_layout()
    return _save(figure, path)


def plot_method_bars(
    summary: Summary,
    path: str | Path,
    *,
    metrics: Sequence[str] = ("mIoU", "bIoU"),
    reference: Optional[Mapping[str, float]] = None,
    floor: Optional[Mapping[str, float]] = None,
    title: str = "",
    dpi: int = 90,
) -> Path:
    """Grouped bars: one group per method, one bar per metric (mean, error bar = std over
    seeds, a dot per seed). ``reference`` (e.g. the teacher's metrics) is drawn as dashed
    horizontal lines, ``floor`` (the prompt-box floor) as dotted ones. Bars start at 0, so
    their heights compare honestly."""
    methods = list(summary)
    if not methods:
        raise ValueError("plot_method_bars needs at least one method")
    figure = _figure(max(6.0, 0.75 * len(methods) + 2.5), 3.8, dpi)
    ax = figure.subplots()
    width = 0.8 / len(metrics)
    x = np.arange(len(methods))
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    for k, metric in enumerate(metrics):
        centres = x + (k - (len(metrics) - 1) / 2) * width
        ax.bar(
            centres,
            [summary[m][metric]["mean"] for m in methods],
            width,
            yerr=[summary[m][metric]["std"] for m in methods],
            capsize=3,
            label=metric,
            color=colours[k % len(colours)],
        )
        for centre, m in zip(centres, methods):
            values = summary[m][metric]["values"]
            ax.plot([centre] * len(values), values, "k.", ms=3, alpha=0.7)
    lines = (
        (reference, "teacher", dict(ls="--", lw=1)),
        (floor, "box filled", dict(ls=":", lw=1.5)),
    )
    for levels, who, style in lines:
        for k, (metric, value) in enumerate((levels or {}).items()):
            label = f"{who} {metric} ({value:.1f})"
            ax.axhline(value, color=colours[k % len(colours)], label=label, **style)
    ax.set_xticks(x, methods, rotation=30, ha="right")
    ax.set_ylim(bottom=0.0)
    ax.set_ylabel("score (x100)")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    figure.tight_layout()
    return _save(figure, path)


def instance_overlay(image: np.ndarray, masks: np.ndarray, seed: int = 0) -> np.ndarray:
    """uint8 RGB: ``image`` with mask q tinted colour q (same colours for every call with the
    same seed, so panels of one figure match) and mask edges darkened."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 256, size=(max(len(masks), 1), 3)).astype(np.float64)
    out = image.astype(np.float64).copy()
    for q, mask in enumerate(masks):
        if not mask.any():
            continue
        out[mask] = 0.45 * out[mask] + 0.55 * colours[q]
        edge = mask & ~_eroded(mask)
        out[edge] *= 0.3
    return np.clip(out, 0, 255).astype(np.uint8)


def _eroded(mask: np.ndarray) -> np.ndarray:
    """3x3 binary erosion (outside the image counts as background)."""
    padded = np.pad(mask, 1)
    out = np.ones_like(mask)
    h, w = mask.shape
    for dy in range(3):
        for dx in range(3):
            out &= padded[dy : dy + h, dx : dx + w]
    return out


def per_mask_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of each (pred[q], gt[q]) pair of two (Q, H, W) bool stacks; 1 when both are empty."""
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must have the same shape")
    inter = (pred & gt).reshape(len(gt), -1).sum(1)
    union = (pred | gt).reshape(len(gt), -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def render_predictions(
    image: np.ndarray,
    gt_masks: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    path: str | Path,
    *,
    dpi: int = 90,
    panel_inches: float = 3.0,
) -> Path:
    """One row: the image, its ground truth, then each model's masks for the same prompts
    (titles give that model's mean IoU over this image's prompts)."""
    panels = [("image", image), ("ground truth", instance_overlay(image, gt_masks))]
    for label, masks in predictions.items():
        miou = 100.0 * float(per_mask_iou(masks, gt_masks).mean()) if len(gt_masks) else 0.0
        panels.append((f"{label} (IoU {miou:.1f})", instance_overlay(image, masks)))
    figure = _figure(panel_inches * len(panels), panel_inches + 0.4, dpi)
    axes = figure.subplots(1, len(panels))
    for ax, (title, picture) in zip(np.atleast_1d(axes), panels):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    figure.tight_layout()
    return _save(figure, path)

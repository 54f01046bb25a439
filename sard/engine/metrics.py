"""Training metrics: ``metrics.json`` lines and TensorBoard scalars (built-in engine)."""

from __future__ import annotations

import json
import logging
import os
from typing import Dict

logger = logging.getLogger(__name__)


def flatten_results(results: Dict) -> Dict[str, float]:
    """{dataset: {task: {metric: v}}} -> {"dataset/task/metric": v}."""
    flat = {}
    for name, res in results.items():
        for task, metrics in res.items():
            if isinstance(metrics, dict):
                for k, v in metrics.items():
                    flat[f"{name}/{task}/{k}"] = v
            else:
                flat[f"{name}/{task}"] = metrics
    return flat


def drop_metrics_from(path: str, start_iter: int) -> int:
    """Remove the lines of a ``metrics.json`` whose iteration is >= ``start_iter`` (a resumed
    run writes them again) and any torn line a kill left; returns how many were removed."""
    if not os.path.isfile(path):
        return 0
    kept, dropped = [], 0
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
                keep = int(record["iteration"]) < start_iter
            except (ValueError, KeyError, TypeError):
                keep = False
            if keep:
                kept.append(line if line.endswith("\n") else line + "\n")
            else:
                dropped += 1
    if dropped:
        from sard.atomic_files import atomic_write

        atomic_write(path, lambda f: f.write("".join(kept).encode()))
    return dropped


class MetricsWriter:
    """Append metrics as JSON lines to ``metrics.json`` and to TensorBoard (if importable).

    Lines from ``start_iter`` on, left by an earlier attempt of this run, are removed first,
    so each iteration appears once after a resume.
    """

    def __init__(self, output_dir: str, start_iter: int = 0) -> None:
        os.makedirs(output_dir, exist_ok=True)
        self.path = os.path.join(output_dir, "metrics.json")
        drop_metrics_from(self.path, start_iter)
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(output_dir)
        except ImportError:  # TensorBoard is optional at run time
            logger.warning("tensorboard is not installed: metrics go to metrics.json only")

    def write(self, iteration: int, metrics: Dict[str, float]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"iteration": iteration, **metrics}) + "\n")
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(k, v, iteration)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()

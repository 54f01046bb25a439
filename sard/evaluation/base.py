"""Evaluator protocol and result reporting shared by both evaluators.

`DatasetEvaluator` is detectron2's class when detectron2 is importable (so our evaluators slot
into `DatasetEvaluators` / `inference_on_dataset`), otherwise a minimal stand-in with the same
reset / process / evaluate protocol.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Optional, Sequence

try:
    from detectron2.evaluation import DatasetEvaluator
except ImportError:

    class DatasetEvaluator:  # type: ignore[no-redef]
        """Protocol of detectron2's DatasetEvaluator: reset(), process(inputs, outputs), evaluate().

        evaluate() returns a dict of results on the main process and None elsewhere.
        """

        def reset(self) -> None:
            """Prepare for a new round of evaluation."""

        def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
            """Accumulate one batch of model inputs and the matching outputs."""

        def evaluate(self) -> Optional[Dict[str, Any]]:
            """Return the results accumulated since the last reset()."""
            return None


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain-text table with a header rule; floats shown with 2 decimals, columns right-aligned."""

    def cell(v: Any) -> str:
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[k]) for r in text]) for k, h in enumerate(headers)]
    lines = [" | ".join(h.rjust(wd) for h, wd in zip(headers, widths))]
    lines.append("-+-".join("-" * wd for wd in widths))
    lines += [" | ".join(c.rjust(wd) for c, wd in zip(r, widths)) for r in text]
    return "\n".join(lines)


def write_json(output_dir: str, file_name: str, payload: Dict[str, Any]) -> str:
    """Write payload as indented JSON to output_dir/file_name (folders made); returns the path."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, file_name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2)
    return path


def assert_finite(results: Dict[str, float], where: str) -> None:
    """Guard the never-NaN contract: fail loudly rather than report a NaN or inf metric."""
    bad = [k for k, v in results.items() if not math.isfinite(v)]
    if bad:
        raise FloatingPointError(f"{where}: non-finite results for {bad}")

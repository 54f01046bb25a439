"""Studies and their reports: resumable training runs, tables (mean ± std over seeds), figures,
and efficiency figures (params, GFLOPs, latency). Used by tools/quickstart.py and
tools/compare_methods.py."""

from .efficiency import Efficiency, count_gflops, count_params, measure_inference, time_ms
from .plots import (
    plot_method_bars,
    plot_training_curves,
    read_metrics_json,
    render_predictions,
)
from .study import METHOD_VARIANTS, TINY_SAM_CONFIG, Member, RunSpec, Schedule, train_run
from .tables import (
    BOX_FLOOR_LABEL,
    below_floor,
    box_floor,
    comparison_headers,
    comparison_rows,
    floor_note,
    format_mean_std,
    markdown_table,
    mean_std,
    summarise_runs,
)

__all__ = [
    "BOX_FLOOR_LABEL",
    "Efficiency",
    "METHOD_VARIANTS",
    "Member",
    "RunSpec",
    "Schedule",
    "TINY_SAM_CONFIG",
    "below_floor",
    "box_floor",
    "comparison_headers",
    "comparison_rows",
    "floor_note",
    "count_gflops",
    "count_params",
    "format_mean_std",
    "markdown_table",
    "mean_std",
    "measure_inference",
    "plot_method_bars",
    "plot_training_curves",
    "read_metrics_json",
    "render_predictions",
    "summarise_runs",
    "time_ms",
    "train_run",
]

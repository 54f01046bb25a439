"""Reports of trained models: tables (mean ± std over seeds, the prompt-box floor), figures,
pictures of predictions and W(i), W statistics, and efficiency figures (params, GFLOPs,
latency). The studies that produce them live in the checkout's tools/studies."""

from .efficiency import Efficiency, count_gflops, count_params, measure_inference, time_ms
from .plots import (
    plot_method_bars,
    plot_training_curves,
    read_metrics_json,
    render_predictions,
)
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
]

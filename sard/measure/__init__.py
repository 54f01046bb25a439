"""Measuring segmented objects: per-object sizes and shapes, and size distributions.

* ``object_sizes(segmentations, hw, mm_per_px)``: one row per object from scikit-image's
  ``regionprops`` (area, equivalent diameter, ellipse axes, maximum Feret diameter,
  orientation), in pixels or in mm.
* ``weighted_percentiles``, ``cumulative_curve``, ``ks_distance``: size distributions by number
  or by area (the 2-D stand-in for the mass basis of sieving), compared between two sets.
* ``plot_cumulative``: the cumulative "% finer" curves of one or more sets on a log size axis.
"""

from .distribution import (
    BASES,
    PERCENTS,
    cumulative_curve,
    distribution_summary,
    ks_distance,
    weighted_percentiles,
)
from .plots import plot_cumulative
from .sizes import SIZE_COLUMNS, SIZE_MEASURES, ObjectTable, object_sizes

__all__ = [
    "BASES",
    "PERCENTS",
    "SIZE_COLUMNS",
    "SIZE_MEASURES",
    "ObjectTable",
    "cumulative_curve",
    "distribution_summary",
    "ks_distance",
    "object_sizes",
    "plot_cumulative",
    "weighted_percentiles",
]

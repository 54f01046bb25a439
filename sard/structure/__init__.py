"""W(i): the structure importance map that weights SARD's representation losses.

``compute_structure_map(features)`` turns teacher features (B, C, H, W) into a weight map that
sums to 1 per image, built from the structure tensor (E: oriented edges, C: junctions) and a
local-dispersion density D; the exact formulas are in `sard.structure.structure_map`.
"""

from .filters import box_pixel_count, box_sum, gaussian_blur_replicate
from .instance_density import instance_count_density
from .render import render_structure_map
from .structure_map import StructureMap, compute_structure_map, uniform_structure_map
from .valid_region import valid_cells, valid_rectangles

__all__ = [
    "StructureMap",
    "box_pixel_count",
    "box_sum",
    "compute_structure_map",
    "gaussian_blur_replicate",
    "instance_count_density",
    "render_structure_map",
    "uniform_structure_map",
    "valid_cells",
    "valid_rectangles",
]

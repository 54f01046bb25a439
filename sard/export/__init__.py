"""Deployment of a distilled student.

* ``export_student(student, out_dir, "onnx" | "torchscript")``: the student alone as graphs
  (promptable: image encoder + prompt-to-mask decoder; semantic: one graph), verified against
  PyTorch on random inputs, with a ``manifest.json`` saying how to feed them.
* ``SardPredictor``: segment_anything's ``SamPredictor`` interface on a SAM or EfficientSAM
  student, with the training data mapper's image and coordinate geometry.
* ``SardAutomaticMaskGenerator``: segment_anything's automatic mask generator (point grid, IoU
  and stability filters, NMS, crop layers; same parameters and records) on a student.
* ``TiledMaskGenerator``: any such generator over overlapping tiles of a large image, each
  object kept once.
* ``load_student(config_file, opts)``: the bare student from a config and a checkpoint.
"""

from .automatic import SardAutomaticMaskGenerator
from .exporter import DEFAULT_TOLERANCE, ExportReport, export_student
from .graphs import graph_specs
from .loading import load_student
from .predictor import SardPredictor
from .runtime import FORMATS, load_runner
from .tiled import TiledMaskGenerator
from .transform import ResizeTransform

__all__ = [
    "DEFAULT_TOLERANCE",
    "ExportReport",
    "FORMATS",
    "ResizeTransform",
    "SardAutomaticMaskGenerator",
    "SardPredictor",
    "TiledMaskGenerator",
    "export_student",
    "graph_specs",
    "load_runner",
    "load_student",
]

"""Export a student to TorchScript or ONNX, verify it against PyTorch, write the manifest.

Verification rule, per graph and per input case (the traced sizes plus other batch / prompt /
point counts): ``max |export - torch| <= tolerance * max(1, max |torch|)``, where ``torch`` is
the output of the student's public API (``extract_features``, ``predict_masks``,
``forward_semantic``) on the same random inputs. The relative form keeps one tolerance
meaningful for outputs of any magnitude (mask logits reach tens).
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from sard.multimask import check_multimask_mode

from .graphs import GraphSpec, graph_specs
from .manifest import build_manifest, write_manifest
from .params import ParameterReport, parameter_report
from .runtime import DEFAULT_OPSET, FORMATS, Runner, load_runner, max_abs_diff, save_graph

logger = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 1e-4


@dataclass
class CaseResult:
    """One verification case: the graph, the input shapes, max |diff| and the allowed bound."""

    graph: str
    shapes: str
    max_abs_diff: float
    bound: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.bound


@dataclass
class ExportReport:
    """What ``export_student`` wrote and how the files compared with PyTorch."""

    format: str
    files: Dict[str, str]
    manifest: str
    cases: List[CaseResult] = field(default_factory=list)
    parameters: Optional[ParameterReport] = None
    tolerance: float = DEFAULT_TOLERANCE

    @property
    def max_abs_diff(self) -> float:
        return max((c.max_abs_diff for c in self.cases), default=0.0)

    @property
    def ok(self) -> bool:
        """Every case within its bound and the files hold exactly the expected parameters."""
        params_ok = self.parameters is None or self.parameters.exact
        return params_ok and all(c.ok for c in self.cases)

    def lines(self) -> List[str]:
        """Human-readable summary, one line per case plus totals."""
        out = [f"{self.format} export -> {os.path.dirname(self.manifest)}"]
        for c in self.cases:
            status = "ok" if c.ok else "FAILED"
            out.append(
                f"  {c.graph:14s} {c.shapes:48s} max|diff| {c.max_abs_diff:.3e} "
                f"(bound {c.bound:.3e}) {status}"
            )
        if self.parameters is not None:
            out.append("  " + self.parameters.summary())
        verdict = "PASSED" if self.ok else "FAILED"
        out.append(
            f"  verification {verdict}: max abs difference {self.max_abs_diff:.3e}, "
            f"tolerance {self.tolerance:g} x max(1, max|torch|)"
        )
        return out


def _shapes(inputs) -> str:
    return " ".join("x".join(str(d) for d in t.shape) for t in inputs)


def verify_graphs(
    specs: Sequence[GraphSpec],
    files: Dict[str, str],
    tolerance: float = DEFAULT_TOLERANCE,
    runner_factory: Callable[[str], Runner] = load_runner,
) -> List[CaseResult]:
    """Run every saved graph on its spec's trace and check inputs and compare with
    ``spec.reference`` (see the module docstring for the rule)."""
    cases: List[CaseResult] = []
    for spec in specs:
        run = runner_factory(files[spec.name])
        for inputs in [spec.trace_inputs, *spec.check_inputs]:
            with torch.no_grad():
                expected = spec.reference(*inputs)
            diff, scale = max_abs_diff(run(*inputs), expected)
            cases.append(CaseResult(spec.name, _shapes(inputs), diff, tolerance * max(1.0, scale)))
    return cases


def export_student(
    student: nn.Module,
    out_dir: str,
    fmt: str = "onnx",
    *,
    resize_mode: Optional[str] = None,
    tolerance: float = DEFAULT_TOLERANCE,
    opset: int = DEFAULT_OPSET,
    seed: int = 0,
    count_parameters: bool = True,
    multimask: str = "always",
) -> ExportReport:
    """Write the student's graphs (see ``sard.export.graphs``) and ``manifest.json`` to
    ``out_dir``, run each file on random inputs, compare with PyTorch, return the report.

    resize_mode: how images reach the graph (the training mapper's mode; default the family's:
    "longest_pad" SAM, "stretch" EfficientSAM, "fit_pad" semantic). Export and verification run
    on the CPU in eval mode (a student on another device is copied, not moved). multimask: how
    the student was trained (MODEL.SARD.MULTIMASK_OUTPUT); the manifest says which mask output to
    read (every graph returns all four).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    check_multimask_mode(multimask)  # before any graph is written
    if any(p.device.type != "cpu" for p in student.parameters()):
        student = copy.deepcopy(student).cpu()
    student = student.eval()
    specs = graph_specs(student, seed)
    resize_mode = resize_mode or getattr(student, "resize_mode", "fit_pad")
    files: Dict[str, str] = {}
    for spec in specs:
        logger.info("exporting %s to %s", spec.name, fmt)
        files[spec.name] = save_graph(spec, fmt, out_dir, opset)
    cases = verify_graphs(specs, files, tolerance)
    params = parameter_report(student, specs, list(files.values())) if count_parameters else None
    verification = {
        "rule": "max|export - torch| <= tolerance * max(1, max|torch|) on random inputs",
        "tolerance": tolerance,
        "cases": [
            {"graph": c.graph, "input_shapes": c.shapes, "max_abs_diff": c.max_abs_diff}
            for c in cases
        ],
    }
    param_info = {}
    if params is not None:
        param_info = {"student": params.student, "used": params.used, "exported": params.saved}
    manifest = build_manifest(
        student,
        specs,
        list(files.values()),
        fmt,
        resize_mode,
        verification,
        param_info,
        multimask=multimask,
    )
    manifest_path = write_manifest(manifest, out_dir)
    return ExportReport(fmt, files, manifest_path, cases, params, tolerance)

"""Which student parameters an exported graph carries, to show the export adds nothing.

* ``used_parameters(spec)``: the parameters the PyTorch graph module actually uses, found by
  back-propagating the sum of its outputs (a parameter with no gradient path is unused; e.g. the
  final LayerNorm of transformers' Swin backbone, which Mask2Former never reads).
* ``saved_parameters(path, spec)``: student parameters stored in the file. TorchScript keeps the
  traced module's parameters by name. ONNX keeps a parameter as an initializer named after it
  (constant folding is off); the exporter drops unused ones and stores bit-identical tensors
  once (common in untrained weights: every LayerNorm starts at ones/zeros), so a parameter
  found only by value is reported as ``shared``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import numpy as np
import torch

from .graphs import GraphSpec

WRAPPER_PREFIX = "student."  # SemanticGraph holds the whole student under this name


def _student_name(name: str) -> str:
    return name[len(WRAPPER_PREFIX) :] if name.startswith(WRAPPER_PREFIX) else name


def used_parameters(spec: GraphSpec) -> Dict[str, int]:
    """{student parameter name: numel} of the parameters ``spec.module`` reads."""
    module = spec.module
    params = dict(module.named_parameters())
    flags = {n: p.requires_grad for n, p in params.items()}
    for p in params.values():
        p.grad = None
        p.requires_grad_(True)
    try:
        with torch.enable_grad():
            outputs = module(*spec.trace_inputs)
            outputs = outputs if isinstance(outputs, tuple) else (outputs,)
            sum(o.float().sum() for o in outputs).backward()
        used = {_student_name(n): p.numel() for n, p in params.items() if p.grad is not None}
    finally:
        for n, p in params.items():
            p.grad = None
            p.requires_grad_(flags[n])
    return used


def saved_parameters(path: str, spec: GraphSpec) -> Dict[str, Dict[str, int]]:
    """{"named": {name: numel}, "shared": {name: numel}} of student parameters in ``path``."""
    own = {n: p.detach().cpu() for n, p in spec.module.named_parameters()}
    if path.endswith(".onnx"):
        import onnx
        from onnx import numpy_helper

        inits = {i.name: i for i in onnx.load(path, load_external_data=True).graph.initializer}
        named = {_student_name(n): t.numel() for n, t in own.items() if n in inits}
        by_shape: Dict[tuple, List[np.ndarray]] = {}
        for init in inits.values():
            if init.name not in own:
                continue
            array = numpy_helper.to_array(init)
            by_shape.setdefault(tuple(array.shape), []).append(array)
        shared = {}
        for n, t in own.items():
            if n in inits:
                continue
            value = t.numpy()
            if any(np.array_equal(value, a) for a in by_shape.get(tuple(value.shape), [])):
                shared[_student_name(n)] = t.numel()
        return {"named": named, "shared": shared}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is deprecated.*")
        loaded = torch.jit.load(path, map_location="cpu")
    named = {_student_name(n): p.numel() for n, p in loaded.named_parameters()}
    return {"named": named, "shared": {}}


@dataclass
class ParameterReport:
    """Parameter counts (elements): the student's, those its forward uses, those the files hold.

    ``expected`` is what the files must hold: every student parameter for TorchScript (it keeps
    the traced modules whole), the used ones for ONNX (it drops the rest).
    """

    student: int
    used: int
    expected: int
    saved: int
    shared: int = 0
    unused_names: List[str] = field(default_factory=list)
    missing_names: List[str] = field(default_factory=list)
    extra_names: List[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        """The files hold exactly the expected student parameters: none missing, none added."""
        return self.saved == self.expected and not (self.missing_names or self.extra_names)

    def summary(self) -> str:
        text = (
            f"parameters: student {self.student:,}, used by its forward {self.used:,}, "
            f"in the exported files {self.saved:,} (expected {self.expected:,})"
        )
        if self.shared:
            text += f", of which {self.shared:,} stored once for bit-identical tensors"
        if self.unused_names:
            text += f"; never used by the student's forward: {', '.join(self.unused_names[:6])}"
        if self.missing_names:
            text += f"; MISSING from the export: {', '.join(self.missing_names[:6])}"
        if self.extra_names:
            text += f"; EXTRA in the export: {', '.join(self.extra_names[:6])}"
        return text


def parameter_report(
    student: torch.nn.Module, specs: Sequence[GraphSpec], paths: Sequence[str]
) -> ParameterReport:
    """Compare the student's parameters, the graphs' used parameters and the saved files."""
    student_params = {n: p.numel() for n, p in student.named_parameters()}
    used: Dict[str, int] = {}
    present: Dict[str, int] = {}
    shared: Dict[str, int] = {}
    for spec, path in zip(specs, paths):
        graph_used = used_parameters(spec)
        used.update(graph_used)
        saved = saved_parameters(path, spec)
        present.update(saved["named"])
        # Only a parameter the graph reads can be stored under another's name; an unused one
        # that merely equals a stored tensor (e.g. an untouched LayerNorm) is not in the file.
        shared.update({k: v for k, v in saved["shared"].items() if k in graph_used})
    present.update(shared)
    onnx_files = all(p.endswith(".onnx") for p in paths)
    expected = used if onnx_files else student_params
    return ParameterReport(
        student=sum(student_params.values()),
        used=sum(used.values()),
        expected=sum(expected.values()),
        saved=sum(present.values()),
        shared=sum(shared.values()),
        unused_names=sorted(set(student_params) - set(used)),
        missing_names=sorted(set(expected) - set(present)),
        extra_names=sorted(set(present) - set(student_params)),
    )

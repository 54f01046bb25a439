"""Write a graph to TorchScript or ONNX, load it back, and run it on tensors.

ONNX uses PyTorch's TorchScript-based exporter (``dynamo=False``): it takes ``dynamic_axes``
and needs no extra package. Constant folding is off so every parameter keeps its state-dict
name as its initializer name (ONNX Runtime folds constants itself when it loads the model).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Callable, Iterator, Sequence, Tuple

import numpy as np
import torch

from .graphs import GraphSpec

FORMATS = ("torchscript", "onnx")
SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}
DEFAULT_OPSET = 17

Runner = Callable[..., Tuple[torch.Tensor, ...]]


@contextlib.contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Silence the tracer's deprecation and size-conversion warnings: verification at other
    batch/prompt counts is what tells whether the trace generalised."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*is deprecated.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        yield


def save_graph(spec: GraphSpec, fmt: str, out_dir: str, opset: int = DEFAULT_OPSET) -> str:
    """Trace ``spec.module`` on ``spec.trace_inputs`` and write ``out_dir/<name><suffix>``."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, spec.name + SUFFIX[fmt])
    module = spec.module.eval()
    with _quiet_tracing(), torch.no_grad():
        if fmt == "torchscript":
            torch.jit.trace(module, spec.trace_inputs, check_trace=False).save(path)
        else:
            torch.onnx.export(
                module,
                spec.trace_inputs,
                path,
                dynamo=False,
                input_names=spec.input_names,
                output_names=spec.output_names,
                dynamic_axes=spec.dynamic_axes,
                opset_version=opset,
                do_constant_folding=False,
            )
    return path


def load_runner(path: str, threads: int = 0) -> Runner:
    """A function running the saved graph on tensors and returning a tuple of CPU tensors.

    threads: intra-op threads for ONNX Runtime (0 = its default); TorchScript uses torch's.
    """
    if path.endswith(SUFFIX["onnx"]):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]

        def run_onnx(*inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
            feed = {n: _numpy(x) for n, x in zip(names, inputs)}
            return tuple(torch.from_numpy(o) for o in session.run(None, feed))

        return run_onnx
    with _quiet_tracing():
        module = torch.jit.load(path, map_location="cpu").eval()

    def run_torchscript(*inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        with torch.no_grad():
            out = module(*inputs)
        return out if isinstance(out, tuple) else (out,)

    return run_torchscript


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().contiguous().numpy()


def max_abs_diff(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> Tuple[float, float]:
    """(max |a - b| over all outputs, max |b|): the difference and the reference's scale."""
    if len(a) != len(b):
        raise ValueError(f"export returned {len(a)} outputs, PyTorch {len(b)}")
    diff, scale = 0.0, 0.0
    for x, y in zip(a, b):
        if tuple(x.shape) != tuple(y.shape):
            raise ValueError(f"export output shape {tuple(x.shape)} != PyTorch {tuple(y.shape)}")
        y = y.detach().cpu().float()
        diff = max(diff, float((x.float() - y).abs().max()) if y.numel() else 0.0)
        scale = max(scale, float(y.abs().max()) if y.numel() else 0.0)
    return diff, scale

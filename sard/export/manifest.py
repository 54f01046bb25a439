"""``manifest.json``: everything deployment code needs to feed the exported graphs.

It names each graph's file, inputs and outputs (shape with symbolic axes, dtype), and states
the preprocessing (resize mode, input size, where mean/std are applied, padding), the point
coordinate mapping and the prompt label convention. Mapping of images and points is the data
mapper's (``sard.data.transforms``), so a deployed model sees what the student was trained on.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Sequence

import torch
import torch.nn as nn

from sard.models.base import is_promptable_family

from .graphs import NUM_MASK_OUTPUTS, GraphSpec

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1

LABELS = {
    "-1": "padding (ignored)",
    "0": "background click",
    "1": "foreground click",
    "2": "box top-left corner",
    "3": "box bottom-right corner",
}

RESIZE_TEXT = {
    "longest_pad": (
        "scale = S / max(H, W); resize to (int(H*scale + 0.5), int(W*scale + 0.5)) (cv2 INTER_AREA "
        "when both sides shrink, else INTER_LINEAR); place top-left on an S x S canvas filled "
        "with the pixel mean (0-255 units), so the padding is 0 after the graph's normalisation, "
        "as in training and in official SAM"
    ),
    "stretch": (
        "resize to S x S ignoring the aspect ratio (cv2 INTER_AREA when both sides shrink, else "
        "INTER_LINEAR)"
    ),
    "fit_pad": (
        "scale = min(Ho / H, Wo / W); resize, then zero-pad bottom/right to (Ho, Wo) (0-255 units)"
    ),
}

POINT_TEXT = (
    "pixel-index coordinates (pixel centres at integers), x = column, y = row: "
    "x' = (x + 0.5) * w' / W - 0.5, y' = (y + 0.5) * h' / H - 0.5, where (h', w') is the resized "
    "size before padding ('input_hw'); boxes map corner by corner"
)


def _io(spec: GraphSpec, names: Sequence[str], tensors: Sequence) -> List[Dict]:
    """[{name, shape with dynamic axes as symbols, dtype}] of a graph's inputs or outputs."""
    axes = spec.dynamic_axes
    rows = []
    for name, t in zip(names, tensors):
        shape: List[Any] = list(t.shape)
        for dim, symbol in axes.get(name, {}).items():
            shape[dim] = symbol
        rows.append({"name": name, "shape": shape, "dtype": str(t.dtype).replace("torch.", "")})
    return rows


# Which output to read, by MODEL.SARD.MULTIMASK_OUTPUT (sard.multimask): a student trained on
# its single mask never trained outputs 1-3, so their masks and IoUs are noise.
PICK_TEXT = {
    "always": "read the multimask output (1-3) with the highest predicted IoU",
    "never": "read output 0 (trained on its single mask: outputs 1-3 are untrained)",
    "auto": "for a prompt of one point read the multimask output (1-3) with the highest "
    "predicted IoU, for any other prompt output 0 (SAM's rule, as trained)",
}


def _mean_std(student: nn.Module) -> Dict[str, Any]:
    mean = [round(float(v), 6) for v in student.pixel_mean.flatten()]
    std = [round(float(v), 6) for v in student.pixel_std.flatten()]
    if student.family == "efficient_sam":
        formula = "inside the graph: (x / 255 - mean) / std, mean/std in 0-1 units"
    else:
        formula = "inside the graph: (x - mean) / std, mean/std in 0-255 units"
    return {"pixel_mean": mean, "pixel_std": std, "normalisation": formula}


def build_manifest(
    student: nn.Module,
    specs: Sequence[GraphSpec],
    files: Sequence[str],
    fmt: str,
    resize_mode: str,
    verification: Dict[str, Any],
    parameters: Dict[str, Any],
    *,
    multimask: str = "always",
) -> Dict[str, Any]:
    """The manifest as a dict (see the module docstring); ``multimask`` (how the student was
    trained, ``sard.multimask``) decides which mask output ``outputs.iou_pred`` tells to read."""
    graphs = {}
    for spec, path in zip(specs, files):
        with torch.no_grad():
            outputs = spec.reference(*spec.trace_inputs)
        graphs[spec.name] = {
            "file": os.path.basename(path),
            "inputs": _io(spec, spec.input_names, spec.trace_inputs),
            "outputs": _io(spec, spec.output_names, outputs),
        }
    size = student.image_size
    image_size = [int(size), int(size)] if isinstance(size, int) else [int(v) for v in size]
    manifest: Dict[str, Any] = {
        "version": MANIFEST_VERSION,
        "format": fmt,
        "family": student.family,
        "kind": "promptable" if is_promptable_family(student.family) else "semantic",
        "image_size": image_size,
        "preprocessing": {
            "color": "RGB",
            "input": "float32 (B, 3, H, W), 0-255, channels first",
            "resize_mode": resize_mode,
            "resize": RESIZE_TEXT.get(resize_mode, resize_mode),
            **_mean_std(student),
        },
        "graphs": graphs,
        "parameters": parameters,
        "verification": verification,
    }
    if manifest["kind"] == "promptable":
        manifest["prompts"] = {
            "labels": LABELS,
            "coordinates": POINT_TEXT,
            "padding": (
                "SAM: when no prompt in the call has a box, append one point (0, 0) with label -1 "
                "to every prompt (as segment_anything does)"
                if student.family == "sam"
                else "EfficientSAM: at most 6 points per prompt; shorter prompts are padded "
                "inside the graph"
            ),
            "mask_input": (
                "low-res logits of an earlier call (B, Q, 1, S/4, S/4), or zeros (1, 1, 1, S/4, "
                "S/4) with has_mask_input = [0]"
                if student.family == "sam"
                else "not supported (EfficientSAM has no mask prompt)"
            ),
        }
        manifest["outputs"] = {
            "mask_logits": (
                f"(B, Q, {NUM_MASK_OUTPUTS}, S/4, S/4): index 0 is the single-mask output, 1-3 the "
                "multimask outputs; upsample bilinearly (SAM) / bicubically (EfficientSAM) to "
                "S x S, crop to input_hw, resize to the original size, threshold at 0"
            ),
            "iou_pred": "(B, Q, 4): predicted IoU of each mask; " + PICK_TEXT[multimask],
            "multimask": multimask,
        }
    else:
        kind = getattr(student, "sem_logits_kind", "logits")
        manifest["outputs"] = {
            "sem_logits": (
                f"(B, K, H/4, W/4) per-class {kind}; upsample bilinearly to (H, W), crop to the "
                "unpadded region, resize to the original size, argmax over K"
            )
        }
    return manifest


def write_manifest(manifest: Dict[str, Any], out_dir: str) -> str:
    """Write ``out_dir/manifest.json``; returns its path."""
    path = os.path.join(out_dir, MANIFEST_NAME)
    with open(path, "w") as f:
        json.dump(manifest, f, indent=2)
    return path

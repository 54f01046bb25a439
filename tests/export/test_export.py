"""Export round trips: TorchScript / ONNX graphs of tiny students against the PyTorch student.

Tolerance: max |export - torch| <= 1e-4 * max(1, max |torch|) (``DEFAULT_TOLERANCE``), checked
by the exporter on its own cases and here again at batch / prompt / point counts it never saw.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch

from sard.export import DEFAULT_TOLERANCE, export_student, load_runner
from sard.export.graphs import random_images, random_prompts
from sard.models import Prompts, build_model
from testkit import read_json

SIZE = 32  # input side of the tiny promptable students (2 x 2 embedding grid)


def _distinct(model: torch.nn.Module) -> torch.nn.Module:
    """Perturb every parameter so no two tensors are bit-identical, as in trained weights
    (ONNX stores identical tensors once, which would blur the parameter count)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 1e-2)
    return model.eval()


@pytest.fixture(scope="module")
def students():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        return {
            "efficient_sam": _distinct(build_model("efficient_sam", size="tiny", image_size=SIZE)),
            "sam": _distinct(build_model("sam", size="tiny", image_size=SIZE)),
        }


@pytest.fixture(scope="module")
def exports(students, tmp_path_factory):
    """One export per (family, format), shared by the tests below (exporting is the slow part)."""
    out = {}
    for family, student in students.items():
        for fmt in ("torchscript", "onnx"):
            folder = tmp_path_factory.mktemp(f"{family}_{fmt}")
            out[family, fmt] = export_student(student, str(folder), fmt)
    return out


def _onnx_parameter_names(path: str) -> dict:
    import onnx

    return {i.name: int(np.prod(i.dims)) for i in onnx.load(path).graph.initializer}


def _bound(reference: torch.Tensor) -> float:
    return DEFAULT_TOLERANCE * max(1.0, float(reference.abs().max()))


@pytest.mark.parametrize("family", ["efficient_sam", "sam"])
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_promptable_round_trip_at_unseen_sizes(students, exports, family, fmt):
    student = students[family]
    report = exports[family, fmt]
    assert report.ok, "\n".join(report.lines())
    assert set(report.files) == {"image_encoder", "mask_decoder"}
    assert 0.0 <= report.max_abs_diff <= DEFAULT_TOLERANCE * 100
    # Sizes the exporter did not check: 3 images, 7 prompts of 2 points (a box).
    g = torch.Generator().manual_seed(5)
    images = random_images(3, (SIZE, SIZE), g)
    encoder = load_runner(report.files["image_encoder"])
    (embedding,) = encoder(images)
    with torch.no_grad():
        expected = student.extract_features(images)["image_embedding"]
    assert (embedding - expected).abs().max() <= _bound(expected)
    points, labels = random_prompts(3, 7, 2, SIZE, g, box=True)
    inputs = (expected, points, labels)
    if family == "sam":  # no mask prompt: zeros broadcast over every prompt, has_mask_input 0
        inputs += (torch.zeros(1, 1, 1, SIZE // 4, SIZE // 4), torch.zeros(1))
    logits, iou = load_runner(report.files["mask_decoder"])(*inputs)
    with torch.no_grad():
        multi = student.predict_masks({"image_embedding": expected}, Prompts(points, labels))
        single = student.predict_masks(
            {"image_embedding": expected}, Prompts(points, labels), multimask=False
        )
    assert logits.shape == (3, 7, 4, SIZE // 4, SIZE // 4)
    assert (logits[:, :, 1:] - multi.mask_logits).abs().max() <= _bound(multi.mask_logits)
    assert (logits[:, :, :1] - single.mask_logits).abs().max() <= _bound(single.mask_logits)
    assert (iou[:, :, 1:] - multi.iou_pred).abs().max() <= _bound(multi.iou_pred)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("family", ["efficient_sam", "sam"])
def test_exported_graphs_hold_exactly_the_student_parameters(students, exports, family, fmt):
    student = students[family]
    report = exports[family, fmt]
    n_student = sum(p.numel() for p in student.parameters())
    names = {n: p.numel() for n, p in student.named_parameters()}
    if fmt == "onnx":
        stored = {}
        for path in report.files.values():
            stored.update(_onnx_parameter_names(path))
        params_in_files = {k: v for k, v in stored.items() if k in names}
        assert set(params_in_files) == set(names)  # every parameter, under its own name
        assert sum(params_in_files.values()) == n_student
        # Anything else is a buffer (mean/std, positional Gaussian) or a shape constant.
        others = sum(v for k, v in stored.items() if k not in names)
        assert others < 0.01 * n_student
    else:
        held = sum(
            p.numel() for path in report.files.values() for p in torch.jit.load(path).parameters()
        )
        assert held == n_student
    assert report.parameters.exact and report.parameters.saved == n_student


def test_sam_decoder_takes_a_mask_prompt_and_points_without_a_box(students, exports):
    student = students["sam"]
    report = exports["sam", "onnx"]
    decode = load_runner(report.files["mask_decoder"])
    g = torch.Generator().manual_seed(9)
    embedding = torch.randn(2, 256, SIZE // 16, SIZE // 16, generator=g)
    points, labels = random_prompts(2, 3, 1, SIZE, g, box=False)
    masks = torch.randn(2, 3, 1, SIZE // 4, SIZE // 4, generator=g) * 3
    # SAM's convention for the graph: the caller appends the padding point when there is no box.
    padded = torch.cat([points, torch.zeros(2, 3, 1, 2)], dim=2)
    padded_labels = torch.cat([labels, torch.full((2, 3, 1), -1)], dim=2)
    logits, _ = decode(embedding, padded, padded_labels, masks, torch.ones(1))
    with torch.no_grad():
        ref = student.predict_masks(
            {"image_embedding": embedding}, Prompts(points, labels), mask_inputs=masks
        )
        without = student.predict_masks({"image_embedding": embedding}, Prompts(points, labels))
    assert (logits[:, :, 1:] - ref.mask_logits).abs().max() <= _bound(ref.mask_logits)
    # The mask prompt matters: ignoring it would be far off.
    assert (ref.mask_logits - without.mask_logits).abs().max() > 100 * _bound(ref.mask_logits)


def test_semantic_student_round_trip_and_manifest(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        student = _distinct(
            build_model("vit_semantic", size="tiny", image_size=(64, 64), num_classes=3)
        )
    # A parameter the forward never reads (Mask2Former's Swin has one), equal to a used one:
    # ONNX leaves it out, and it must not be mistaken for a de-duplicated used tensor.
    twin = student.seg_head.state_dict()
    value = next(v for k, v in twin.items() if k.endswith("weight"))
    student.register_parameter("unused_twin", torch.nn.Parameter(value.clone()))
    report = export_student(student, str(tmp_path), "onnx")
    assert report.ok and set(report.files) == {"semantic"}, "\n".join(report.lines())
    assert report.parameters.unused_names == ["unused_twin"]
    images = random_images(3, (64, 64), torch.Generator().manual_seed(2))
    (scores,) = load_runner(report.files["semantic"])(images)
    with torch.no_grad():
        expected = student.forward_semantic(images).sem_logits
    assert scores.shape == (3, 3, 16, 16)
    assert (scores - expected).abs().max() <= _bound(expected)
    manifest = read_json(report.manifest)
    assert manifest["kind"] == "semantic" and manifest["preprocessing"]["resize_mode"] == "fit_pad"
    assert manifest["graphs"]["semantic"]["inputs"][0]["shape"] == ["batch", 3, 64, 64]
    n_used = sum(p.numel() for p in student.parameters()) - value.numel()
    assert manifest["parameters"]["exported"] == manifest["parameters"]["used"] == n_used


def test_manifest_describes_the_onnx_inputs(exports):
    import onnxruntime as ort

    report = exports["efficient_sam", "onnx"]
    folder = os.path.dirname(report.manifest)
    manifest = read_json(report.manifest)
    assert manifest["family"] == "efficient_sam" and manifest["image_size"] == [SIZE, SIZE]
    pre = manifest["preprocessing"]
    assert pre["resize_mode"] == "stretch"
    assert pre["pixel_mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert manifest["prompts"]["labels"]["2"] == "box top-left corner"
    for name, graph in manifest["graphs"].items():
        session = ort.InferenceSession(os.path.join(folder, graph["file"]))
        declared = [(i["name"], i["shape"]) for i in graph["inputs"]]
        actual = [(i.name, list(i.shape)) for i in session.get_inputs()]
        assert declared == actual, name
    assert manifest["verification"]["cases"] and all(
        c["max_abs_diff"] <= DEFAULT_TOLERANCE * 10 for c in manifest["verification"]["cases"]
    )


def test_verification_fails_when_export_differs(students, exports):
    """A graph that drifts from the student must fail the report (and the CLI's exit status)."""
    from sard.export.exporter import ExportReport, verify_graphs
    from sard.export.graphs import graph_specs

    report = exports["efficient_sam", "torchscript"]

    def drifting(path):
        run = load_runner(path)
        return lambda *x: tuple(o + 1e-2 for o in run(*x))

    specs = graph_specs(students["efficient_sam"])
    cases = verify_graphs(specs, report.files, DEFAULT_TOLERANCE, drifting)
    assert cases and not any(c.ok for c in cases)
    assert max(c.max_abs_diff for c in cases) == pytest.approx(1e-2, rel=1e-3)
    failed = ExportReport("torchscript", report.files, report.manifest, cases, report.parameters)
    assert not failed.ok and "FAILED" in "\n".join(failed.lines())
    assert report.ok and verify_graphs(specs, report.files)  # the real files pass


def test_unsupported_model_and_format_are_refused(students, tmp_path):
    with pytest.raises(ValueError, match="format must be one of"):
        export_student(students["sam"], str(tmp_path), "tflite")
    with pytest.raises(TypeError, match="cannot export"):
        export_student(torch.nn.Linear(2, 2), str(tmp_path), "onnx")


def test_narrow_sam_student_exports_and_verifies(tmp_path):
    """A student with 8 px patches and a 64-wide neck and decoder (ARCH PATCH_SIZE and
    DECODER_DIM, the small students of the studies) exports and verifies as the official layout
    does: nothing assumes patch 16 or width 256."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        narrow = build_model("sam", size="tiny", image_size=SIZE, patch_size=8, decoder_dim=64)
        narrow = _distinct(narrow)
    report = export_student(narrow, str(tmp_path), "torchscript")
    assert report.ok, "\n".join(report.lines())
    images = random_images(1, (SIZE, SIZE), torch.Generator().manual_seed(5))
    (embedding,) = load_runner(report.files["image_encoder"])(images)
    assert embedding.shape[1:] == (64, SIZE // 8, SIZE // 8)

"""SardPredictor: SamPredictor's interface and outputs, the data mapper's geometry, batch
prompts, and clear errors on bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from sard.data import PromptDatasetMapper
from sard.data.transforms import make_plan
from sard.export import SardPredictor
from sard.models import Prompts, build_model
from sard.models.base import encode
from testkit import paint_rectangles

SIZE = 64
H, W = 48, 80  # not square and not the model size: exercises resize, padding and stretch
RECTS = [(3, 4, 12, 20), (20, 40, 10, 8), (30, 60, 15, 16), (5, 50, 6, 6)]  # y0, x0, h, w


@pytest.fixture(scope="module")
def students():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        out = {}
        for family in ("efficient_sam", "sam"):
            model = build_model(family, size="tiny", image_size=SIZE).eval()
            with torch.no_grad():  # away from the init's symmetric values, like trained weights
                for p in model.parameters():
                    p.add_(torch.randn_like(p) * 2e-2)
            out[family] = model
    return out


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """An (H, W) image with rectangles and its detectron2-style dataset dict."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 90, (H, W, 3), dtype=np.uint8)
    anns = paint_rectangles(image, RECTS, lambda k: (200, 40 * (k + 1), 90))
    path = tmp_path_factory.mktemp("scene") / "scene.png"
    Image.fromarray(image).save(path)
    record = {"file_name": str(path), "height": H, "width": W, "image_id": 3, "annotations": anns}
    return image, record


def _to_original(xy: np.ndarray, mode: str) -> np.ndarray:
    """Invert the mapper's x' = (x + 0.5) * w' / W - 0.5 (see sard.data.transforms)."""
    sh, sw = make_plan((H, W), (SIZE, SIZE), mode).scaled_hw
    out = np.asarray(xy, dtype=np.float64).copy()
    out[..., 0] = (out[..., 0] + 0.5) * W / sw - 0.5
    out[..., 1] = (out[..., 1] + 0.5) * H / sh - 0.5
    return out


@pytest.mark.parametrize("family", ["efficient_sam", "sam"])
@pytest.mark.parametrize("prompt_type", ["box", "point"])
def test_outputs_equal_the_student_on_the_mapper_sample(students, scene, family, prompt_type):
    student = students[family]
    image, record = scene
    mode = student.resize_mode
    mapper = PromptDatasetMapper(
        is_train=False, image_size=SIZE, resize_mode=mode, prompt_type=prompt_type
    )
    sample = mapper(record)
    with torch.no_grad():
        feats = encode(student, sample["image"][None], [tuple(sample["input_hw"])])
        direct = student.predict_masks(
            feats, Prompts(sample["points"][None], sample["point_labels"][None])
        )
        full = student.postprocess_masks(direct.mask_logits[0], sample["input_hw"], (H, W))

    predictor = SardPredictor(student)
    predictor.set_image(image)
    assert predictor.input_size == tuple(sample["input_hw"]) and predictor.original_size == (H, W)
    assert torch.allclose(predictor.get_image_embedding(), feats["image_embedding"], atol=1e-6)
    original = _to_original(sample["points"].numpy(), mode)
    if prompt_type == "box":
        boxes = predictor.transform.apply_boxes(original.reshape(-1, 4), (H, W))
        args = (None, None, torch.as_tensor(boxes, dtype=torch.float32))
    else:
        coords = predictor.transform.apply_coords(original, (H, W))
        args = (torch.as_tensor(coords, dtype=torch.float32), sample["point_labels"], None)
    logits, iou, low = predictor.predict_torch(*args, return_logits=True)
    assert torch.allclose(low, direct.mask_logits[0], atol=1e-4)
    assert torch.allclose(iou, direct.iou_pred[0], atol=1e-5)
    assert torch.allclose(logits, full, atol=1e-4)
    masks, _, _ = predictor.predict_torch(*args)
    assert masks.dtype == torch.bool and torch.equal(masks, logits > 0)


def test_sam_student_matches_segment_anythings_sam_predictor(students):
    """Same modules in segment_anything's own predictor: identical results for every call
    (a model-size image, so neither resizes nor pads)."""
    from segment_anything import SamPredictor
    from segment_anything.modeling import Sam

    student = students["sam"]
    ours = SardPredictor(student)
    theirs = SamPredictor(Sam(student.image_encoder, student.prompt_encoder, student.mask_decoder))
    image = np.random.default_rng(1).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    ours.set_image(image)
    theirs.set_image(image)
    pts, lab = np.array([[10.0, 20.0], [40.0, 33.0]]), np.array([1, 0])
    box = np.array([5.0, 6.0, 40.0, 50.0])
    calls = [
        {"point_coords": pts, "point_labels": lab},
        {"box": box, "multimask_output": False},
        {"point_coords": pts[:1], "point_labels": lab[:1], "box": box, "return_logits": True},
    ]
    for kwargs in calls:
        for a, b in zip(ours.predict(**kwargs), theirs.predict(**kwargs)):
            assert a.shape == b.shape and a.dtype == b.dtype
            np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), atol=1e-5)
    low = theirs.predict(box=box, multimask_output=False)[2]
    a = ours.predict(point_coords=pts, point_labels=lab, mask_input=low)
    b = theirs.predict(point_coords=pts, point_labels=lab, mask_input=low)
    np.testing.assert_allclose(a[1], b[1], atol=1e-5)
    np.testing.assert_allclose(a[2], b[2], atol=1e-4)
    boxes = torch.tensor([[1.0, 2.0, 30.0, 30.0], [20.0, 10.0, 60.0, 63.0], [0.0, 0.0, 63.0, 63.0]])
    a = ours.predict_torch(None, None, boxes=ours.transform.apply_boxes_torch(boxes, (SIZE, SIZE)))
    b = theirs.predict_torch(
        None, None, boxes=theirs.transform.apply_boxes_torch(boxes, (SIZE, SIZE))
    )
    for x, y in zip(a, b):
        assert torch.allclose(x.float(), y.float(), atol=1e-5)


@pytest.mark.parametrize("family", ["efficient_sam", "sam"])
def test_hundreds_of_boxes_in_chunks_equal_one_pass_and_single_calls(students, scene, family):
    image, _ = scene
    rng = np.random.default_rng(2)
    xy = rng.uniform(0, [W, H], size=(150, 2, 2))
    boxes = np.concatenate([xy.min(axis=1), xy.max(axis=1)], axis=1)
    chunked = SardPredictor(students[family], chunk_size=16)
    whole = SardPredictor(students[family], chunk_size=1000)
    chunked.set_image(image)
    whole.set_image(image)
    t = torch.as_tensor(chunked.transform.apply_boxes(boxes, (H, W)), dtype=torch.float32)
    a = chunked.predict_torch(None, None, boxes=t, return_logits=True)
    b = whole.predict_torch(None, None, boxes=t, return_logits=True)
    assert a[0].shape == (150, 3, H, W) and a[1].shape == (150, 3)
    for x, y in zip(a, b):
        assert torch.allclose(x, y, atol=1e-5)
    for i in (0, 77, 149):
        masks, iou, _ = chunked.predict(box=boxes[i], return_logits=True)
        np.testing.assert_allclose(iou, a[1][i].numpy(), atol=1e-5)
        np.testing.assert_allclose(masks, a[0][i].numpy(), atol=1e-4)


def test_bgr_input_and_reset(students, scene):
    image, _ = scene
    predictor = SardPredictor(students["efficient_sam"])
    predictor.set_image(image)
    rgb = predictor.get_image_embedding().clone()
    predictor.set_image(np.ascontiguousarray(image[..., ::-1]), image_format="BGR")
    assert torch.equal(predictor.get_image_embedding(), rgb)
    predictor.reset_image()
    assert not predictor.is_image_set and predictor.original_size is None
    with pytest.raises(RuntimeError, match="set_image"):
        predictor.predict(box=np.array([1, 2, 3, 4]))


def test_bad_inputs_give_clear_errors(students, scene):
    image, _ = scene
    effsam = SardPredictor(students["efficient_sam"])
    with pytest.raises(RuntimeError, match=r"set_image\(\.\.\.\) before mask prediction"):
        effsam.predict(point_coords=np.array([[1.0, 1.0]]), point_labels=np.array([1]))
    with pytest.raises(RuntimeError, match="set_image"):
        effsam.get_image_embedding()
    with pytest.raises(TypeError, match="uint8, got float32.*255"):
        effsam.set_image(image.astype(np.float32) / 255)
    with pytest.raises(ValueError, match=r"\(H, W, 3\).*np.repeat"):
        effsam.set_image(image[..., 0])
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        effsam.set_image(np.zeros((H, W, 4), np.uint8))
    with pytest.raises(TypeError, match="numpy array"):
        effsam.set_image(torch.zeros(H, W, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="image_format"):
        effsam.set_image(image, image_format="RGBA")
    effsam.set_image(image)
    with pytest.raises(ValueError, match=r"point_coords: 1 point\(s\) outside the image.*#1"):
        effsam.predict(
            point_coords=np.array([[3.0, 4.0], [W + 5.0, 4.0]]), point_labels=np.array([1, 1])
        )
    with pytest.raises(ValueError, match="box: .*outside the image"):
        effsam.predict(box=np.array([-10.0, 0.0, 20.0, 20.0]))
    with pytest.raises(ValueError, match="point_coords is empty"):
        effsam.predict(point_coords=np.zeros((0, 2)), point_labels=np.zeros(0))
    with pytest.raises(ValueError, match="no prompt given"):
        effsam.predict()
    with pytest.raises(ValueError, match="prompt list is empty"):
        effsam.predict_torch(None, None, boxes=torch.zeros(0, 4))
    with pytest.raises(ValueError, match=r"point_labels must have shape \(2,\)"):
        effsam.predict(point_coords=np.ones((2, 2)), point_labels=np.array([1]))
    with pytest.raises(ValueError, match="point_labels must be 1"):
        effsam.predict(point_coords=np.ones((1, 2)), point_labels=np.array([7]))
    with pytest.raises(ValueError, match="x1 >= x0"):
        effsam.predict(box=np.array([20.0, 5.0, 10.0, 30.0]))
    with pytest.raises(ValueError, match="has no mask prompt"):
        effsam.predict(box=np.array([1.0, 1.0, 9.0, 9.0]), mask_input=np.zeros((1, 16, 16)))
    with pytest.raises(ValueError, match="at most 6 points"):
        effsam.predict(point_coords=np.ones((5, 2)), point_labels=np.ones(5), box=np.ones(4) * 2)
    sam = SardPredictor(students["sam"])
    sam.set_image(image)
    with pytest.raises(ValueError, match=r"mask_input must be \(B, 1, 16, 16\)"):
        sam.predict(box=np.array([1.0, 1.0, 9.0, 9.0]), mask_input=np.zeros((1, 8, 8)))
    with pytest.raises(TypeError, match="promptable student"):
        SardPredictor(torch.nn.Linear(2, 2))


def test_mask_prompt_of_a_fine_grid_student_is_at_its_logit_resolution(scene):
    """A 4 px SAM student draws logits at the input size (4x its 16 x 16 grid at 64 px): its
    mask prompt is that size, and an earlier round's logits feed back unchanged."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model("sam", size="tiny", image_size=SIZE, patch_size=4, decoder_dim=64)
    predictor = SardPredictor(model.eval())
    predictor.set_image(scene[0])
    box = np.array([4.0, 3.0, 24.0, 15.0])
    _, _, low = predictor.predict(box=box, multimask_output=False)
    assert low.shape == (1, SIZE, SIZE)
    predictor.predict(box=box, mask_input=low, multimask_output=False)
    with pytest.raises(ValueError, match=rf"mask_input must be \(B, 1, {SIZE}, {SIZE}\)"):
        predictor.predict(box=box, mask_input=np.zeros((1, 16, 16)))

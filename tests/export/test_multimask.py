"""MODEL.SARD.MULTIMASK_OUTPUT reaches every consumer of a promptable model: the predictor, the
automatic mask generator (segment everything, pseudo-labels), tools/predict.py's chunks and the
export manifest decode the way the model was trained, as the distiller does. A model trained
"never" has untrained multimask heads: picking among them picks among random masks."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch

from sard.export.automatic import SardAutomaticMaskGenerator
from sard.export.predictor import SardPredictor, trained_multimask
from sard.models import build_model
from sard.multimask import use_multimask
from sard.prompt_labels import LABEL_BOX_BR, LABEL_BOX_TL, LABEL_PAD, LABEL_POS
from testkit import REPO

SIZE = 64


@pytest.fixture(scope="module")
def student():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        model = build_model("sam", size="tiny", image_size=SIZE).eval()
        with torch.no_grad():  # away from the init's symmetric values, like trained weights
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 2e-2)
    return model


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    img = np.full((SIZE, SIZE, 3), 40, dtype=np.uint8)
    for y, x in [(8, 8), (30, 12), (12, 40), (40, 44)]:
        img[y : y + 14, x : x + 12] = rng.integers(120, 255, size=3)
    return img


def predictor_for(student, image, mode):
    predictor = SardPredictor(student, multimask=mode)
    predictor.set_image(image)
    return predictor


ONE_POINT = torch.tensor([[LABEL_POS]])
TWO_POINTS = torch.tensor([[LABEL_POS, LABEL_POS]])
PADDED_POINT = torch.tensor([[LABEL_POS, LABEL_PAD]])
BOX = torch.tensor([[LABEL_BOX_TL, LABEL_BOX_BR]])


def test_the_rule_per_mode(student):
    for labels in (ONE_POINT, TWO_POINTS, PADDED_POINT, BOX):
        assert use_multimask("always", labels) and not use_multimask("never", labels)
    assert use_multimask("auto", ONE_POINT) and use_multimask("auto", PADDED_POINT)
    assert not use_multimask("auto", TWO_POINTS) and not use_multimask("auto", BOX)
    # "auto" decides per call: one prompt that is not a lone point makes all single.
    assert not use_multimask("auto", torch.cat([PADDED_POINT, BOX]))
    with pytest.raises(ValueError, match="MODEL.SARD.MULTIMASK_OUTPUT must be one of"):
        SardPredictor(student, multimask="sometimes")


@pytest.mark.parametrize("mode", ["always", "never", "auto"])
def test_predictor_decodes_as_trained_unless_told(student, image, mode):
    predictor = predictor_for(student, image, mode)
    point = predictor.predict(np.array([[14.0, 14.0]]), np.array([1]))
    box = predictor.predict(box=np.array([8, 8, 20, 22]))
    assert len(point[1]) == (1 if mode == "never" else 3)
    assert len(box[1]) == (3 if mode == "always" else 1)
    # Output 0 of a single-mask call is the same mask in every mode.
    single = predictor_for(student, image, "always").predict(
        box=np.array([8, 8, 20, 22]), multimask_output=False
    )
    if mode != "always":
        np.testing.assert_array_equal(box[0], single[0])
    # An explicit choice is SAM's: always honoured.
    told = predictor.predict(np.array([[14.0, 14.0]]), np.array([1]), multimask_output=True)
    assert len(told[1]) == 3
    assert predictor.multimask_for(ONE_POINT) == (mode != "never")
    assert predictor.multimask_for(None, torch.zeros(1, 4)) == (mode == "always")


def test_auto_in_predict_torch_is_sams_rule(student, image):
    predictor = predictor_for(student, image, "auto")
    point = torch.tensor([[[14.0, 14.0], [0.0, 0.0]]])
    padded = predictor.predict_torch(point, torch.tensor([[LABEL_POS, LABEL_PAD]]))
    two = predictor.predict_torch(point, torch.tensor([[LABEL_POS, LABEL_POS]]))
    with_box = predictor.predict_torch(
        point[:, :1], torch.tensor([[LABEL_POS]]), torch.tensor([[8.0, 8.0, 20.0, 22.0]])
    )
    assert [len(out[1][0]) for out in (padded, two, with_box)] == [3, 1, 1]


def test_export_refuses_an_unknown_mode_before_writing(student, tmp_path):
    from sard.export import export_student

    with pytest.raises(ValueError, match="MULTIMASK_OUTPUT"):
        export_student(student, str(tmp_path / "x"), "torchscript", multimask="sometimes")
    assert not (tmp_path / "x").exists()


def test_from_config_reads_the_trained_mode(tmp_path):
    from sard.export.loading import load_student

    config = os.path.join(REPO, "configs", "tiny", "sam_tiny_to_efficientsam_tiny.yaml")
    _, model = load_student(config, require_weights=False)
    weights = tmp_path / "student.pth"
    torch.save(model.state_dict(), weights)
    assert SardPredictor.from_config(config, str(weights)).multimask == "always"
    opts = ["MODEL.SARD.MULTIMASK_OUTPUT", "never"]
    predictor = SardPredictor.from_config(config, str(weights), opts)
    assert predictor.multimask == "never"
    predictor.set_image(np.zeros((96, 80, 3), dtype=np.uint8))
    masks, scores, _ = predictor.predict(np.array([[10.0, 10.0]]), np.array([1]))
    assert masks.shape == (1, 96, 80) and scores.shape == (1,)


def test_automatic_masks_of_a_single_mask_model_are_its_single_masks(student, image):
    never = SardAutomaticMaskGenerator(
        predictor_for(student, image, "never"), points_per_side=4, pred_iou_thresh=0.0,
        stability_score_thresh=0.0, box_nms_thresh=1.0,
    )  # fmt: skip
    records = never.generate(image)
    assert never.last_counts["masks"] == 16  # one mask per point, not three
    # Each kept mask is the point's single-mask output (index 0 of SAM's four).
    predictor = predictor_for(student, image, "always")
    for r in records:
        x, y = r["point_coords"][0]
        masks, iou, _ = predictor.predict(np.array([[x, y]]), np.array([1]), multimask_output=False)
        np.testing.assert_array_equal(r["segmentation"], masks[0])
        assert r["predicted_iou"] == pytest.approx(float(iou[0]), abs=1e-5)
    always = SardAutomaticMaskGenerator(predictor, points_per_side=4, pred_iou_thresh=0.0)
    always.generate(image)
    assert always.last_counts["masks"] == 48
    assert trained_multimask(object(), ONE_POINT)  # segment_anything's predictor: SAM's 3


def test_predict_chunks_keep_the_single_mask(student, image):
    from sard.export.segment import PromptSet, segment_chunk

    boxes = np.array([[8.0, 8.0, 20.0, 22.0], [12.0, 40.0, 24.0, 54.0]])
    prompts = PromptSet("img", np.ones(2, dtype=np.int64), boxes=boxes)
    predictor = predictor_for(student, image, "never")
    masks, scores = segment_chunk(predictor, prompts, slice(0, 2))
    for i, box in enumerate(boxes):
        single, iou, _ = predictor.predict(box=box, multimask_output=False)
        np.testing.assert_array_equal(masks[i], single[0])
        assert scores[i] == pytest.approx(float(iou[0]), abs=1e-5)


def test_pseudo_labels_use_the_teachers_trained_mode(student, image):
    from sard.config import get_cfg
    from sard.distill.build import pseudo_label_identity
    from sard.distill.pseudo_labels import PromptSettings, PseudoLabeler, PseudoLabelSettings

    settings = PseudoLabelSettings(
        points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0
    )
    model_input = torch.from_numpy(image).permute(2, 0, 1).float()
    decoded = []
    original = student.predict_masks

    def spy(features, prompts, multimask=True, **kwargs):
        decoded.append(multimask)
        return original(features, prompts, multimask=multimask, **kwargs)

    student.predict_masks = spy
    try:
        for mode in ("never", "always"):
            labeler = PseudoLabeler(
                student, settings, PromptSettings(), "longest_pad", multimask=mode
            )
            labeler.labels_for(model_input, (SIZE, SIZE), None)
            assert set(decoded) == {mode == "always"}, mode
            decoded.clear()
    finally:
        del student.predict_masks
    cfg = get_cfg()
    before = pseudo_label_identity(cfg, student, "longest_pad")
    cfg.MODEL.SARD.MULTIMASK_OUTPUT = "never"
    after = pseudo_label_identity(cfg, student, "longest_pad")
    assert before["multimask"] == "always" and after["multimask"] == "never"


def test_export_manifest_says_which_output_to_read(student):
    from sard.export.manifest import build_manifest

    texts = {}
    for mode in ("always", "never", "auto"):
        manifest = build_manifest(student, [], [], "onnx", "longest_pad", {}, {}, multimask=mode)
        assert manifest["outputs"]["multimask"] == mode
        texts[mode] = manifest["outputs"]["iou_pred"]
    assert "read output 0" in texts["never"] and "untrained" in texts["never"]
    assert "highest predicted IoU" in texts["always"] and "one point" in texts["auto"]

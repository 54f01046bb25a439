"""SardAutomaticMaskGenerator: the same records as segment_anything's SamAutomaticMaskGenerator
when both wrap the same SAM modules, with parameters under which every filter has work to do."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from sard.export import SardAutomaticMaskGenerator, SardPredictor
from sard.export.automatic import RECORD_KEYS
from sard.models import build_model
from sparse_masks import sparse_mask_model

SIZE = 64
# Thresholds for the test model below: each filter removes some masks and keeps some.
BASE = dict(
    points_per_side=16,
    pred_iou_thresh=0.5,
    stability_score_thresh=0.3,
    stability_score_offset=0.02,
)


@pytest.fixture(scope="module")
def sam_student():
    """A tiny random SAM whose masks are small and scattered (see tests/sparse_masks.py)."""
    return sparse_mask_model("sam", SIZE, offset=0.08)


def official_sam(student):
    from segment_anything.modeling import Sam

    return Sam(student.image_encoder, student.prompt_encoder, student.mask_decoder).eval()


def assert_same_records(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert set(a) == set(b) == set(RECORD_KEYS)
        if isinstance(b["segmentation"], np.ndarray):
            assert a["segmentation"].dtype == b["segmentation"].dtype == bool
            assert np.array_equal(a["segmentation"], b["segmentation"])
        else:
            assert a["segmentation"] == b["segmentation"]
        for key in ("area", "bbox", "point_coords", "crop_box"):
            assert a[key] == b[key], key
        for key in ("predicted_iou", "stability_score"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), key


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


VARIANTS = {
    "base": {},
    "no_iou_filter": dict(pred_iou_thresh=0.0),
    "no_stability_filter": dict(stability_score_thresh=0.0),
    "no_box_nms": dict(box_nms_thresh=1.0),
    "small_regions": dict(min_mask_region_area=8),
    "coco_rle": dict(output_mode="coco_rle"),
    "uncompressed_rle": dict(output_mode="uncompressed_rle", points_per_batch=7),
}


@pytest.fixture(scope="module")
def official_runs(sam_student, image):
    from segment_anything import SamAutomaticMaskGenerator

    sam = official_sam(sam_student)
    return {
        k: SamAutomaticMaskGenerator(sam, **{**BASE, **v}).generate(image)
        for k, v in VARIANTS.items()
    }


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_student_generator_equals_segment_anythings(sam_student, image, official_runs, variant):
    """Our generator on the student (through SardPredictor) against SAM's on the same
    modules; a model-size image, where the two predictors' geometries coincide."""
    theirs = official_runs[variant]
    ours = SardAutomaticMaskGenerator(sam_student, **{**BASE, **VARIANTS[variant]}).generate(image)
    assert_same_records(ours, theirs)


def test_every_filter_has_work_to_do(official_runs):
    """The settings are meaningful: masks survive, and each parameter changes the result."""
    counts = {k: len(v) for k, v in official_runs.items()}
    assert 5 <= counts["base"] <= 30, counts
    assert counts["no_iou_filter"] > counts["base"]
    assert counts["no_stability_filter"] > counts["base"]
    assert counts["no_box_nms"] > 5 * counts["base"]
    assert counts["small_regions"] < counts["base"]
    areas = sorted(r["area"] for r in official_runs["base"])
    assert areas[0] < 50 and areas[-1] > 1000  # small masks and a large one
    for r in official_runs["coco_rle"]:
        assert isinstance(r["segmentation"]["counts"], str)


def test_crop_layers_equal_segment_anythings(sam_student):
    """With crop layers (crops resized to the model input) on segment_anything's own predictor:
    the same records, and the crops contribute masks of their own."""
    from segment_anything import SamAutomaticMaskGenerator, SamPredictor

    sam = official_sam(sam_student)
    image = np.random.default_rng(3).integers(0, 256, (160, 144, 3), dtype=np.uint8)
    kwargs = dict(
        BASE,
        points_per_side=12,
        stability_score_thresh=0.1,
        crop_n_layers=1,
        min_mask_region_area=4,
    )
    theirs = SamAutomaticMaskGenerator(sam, **kwargs).generate(image)
    ours = SardAutomaticMaskGenerator(SamPredictor(sam), **kwargs).generate(image)
    assert_same_records(ours, theirs)
    whole = [0, 0, 144, 160]
    from_crops = sum(r["crop_box"] != whole for r in theirs)
    assert 0 < from_crops < len(theirs)


def test_efficient_sam_student_gives_sams_format():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        student = build_model("efficient_sam", size="tiny", image_size=SIZE).eval()
    image = np.random.default_rng(2).integers(0, 256, (40, 72, 3), dtype=np.uint8)
    generator = SardAutomaticMaskGenerator(
        SardPredictor(student), points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.0
    )
    records = generator.generate(image)
    assert records
    for r in records:
        mask = r["segmentation"]
        assert mask.shape == (40, 72) and mask.dtype == bool and r["area"] == int(mask.sum())
        if r["area"]:
            ys, xs = np.nonzero(mask)
            assert r["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
        assert r["crop_box"] == [0, 0, 72, 40]


def test_bad_parameters_give_clear_errors(sam_student):
    with pytest.raises(ValueError, match="exactly one of points_per_side and point_grids"):
        SardAutomaticMaskGenerator(sam_student, points_per_side=None)
    with pytest.raises(ValueError, match="output_mode must be one of"):
        SardAutomaticMaskGenerator(sam_student, output_mode="polygon")
    with pytest.raises(ValueError, match="points_per_batch must be >= 1"):
        SardAutomaticMaskGenerator(sam_student, points_per_batch=0)
    with pytest.raises(ValueError, match="crop_n_layers=2 needs 3"):
        SardAutomaticMaskGenerator(
            sam_student, points_per_side=None, point_grids=[np.zeros((1, 2))], crop_n_layers=2
        )
    with pytest.raises(TypeError, match="promptable student"):
        SardAutomaticMaskGenerator(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="uint8"):
        SardAutomaticMaskGenerator(sam_student).generate(np.zeros((8, 8, 3), np.float32))


def test_settings_have_one_home_shared_by_generator_pseudo_labels_and_config(sam_student):
    """AmgSettings holds the names and defaults: the generator takes it (or SAM's keyword
    call), the pseudo-labeler extends it, MODEL.SARD.PSEUDO_LABELS defaults to it."""
    from dataclasses import asdict

    from sard.amg_settings import AmgSettings
    from sard.config import get_cfg
    from sard.distill.pseudo_labels import PseudoLabelSettings

    given = AmgSettings(points_per_side=4, pred_iou_thresh=0.3)
    generator = SardAutomaticMaskGenerator(sam_student, settings=given, output_mode="coco_rle")
    assert generator.settings == AmgSettings(4, pred_iou_thresh=0.3, output_mode="coco_rle")
    # SAM's calls: by name, and by position in SamAutomaticMaskGenerator's order.
    assert SardAutomaticMaskGenerator(sam_student, points_per_side=4).settings.points_per_side == 4
    by_position = SardAutomaticMaskGenerator(sam_student, 4, 8, 0.3).settings
    assert by_position == AmgSettings(points_per_side=4, points_per_batch=8, pred_iou_thresh=0.3)
    with pytest.raises(TypeError, match="points_per_sides"):
        SardAutomaticMaskGenerator(sam_student, points_per_sides=4)
    with pytest.raises(TypeError, match="by position and by name"):
        SardAutomaticMaskGenerator(sam_student, 4, points_per_side=8)

    cfg = get_cfg()
    node = cfg.MODEL.SARD.PSEUDO_LABELS
    defaults = asdict(AmgSettings())
    in_config = {k.lower(): v for k, v in node.items() if k.lower() in defaults}
    assert in_config == {k: defaults[k] for k in in_config} and len(in_config) == 8
    settings = PseudoLabelSettings.from_cfg(cfg)
    assert isinstance(settings, AmgSettings)
    assert settings.max_area_fraction == node.MAX_AREA_FRACTION
    # What keys the pseudo-label store: every config setting but the memory-only batch size.
    assert set(settings.identity(node)) == {k.lower() for k in node} - {
        "enabled",
        "unlabeled_fraction",
        "points_per_batch",
    }

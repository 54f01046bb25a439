"""The prompt-box floor: each GT's own tight box, filled, scored like a prediction."""

import numpy as np
import pytest
import torch

import sard.evaluation.paired as paired
from sard.evaluation import (
    PromptableInstanceEvaluator,
    box_fill_scores,
    mask_bboxes,
    paired_mask_scores,
)


def blobs(rng, q, h, w):
    """Q random ellipses (some cut by the image border) and one empty mask."""
    yy, xx = np.mgrid[:h, :w]
    masks = np.zeros((q, h, w), bool)
    for i in range(q - 1):
        cy, cx = rng.uniform(-3, h + 3), rng.uniform(-3, w + 3)
        ry, rx = rng.uniform(1.5, h / 4), rng.uniform(1.5, w / 4)
        masks[i] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return masks


def filled_boxes(masks):
    out = np.zeros_like(masks)
    for i, (y0, y1, x0, x1) in enumerate(mask_bboxes(masks)):
        out[i, y0:y1, x0:x1] = True
    return out


@pytest.mark.parametrize("atlas_pixels", [1 << 22, 64])
def test_box_fill_scores_equal_scoring_the_filled_boxes(monkeypatch, atlas_pixels):
    monkeypatch.setattr(paired, "_ATLAS_PIXELS", atlas_pixels)  # 64: many atlas chunks
    rng = np.random.default_rng(0)
    for h, w in ((40, 40), (37, 61)):
        masks = blobs(rng, 12, h, w)
        expected = paired_mask_scores(masks, filled_boxes(masks))
        got = box_fill_scores(masks)
        np.testing.assert_array_equal(got.gt_area, expected.gt_area)
        np.testing.assert_array_equal(got.iou, expected.iou)
        np.testing.assert_array_equal(got.boundary_iou, expected.boundary_iou)
        assert got.iou[-1] == 1.0 and got.boundary_iou[-1] == 1.0  # the empty mask
        assert (got.iou[:-1] < 1.0).any()  # ellipses do not fill their boxes


def test_evaluator_reports_the_floor_of_an_explicit_box_filling_prediction():
    rng = np.random.default_rng(1)
    images = [blobs(rng, 9, 48, 48), blobs(rng, 6, 30, 50)]
    inputs = [
        {"image_id": i, "height": m.shape[1], "width": m.shape[2], "gt_masks": torch.from_numpy(m)}
        for i, m in enumerate(images)
    ]
    model = [{"pred_masks": torch.from_numpy(m.copy())} for m in images]  # a perfect model
    boxes = [{"pred_masks": torch.from_numpy(filled_boxes(m))} for m in images]
    evaluator = PromptableInstanceEvaluator(size_bins=(40, 200), distributed=False)
    evaluator.process(inputs, model)
    got = evaluator.evaluate()["sard_instances"]
    evaluator.reset()
    evaluator.process(inputs, boxes)
    box_model = evaluator.evaluate()["sard_instances"]
    assert got["mIoU"] == got["bIoU"] == 100.0
    floors = {k: v for k, v in got.items() if k.startswith("box_")}
    assert floors and floors.keys() == {
        f"box_{k}" for k in box_model if k.startswith(("mIoU", "bIoU"))
    }
    for key, value in floors.items():
        assert value == pytest.approx(box_model[key[len("box_") :]], abs=1e-9), key
    assert got["box_mIoU"] < 95.0  # ellipses: the floor is a real number, not 100

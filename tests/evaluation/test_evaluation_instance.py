"""PromptableInstanceEvaluator on a hand-made scene: means, size and crowding buckets, outputs."""
import json
import logging
import math

import numpy as np
import pytest
import torch

from sard.evaluation import PromptableInstanceEvaluator, mask_bboxes, touching_neighbour_counts
from sard.evaluation.crowding import _touching_counts_pairwise


def square(h, w, rows, cols):
    m = torch.zeros(h, w, dtype=torch.bool)
    m[rows[0] : rows[1], cols[0] : cols[1]] = True
    return m


def hand_made_batch():
    """Image A (10x10, d = 1): one 5x5 square predicted one pixel to the right: IoU 20/30,
    bIoU 8/24 (see test_evaluation_boundary). Image B (80x80): five squares,
        g1 rows 0-19  cols 0-19  area 400  (medium)  touches g2, g3, g5 -> 3   pred exact
        g2 rows 20-59 cols 0-39  area 1600 (large)   touches g1, g5     -> 2   pred empty
        g3 rows 0-9   cols 20-29 area 100  (small)   touches g1, g5     -> 2   pred exact
        g4 rows 70-74 cols 70-74 area 25   (small)   isolated           -> 0   pred exact
        g5 rows 10-19 cols 20-29 area 100  (small)   touches g1, g2, g3 -> 3   pred exact
    """
    gt_a = square(10, 10, (2, 7), (2, 7))[None]
    pred_a = square(10, 10, (2, 7), (3, 8))[None]
    rects = [((0, 20), (0, 20)), ((20, 60), (0, 40)), ((0, 10), (20, 30)), ((70, 75), (70, 75))]
    rects.append(((10, 20), (20, 30)))
    gt_b = torch.stack([square(80, 80, r, c) for r, c in rects])
    pred_b = gt_b.clone()
    pred_b[1] = False
    inputs = [
        {"image_id": 7, "height": 10, "width": 10, "gt_masks": gt_a},
        {"image_id": 8, "height": 80, "width": 80, "gt_masks": gt_b},
        {"image_id": 9, "height": 30, "width": 20, "gt_masks": torch.zeros(0, 30, 20).bool()},
    ]
    no_masks = torch.zeros(0, 30, 20, dtype=torch.bool)
    outputs = [{"pred_masks": pred_a}, {"pred_masks": pred_b}, {"pred_masks": no_masks}]
    return inputs, outputs


def test_neighbour_counts_of_the_hand_made_scene():
    inputs, _ = hand_made_batch()
    gt_b = inputs[1]["gt_masks"].numpy()
    assert touching_neighbour_counts(gt_b).tolist() == [3, 2, 2, 0, 3]
    assert _touching_counts_pairwise(gt_b, mask_bboxes(gt_b)).tolist() == [3, 2, 2, 0, 3]


def test_diagonal_contact_and_overlap_count_as_touching():
    masks = np.zeros((4, 12, 12), bool)
    masks[0, 0:3, 0:3] = True
    masks[1, 3:6, 3:6] = True  # corner-to-corner with mask 0 (8-connected)
    masks[2, 8:12, 8:12] = True  # isolated from 0 and 1 ...
    masks[3, 9:11, 9:12] = True  # ... but overlapped by 3 (forces the overlap-safe path)
    assert touching_neighbour_counts(masks).tolist() == [1, 1, 1, 1]
    masks[3] = False
    masks[3, 0:3, 4:6] = True  # one-pixel gap to mask 0 (col 3 empty), side contact with mask 1
    assert touching_neighbour_counts(masks).tolist() == [1, 2, 0, 1]


def test_label_path_equals_pairwise_path_on_random_tilings():
    rng = np.random.default_rng(0)
    for _ in range(3):
        labels = rng.integers(0, 9, size=(5, 6)).repeat(4, 0).repeat(5, 1)
        masks = labels[None] == np.arange(1, 9)[:, None, None]
        boxes = mask_bboxes(masks)
        expected = _touching_counts_pairwise(masks, boxes)
        assert touching_neighbour_counts(masks, boxes).tolist() == expected.tolist()


def test_means_and_buckets_match_hand_computation(tmp_path, caplog):
    inputs, outputs = hand_made_batch()
    evaluator = PromptableInstanceEvaluator("toy", str(tmp_path), save_per_instance=True)
    evaluator.reset()
    evaluator.process(inputs[:1], outputs[:1])
    evaluator.process(inputs[1:], outputs[1:])
    with caplog.at_level(logging.INFO, logger="sard.evaluation.instance_evaluator"):
        res = evaluator.evaluate()["sard_instances"]
    # (IoU, bIoU): A0 (2/3, 1/3), B1 (1, 1), B2 (0, 0), B3 (1, 1), B4 (1, 1), B5 (1, 1)
    expected = {
        "count": 6, "mIoU": 100 * 7 / 9, "bIoU": 100 * 13 / 18,
        "count_small": 4, "mIoU_small": 100 * 11 / 12, "bIoU_small": 100 * 10 / 12,
        "count_medium": 1, "mIoU_medium": 100.0, "bIoU_medium": 100.0,
        "count_large": 1, "mIoU_large": 0.0, "bIoU_large": 0.0,
        "count_nb0": 2, "mIoU_nb0": 100 * 5 / 6, "bIoU_nb0": 100 * 2 / 3,
        "count_nb1-2": 2, "mIoU_nb1-2": 50.0, "bIoU_nb1-2": 50.0,
        "count_nb3+": 2, "mIoU_nb3+": 100.0, "bIoU_nb3+": 100.0,
    }  # fmt: skip
    # Every GT is a square, so its box filled is perfect: the prompt-box floor is 100 everywhere.
    expected.update({f"box_{k}": 100.0 for k in expected if k.startswith(("mIoU", "bIoU"))})
    assert set(res) == set(expected)
    for key, value in expected.items():
        assert res[key] == pytest.approx(value), key
    saved = json.loads((tmp_path / "sard_instances.json").read_text())
    assert saved["metrics"] == pytest.approx(res)
    per_instance = json.loads((tmp_path / "sard_instances_per_instance.json").read_text())
    assert [(r["image_id"], r["neighbours"]) for r in per_instance["instances"]] == [
        (7, 0), (8, 3), (8, 2), (8, 2), (8, 0), (8, 3)
    ]
    assert "nb3+" in caplog.text and "bIoU" in caplog.text


def test_empty_buckets_are_counted_not_nan():
    inputs, outputs = hand_made_batch()
    evaluator = PromptableInstanceEvaluator(size_bins=(10, 20), neighbour_bins=(1, 2, 5))
    evaluator.process(inputs, outputs)
    res = evaluator.evaluate()["sard_instances"]
    assert res["count_small"] == 0 and "mIoU_small" not in res and "bIoU_small" not in res
    assert res["count_medium"] == 0 and res["count_large"] == 6
    assert res["count_nb1"] == 0 and res["count_nb2-4"] == 4 and res["count_nb5+"] == 0
    assert all(math.isfinite(v) for v in res.values())
    evaluator.reset()
    empty = evaluator.evaluate()["sard_instances"]
    assert empty["count"] == 0 and all(k.startswith("count") and v == 0 for k, v in empty.items())


def test_bad_inputs_name_the_problem():
    inputs, outputs = hand_made_batch()
    evaluator = PromptableInstanceEvaluator()
    with pytest.raises(ValueError, match="differ"):
        evaluator.process(inputs[:1], [{"pred_masks": torch.zeros(1, 10, 9, dtype=torch.bool)}])
    with pytest.raises(ValueError, match="original resolution"):
        evaluator.process([dict(inputs[0], height=20)], outputs[:1])
    with pytest.raises(KeyError, match="gt_masks"):
        evaluator.process([{"image_id": 1}], outputs[:1])
    with pytest.raises(TypeError, match="threshold"):
        evaluator.process(inputs[:1], [{"pred_masks": outputs[0]["pred_masks"].float()}])
    with pytest.raises(ValueError, match="increasing"):
        PromptableInstanceEvaluator(size_bins=(32, 16))

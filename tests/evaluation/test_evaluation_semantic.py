"""SemSegBoundaryEvaluator: detectron2's confusion-matrix metrics and per-class boundary IoU."""
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from sard.evaluation import (
    SemSegBoundaryEvaluator,
    boundary_dilation,
    class_boundary_counts,
    mask_boundary,
)

NAMES = ["road", "car", "sky"]
IGN = 255

# 4x4, d = 1. Rows are image rows; 255 = ignore.
GT = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [IGN, IGN, 1, 1], [2, 2, 2, 2]])
PRED = np.array([[0, 0, 0, 1], [0, 0, 1, 1], [1, 2, 1, 1], [2, 2, 2, 0]])


def run(gts, preds, num_classes=3, names=NAMES, **kwargs):
    evaluator = SemSegBoundaryEvaluator(num_classes, IGN, names, **kwargs)
    evaluator.reset()
    for gt, pred in zip(gts, preds):
        evaluator.process([{"sem_seg": torch.as_tensor(gt)}], [{"sem_seg": torch.as_tensor(pred)}])
    return evaluator.evaluate()["sem_seg"]


def test_hand_made_image():
    res = run([GT], [PRED])
    # Valid pixels 14. tp = [4, 5, 3]; GT counts [4, 6, 4]; predicted counts [6, 5, 3]
    # IoU = [4/6, 5/6, 3/4]; ACC = [1, 5/6, 3/4].
    assert res["mIoU"] == pytest.approx(100 * 27 / 36)
    assert res["mACC"] == pytest.approx(100 * 31 / 36)
    assert res["pACC"] == pytest.approx(100 * 12 / 14)
    assert res["fwIoU"] == pytest.approx(100 * 16 / 21)  # (4*2/3 + 6*5/6 + 4*3/4) / 14
    assert res["IoU-car"] == pytest.approx(100 * 5 / 6) and res["ACC-sky"] == pytest.approx(75)
    # On a 4x4 image with d = 1 every class pixel is a boundary pixel, so BIoU = IoU, provided
    # the predictions at the two ignore pixels ((2,0) -> car, (2,1) -> sky) are left out: with
    # them sky would score 3/5 and car 5/7.
    assert res["BIoU-road"] == pytest.approx(100 * 4 / 6)
    assert res["BIoU-car"] == pytest.approx(100 * 5 / 6)
    assert res["BIoU-sky"] == pytest.approx(100 * 3 / 4)
    assert res["mBIoU"] == pytest.approx(75.0)


def detectron2_style(conf):
    """detectron2 SemSegEvaluator.evaluate's formulas (NaN for classes without GT)."""
    tp = conf.diagonal()[:-1].astype(float)
    pos_gt = conf[:-1, :-1].sum(0).astype(float)
    pos_pred = conf[:-1, :-1].sum(1).astype(float)
    valid = pos_gt > 0
    iou = np.full(len(tp), np.nan)
    iou[valid] = tp[valid] / (pos_gt + pos_pred - tp)[valid]
    acc = np.full(len(tp), np.nan)
    acc[valid] = tp[valid] / pos_gt[valid]
    return {
        "mIoU": 100 * np.nanmean(iou),
        "fwIoU": 100 * np.nansum(iou * pos_gt / pos_gt.sum()),
        "mACC": 100 * np.nanmean(acc),
        "pACC": 100 * tp.sum() / pos_gt.sum(),
    }, iou


def random_pair(rng, h, w, k):
    gt = rng.integers(0, k, size=(h // 4, w // 4)).repeat(4, 0).repeat(4, 1)
    gt = np.pad(gt, ((0, h - gt.shape[0]), (0, w - gt.shape[1])), mode="edge")
    gt[rng.random((h, w)) < 0.05] = IGN
    pred = np.where(rng.random((h, w)) < 0.8, gt, rng.integers(0, k, size=(h, w)))
    pred[pred == IGN] = 0
    return gt, pred


def test_matches_detectron2_formulas_and_sums_boundaries_over_images():
    rng = np.random.default_rng(0)
    k = 5
    pairs = [random_pair(rng, 30, 41, k), random_pair(rng, 52, 20, k)]
    pairs[1][0][pairs[1][0] == 4] = 3  # class 4 only in image 0's GT
    res = run([g for g, _ in pairs], [p for _, p in pairs], k, [f"c{c}" for c in range(k)])
    conf = np.zeros((k + 1, k + 1), np.int64)
    inter, union = np.zeros(k), np.zeros(k)
    for gt, pred in pairs:
        gt_idx = np.where(gt == IGN, k, gt)
        flat = np.bincount((k + 1) * pred.ravel() + gt_idx.ravel(), minlength=(k + 1) ** 2)
        conf += flat.reshape(k + 1, k + 1)
        d = boundary_dilation(*gt.shape)
        for c in range(k):
            bg = mask_boundary(gt == c, d)
            bp = mask_boundary((pred == c) & (gt != IGN), d)
            inter[c] += (bg & bp).sum()
            union[c] += (bg | bp).sum()
    expected, iou = detectron2_style(conf)
    for key, value in expected.items():
        assert res[key] == pytest.approx(value), key
    for c in range(k):
        assert res[f"IoU-c{c}"] == pytest.approx(100 * iou[c])
        assert res[f"BIoU-c{c}"] == pytest.approx(100 * inter[c] / union[c])  # ratio of sums
    assert res["mBIoU"] == pytest.approx(100 * np.mean(inter / union))


def test_prediction_at_ignore_pixels_never_matters():
    rng = np.random.default_rng(1)
    gt, pred = random_pair(rng, 40, 40, 4)
    other = pred.copy()
    other[gt == IGN] = rng.integers(0, 4, size=int((gt == IGN).sum()))
    names = list("abcd")
    assert run([gt], [pred], 4, names) == run([gt], [other], 4, names)
    perfect = np.where(gt == IGN, rng.integers(0, 4, size=gt.shape), gt)
    res = run([gt], [perfect], 4, names)
    assert all(v == pytest.approx(100.0) for v in res.values())


def test_absent_classes_are_left_out_without_nan():
    gt = np.array([[0, 0, 1], [0, 1, 1], [IGN, 1, 1]])
    pred = np.array([[0, 2, 1], [0, 1, 1], [2, 1, 1]])  # sky predicted but absent from the GT
    res = run([gt], [pred], 4, NAMES + ["tree"])  # tree absent from both
    assert not any(k.endswith(("-sky", "-tree")) for k in res)
    assert res["mIoU"] == pytest.approx((res["IoU-road"] + res["IoU-car"]) / 2)
    assert res["mBIoU"] == pytest.approx((res["BIoU-road"] + res["BIoU-car"]) / 2)
    assert res["IoU-road"] == pytest.approx(100 * 2 / 3)  # GT road 3 px, (0,1) predicted sky
    assert all(math.isfinite(v) for v in res.values())
    assert run([np.full((3, 3), IGN)], [pred], 4, NAMES + ["tree"]) == {}


def test_png_ground_truth_scores_and_outputs(tmp_path):
    png = tmp_path / "gt.png"
    Image.fromarray(GT.astype(np.uint8)).save(png)
    scores = torch.nn.functional.one_hot(torch.as_tensor(PRED), 3).permute(2, 0, 1).float()
    evaluator = SemSegBoundaryEvaluator(3, IGN, NAMES, output_dir=str(tmp_path / "out"))
    evaluator.process([{"sem_seg_file_name": str(png)}], [{"sem_seg": scores}])
    res = evaluator.evaluate()["sem_seg"]
    assert res == pytest.approx(run([GT], [PRED]))
    saved = json.loads((tmp_path / "out" / "sem_seg_boundary.json").read_text())
    assert saved["metrics"] == pytest.approx(res)


def test_bad_inputs_name_the_problem():
    evaluator = SemSegBoundaryEvaluator(3, IGN, NAMES)
    bad_gt = GT.copy()
    bad_gt[0, 0] = 7
    with pytest.raises(ValueError, match="outside"):
        evaluator.process([{"sem_seg": torch.as_tensor(bad_gt)}], [{"sem_seg": PRED}])
    with pytest.raises(ValueError, match="channels"):
        evaluator.process([{"sem_seg": GT}], [{"sem_seg": torch.zeros(4, 4, 4)}])
    with pytest.raises(ValueError, match="differ"):
        evaluator.process([{"sem_seg": GT}], [{"sem_seg": PRED[:3]}])
    with pytest.raises(KeyError, match="sem_seg_file_name"):
        evaluator.process([{}], [{"sem_seg": PRED}])
    with pytest.raises(ValueError, match="ignore_label"):
        SemSegBoundaryEvaluator(3, ignore_label=1)


@pytest.mark.parametrize("num_classes", [6, 300])  # uint8 and uint16 label-map paths
def test_all_class_boundaries_at_once_equal_per_class_erosion(num_classes):
    rng = np.random.default_rng(num_classes)
    used = np.array([0, 2, num_classes - 1])
    gt = used[rng.integers(0, 3, size=(7, 9))].repeat(4, 0).repeat(3, 1)
    gt[rng.random(gt.shape) < 0.1] = 1000  # ignore label beyond every class id
    pred = np.where(rng.random(gt.shape) < 0.7, gt, used[rng.integers(0, 3, size=gt.shape)])
    pred[pred == 1000] = 2
    d = boundary_dilation(*gt.shape, 0.1)
    inter, union = class_boundary_counts(gt, pred, num_classes, 1000, d)
    for c in range(num_classes):
        bg = mask_boundary(gt == c, d)
        bp = mask_boundary((pred == c) & (gt != 1000), d)
        assert (inter[c], union[c]) == ((bg & bp).sum(), (bg | bp).sum()), c
    assert union[used].min() > 0 and union.sum() == union[used].sum()

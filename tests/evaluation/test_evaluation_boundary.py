"""Boundary IoU: hand-computed cases, agreement with a plain reference of the official algorithm,
and exact agreement of the crop/atlas path with the full-image path."""
import numpy as np
import pytest
import torch

from sard.evaluation import (
    boundary_dilation,
    boundary_iou,
    mask_bboxes,
    mask_boundary,
    mask_iou,
    paired_mask_scores,
)
from sard.evaluation.paired import pack_shelves


def reference_boundary(mask: np.ndarray, dilation: int) -> np.ndarray:
    """Official algorithm, literally: pad one ring of zeros, erode `dilation` times with a 3x3
    kernel (outside the padded array counts as foreground, as cv2.erode's default border), crop,
    subtract."""
    m = mask.astype(np.uint8)
    padded = np.pad(m, 1, constant_values=0)
    h, w = padded.shape
    for _ in range(dilation):
        ext = np.pad(padded, 1, constant_values=1)
        padded = np.min([ext[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)], 0)
    return (m - padded[1:-1, 1:-1]).astype(bool)


def reference_boundary_iou(gt: np.ndarray, pred: np.ndarray, ratio: float = 0.02) -> float:
    h, w = gt.shape
    d = max(1, int(round(ratio * np.sqrt(h**2 + w**2))))
    bg, bp = reference_boundary(gt, d), reference_boundary(pred, d)
    union = np.count_nonzero(bg | bp)
    return 1.0 if union == 0 else np.count_nonzero(bg & bp) / union


def random_blob(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """An ellipse, rectangle or noisy patch, anywhere (often cut by the image border)."""
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = rng.uniform(-0.1 * h, 1.1 * h), rng.uniform(-0.1 * w, 1.1 * w)
    ry, rx = rng.uniform(1, 0.4 * h), rng.uniform(1, 0.4 * w)
    kind = rng.integers(3)
    if kind == 0:
        blob = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    elif kind == 1:
        blob = (abs(yy - cy) <= ry) & (abs(xx - cx) <= rx)
    else:
        blob = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1) & (rng.random((h, w)) > 0.3)
    return blob


def test_dilation_follows_the_official_rounding():
    assert boundary_dilation(10, 10) == 1  # 0.02 * 14.1 = 0.28 rounds to 0, floored at 1
    assert boundary_dilation(512, 512) == 14  # 0.02 * 724.08 = 14.48
    assert boundary_dilation(1024, 2048) == 46  # 0.02 * 2289.73 = 45.79
    assert boundary_dilation(3, 4, 0.5) == 2  # 2.5: Python rounds half to even, as the official
    with pytest.raises(ValueError, match="dilation_ratio"):
        boundary_dilation(10, 10, 0.0)


def test_hand_made_squares_in_the_interior():
    # 10x10 image -> d = 1. G = 5x5 square at rows/cols 2..6: eroded core 3x3, boundary = the
    # 16-pixel ring. P = the same square shifted right by one (cols 3..7).
    gt = np.zeros((10, 10), bool)
    gt[2:7, 2:7] = True
    pred = np.zeros((10, 10), bool)
    pred[2:7, 3:8] = True
    assert mask_boundary(gt, 1).sum() == 16
    assert not mask_boundary(gt, 1)[3:6, 3:6].any()
    # IoU: intersection rows 2..6 x cols 3..6 = 20, union 25 + 25 - 20 = 30.
    assert mask_iou(gt, pred) == pytest.approx(20 / 30)
    # Rings: rows 2 and 6 share cols 3..6 (4 + 4 = 8); the side columns (2, 6 vs 3, 7) never
    # coincide. Union 16 + 16 - 8 = 24.
    assert boundary_iou(gt, pred) == pytest.approx(8 / 24)


def test_image_border_counts_as_boundary():
    # 10x10, d = 1. G = rows 0..3 over the full width (40 px): survivors must have their whole
    # 3x3 neighbourhood inside the image and the mask -> rows 1..2 x cols 1..8 = 16, boundary 24.
    gt = np.zeros((10, 10), bool)
    gt[0:4] = True
    pred = np.zeros((10, 10), bool)
    pred[0:5] = True  # 50 px, survivors rows 1..3 x cols 1..8 = 24, boundary 26
    assert mask_boundary(gt, 1).sum() == 24
    assert mask_boundary(pred, 1).sum() == 26
    # Shared: row 0 (10) + cols 0 and 9 on rows 1..3 (6) = 16; union 24 + 26 - 16 = 34.
    assert boundary_iou(gt, pred) == pytest.approx(16 / 34)
    assert mask_iou(gt, pred) == pytest.approx(40 / 50)


def test_wider_boundary_with_two_erosions():
    mask = np.zeros((10, 10), bool)
    mask[1:8, 1:8] = True  # 7x7 = 49 px; d = 2 keeps the 3x3 core rows/cols 3..5 -> 40
    boundary = mask_boundary(mask, 2)
    assert boundary.sum() == 40
    assert not boundary[3:6, 3:6].any() and boundary[1:8, 1:8].sum() == 40


def test_empty_masks_are_defined():
    empty, full = np.zeros((8, 8), bool), np.ones((8, 8), bool)
    assert boundary_iou(empty, empty) == 1.0 and mask_iou(empty, empty) == 1.0
    assert boundary_iou(full, empty) == 0.0 and mask_iou(empty, full) == 0.0
    scores = paired_mask_scores(np.stack([empty, full, empty]), np.stack([empty, empty, full]))
    assert scores.iou.tolist() == [1.0, 0.0, 0.0]
    assert scores.boundary_iou.tolist() == [1.0, 0.0, 0.0]
    assert scores.gt_area.tolist() == [0, 64, 0]


@pytest.mark.parametrize("size", [(23, 37), (32, 48), (61, 40)])
def test_full_path_matches_reference_implementation(size):
    rng = np.random.default_rng(sum(size))
    h, w = size
    for ratio in (0.02, 0.08, 0.15):
        d = boundary_dilation(h, w, ratio)
        for _ in range(6):
            gt, pred = random_blob(rng, h, w), random_blob(rng, h, w)
            np.testing.assert_array_equal(mask_boundary(gt, d), reference_boundary(gt, d))
            assert boundary_iou(gt, pred, ratio) == reference_boundary_iou(gt, pred, ratio)


@pytest.mark.parametrize("size", [(40, 56), (45, 71), (17, 9)])
def test_crop_path_equals_full_path_exactly(size):
    rng = np.random.default_rng(size[0] * size[1])
    h, w = size
    q = 12
    gt = np.stack([random_blob(rng, h, w) for _ in range(q)])
    pred = np.stack([random_blob(rng, h, w) for _ in range(q)])
    gt[0] = False  # empty GT
    pred[1] = False  # empty prediction
    gt[2] = pred[2] = False  # both empty
    gt[3], pred[3] = True, True  # whole image: every side on the image border
    gt[4, :, : w // 2], pred[4, :, w // 3 :] = True, True  # touching three borders
    for ratio in (0.02, 0.1):
        scores = paired_mask_scores(torch.from_numpy(gt), torch.from_numpy(pred), ratio)
        for i in range(q):
            assert scores.iou[i] == mask_iou(gt[i], pred[i])
            assert scores.boundary_iou[i] == boundary_iou(gt[i], pred[i], ratio)
            assert scores.boundary_iou[i] == reference_boundary_iou(gt[i], pred[i], ratio)
            assert scores.gt_area[i] == gt[i].sum()
    assert np.isfinite(scores.iou).all() and np.isfinite(scores.boundary_iou).all()


@pytest.mark.parametrize("atlas_pixels", [1 << 22, 100])
def test_dense_touching_instances_crop_equals_full(monkeypatch, atlas_pixels):
    # Many small neighbouring instances packed into one atlas (or, with a small pixel budget,
    # into many): gutters must isolate them.
    monkeypatch.setattr("sard.evaluation.paired._ATLAS_PIXELS", atlas_pixels)
    rng = np.random.default_rng(3)
    h, w = 48, 64
    labels = (np.arange(h)[:, None] // 6) * 20 + np.arange(w)[None, :] // 5
    ids = np.unique(labels)[:60]
    gt = labels[None] == ids[:, None, None]
    shifted = np.roll(labels, shift=(1, -1), axis=(0, 1))
    pred = (shifted[None] == ids[:, None, None]) & (rng.random((len(ids), h, w)) > 0.05)
    scores = paired_mask_scores(gt, pred)
    for i in range(len(ids)):
        assert scores.boundary_iou[i] == boundary_iou(gt[i], pred[i])
        assert scores.iou[i] == mask_iou(gt[i], pred[i])


def test_mask_bboxes_and_packing():
    masks = np.zeros((3, 20, 13), bool)  # width not a multiple of 8 takes the byte path
    masks[0, 4:9, 2:5] = True
    masks[0, 15, 12] = True
    masks[2, 0, 0] = True
    boxes = mask_bboxes(masks)
    assert boxes.tolist() == [[4, 16, 2, 13], [0, 0, 0, 0], [0, 1, 0, 1]]
    wide = np.zeros((1, 9, 16), bool)
    wide[0, 3:5, 7:15] = True
    assert mask_bboxes(wide).tolist() == [[3, 5, 7, 15]]
    heights, widths = np.array([5, 9, 3, 9, 2]), np.array([4, 2, 7, 3, 1])
    ys, xs, ah, aw = pack_shelves(heights, widths)
    canvas = np.zeros((ah, aw), int)
    for y, x, hh, ww in zip(ys, xs, heights, widths):
        canvas[y : y + hh, x : x + ww] += 1
    assert canvas.max() == 1 and canvas.sum() == (heights * widths).sum()


def test_bad_inputs_are_rejected():
    with pytest.raises(TypeError, match="threshold"):
        boundary_iou(np.zeros((4, 4), np.float32), np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="differ"):
        paired_mask_scores(np.zeros((2, 4, 4), bool), np.zeros((2, 4, 5), bool))
    with pytest.raises(ValueError, match="dilation"):
        mask_boundary(np.zeros((4, 4), bool), 0)
    with pytest.raises(ValueError, match="3-D"):
        paired_mask_scores(np.zeros((4, 4), bool), np.zeros((4, 4), bool))

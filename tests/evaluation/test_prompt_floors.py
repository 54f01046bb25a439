"""The trivial answers to box prompts (prompt box filled, ellipse inscribed in it) and the
tool that reports them for a COCO file."""

import json

import numpy as np
import pytest
from pycocotools import mask as mask_util

from sard.evaluation import box_fill_scores
from sard.evaluation.prompt_floors import inscribed_ellipse_masks, prompt_floor_scores
from testkit import assert_help_explains_every_option


def test_inscribed_ellipse_of_a_box():
    (disc,) = inscribed_ellipse_masks(np.array([[2, 7, 10, 15]]), 10, 20)  # a 5 x 5 box
    assert not disc[:2].any() and not disc[7:].any() and not disc[:, :10].any()
    expected = np.array(
        [
            [0, 1, 1, 1, 0],
            [1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1],
            [0, 1, 1, 1, 0],
        ],
        bool,
    )
    assert np.array_equal(disc[2:7, 10:15], expected)
    wide = inscribed_ellipse_masks(np.array([[0, 4, 0, 16], [3, 3, 0, 5]]), 4, 16)
    assert wide[0, :, 0].sum() < wide[0, :, 8].sum() == 4  # narrower at the ends
    assert not wide[1].any()  # an empty box gives an empty mask


def test_each_floor_is_perfect_on_its_own_shape_and_box_matches_the_evaluators():
    h, w = 40, 50
    rect = np.zeros((h, w), bool)
    rect[5:20, 8:30] = True
    ellipse = inscribed_ellipse_masks(np.array([[10, 38, 20, 45]]), h, w)[0]
    gt = np.stack([rect, ellipse])
    scores = prompt_floor_scores(gt)
    assert scores["box"].iou[0] == 1.0 and scores["box"].iou[1] < 0.9
    assert scores["ellipse"].iou[1] == 1.0 and scores["ellipse"].boundary_iou[1] == 1.0
    assert scores["ellipse"].iou[0] < 0.9
    expected = box_fill_scores(gt)
    assert np.array_equal(scores["box"].iou, expected.iou)
    assert np.array_equal(scores["box"].boundary_iou, expected.boundary_iou)


def _coco(path, masks):
    h, w = masks.shape[1:]
    anns = []
    for i, m in enumerate(masks):
        rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode()
        ys, xs = np.nonzero(m)
        box = [int(xs.min()), int(ys.min()), int(np.ptp(xs) + 1), int(np.ptp(ys) + 1)]
        anns.append(
            dict(
                id=i + 1,
                image_id=1,
                category_id=1,
                segmentation=rle,
                bbox=box,
                iscrowd=0,
                area=int(m.sum()),
            )
        )
    data = dict(
        images=[dict(id=1, file_name="a.png", height=h, width=w)],
        annotations=anns,
        categories=[dict(id=1, name="grain")],
    )
    path.write_text(json.dumps(data))


def test_the_tool_reports_both_floors_of_a_coco_file(tmp_path, load_script, capsys):
    h, w = 40, 50
    rect = np.zeros((h, w), bool)
    rect[5:20, 8:30] = True
    ellipse = inscribed_ellipse_masks(np.array([[10, 38, 20, 45]]), h, w)[0]
    _coco(tmp_path / "test.json", np.stack([rect, ellipse]))
    tool = load_script("tools/prompt_floors.py")
    out = tmp_path / "floors.json"
    assert (
        tool.main(["--json", str(tmp_path / "test.json"), "--out", str(out), "--no-progress"]) == 0
    )
    floors = json.loads(out.read_text())[str(tmp_path / "test.json")]
    expected = prompt_floor_scores(np.stack([rect, ellipse]))
    for name in ("box", "ellipse"):
        assert floors[name]["instances"] == 2
        assert floors[name]["mIoU"] == pytest.approx(100 * expected[name].iou.mean())
        assert floors[name]["bIoU"] == pytest.approx(100 * expected[name].boundary_iou.mean())
    printed = capsys.readouterr().out
    assert "| prompt box (filled) | 2 |" in printed and "| ellipse in the box | 2 |" in printed
    with pytest.raises(SystemExit) as err:
        tool.main(["--json", str(tmp_path / "missing.json")])
    assert err.value.code == 2 and "missing.json: no such file" in capsys.readouterr().err
    assert_help_explains_every_option(tool, capsys)

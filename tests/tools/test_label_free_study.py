"""tools/label_free_study.py at a minuscule size, and the pseudo-label quality measures."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from sard.distill.pseudo_label_quality import LabelQuality, greedy_matches, iou_matrix


def test_iou_matrix_and_greedy_matching():
    gt = np.zeros((2, 8, 8), bool)
    gt[0, :4, :4] = True
    gt[1, 4:, 4:] = True
    pred = np.zeros((3, 8, 8), bool)
    pred[0, :4, :4] = True  # exact copy of object 0
    pred[1, 4:, 4:6] = True  # half of object 1: IoU 0.5
    pred[2, :4, :2] = True  # half of object 0, a duplicate
    ious = iou_matrix(pred, gt)
    assert ious[0, 0] == 1.0 and ious[1, 1] == 0.5 and ious[2, 0] == 0.5 and ious[0, 1] == 0.0
    assert greedy_matches(ious, 0.5) == 2  # one-to-one: the duplicate is not a second match
    assert greedy_matches(ious, 0.6) == 1
    quality = LabelQuality()
    quality.add(pred, gt)
    quality.add(np.zeros((0, 8, 8), bool), gt)  # an image without pseudo-masks
    s = quality.summary()
    assert s["precision"] == pytest.approx(100 * 2 / 3)
    assert s["recall"] == pytest.approx(100 * 2 / 4)
    assert s["best_mIoU"] == pytest.approx(100 * (1.0 + 0.5 + 0 + 0) / 4)
    assert s["masks_per_image"] == 1.5 and s["objects_per_image"] == 2


@pytest.fixture(scope="module")
def gravel_like(tiny_synth, tmp_path_factory):
    """The tiny synthetic set as a gravel-style source: train/ and test/ with X.jpg and
    X_mask.png (16-bit instance ids)."""
    from sard.data import load_coco_instances
    from sard.data.masks import decode_segmentation

    root = tmp_path_factory.mktemp("gravel_like")
    data = os.path.join(tiny_synth, "rockfrag_synth")
    for split, source in (("train", "train"), ("test", "val")):
        (root / split).mkdir()
        records = load_coco_instances(f"{data}/{source}.json", f"{data}/{source}")
        for record in records:
            stem = os.path.splitext(os.path.basename(record["file_name"]))[0]
            Image.open(record["file_name"]).convert("RGB").save(root / split / f"{stem}.jpg")
            ids = np.zeros((record["height"], record["width"]), np.uint16)
            for k, ann in enumerate(record["annotations"], 1):
                ids[decode_segmentation(ann["segmentation"], *ids.shape)] = k
            Image.fromarray(ids).save(root / split / f"{stem}_mask.png")
    return str(root)


def test_the_study_runs_four_students_and_reports_the_floor(
    gravel_like, load_script, tmp_path, capsys
):
    study = load_script("tools/label_free_study.py")
    out = tmp_path / "lf"
    args = ["--dataset", "gravel", "--gravel-source", gravel_like, "--out", str(out)]
    args += ["--seeds", "0", "--iters", "2", "--teacher-iters", "2", "--tile", "64"]
    args += ["--image-size", "64", "--prompts", "4", "--points-per-side", "4"]
    args += ["--pred-iou-thresh", "0", "--stability-score-thresh", "0"]
    payload = study.main(args)
    table = (out / "table.md").read_text()
    assert "prompt box (filled)" in table and "teacher (point-trained)" in table
    for student in ("scratch", "labels", "label_free", "label_free+labels"):
        assert f"| {student} |" in table
    assert 0 < payload["floor"]["mIoU"] <= 100
    assert (out / "bars.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "pseudo_labels.png").read_bytes().startswith(b"\x89PNG")
    assert "precision@0.5" in (out / "pseudo_labels.md").read_text()
    # The label-free student never sees a labelled dataset; the mixed one sees both.
    runs = out / "runs"
    label_free = dict(json.load(open(runs / "label_free_seed0" / "run.json"))["opts"])
    assert "lf_gravel_train" not in label_free["DATASETS.TRAIN"]
    train = [
        t.strip(" '") for t in label_free["DATASETS.TRAIN"].strip("()").split(",") if t.strip()
    ]
    assert train and all(os.path.isdir(t) for t in train)
    mixed = dict(json.load(open(runs / "label_free+labels_seed0" / "run.json"))["opts"])
    assert "lf_gravel_train" in mixed["DATASETS.TRAIN"]
    assert mixed["MODEL.SARD.PSEUDO_LABELS.UNLABELED_FRACTION"] == "0.5"
    # The pseudo-labels of every run live in the study's shared cache.
    assert list((out / "cache").glob("pseudo_labels-*/*.json"))
    # A second call skips every finished run and gives the same table.
    capsys.readouterr()
    again = study.main(args)
    assert [r["metrics"] for r in again["runs"]] == [r["metrics"] for r in payload["runs"]]

"""tools/export_student.py and tools/predict.py on the tiny synthetic set, with the checkpoint
of a 1-iteration training run of configs/tiny/sam_tiny_to_efficientsam_tiny.yaml."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from sard.data.masks import decode_segmentation
from testkit import SIZE_OPTS, TINY_SAM, assert_help_explains_every_option, read_json


def student_args(checkpoint: str) -> list[str]:
    """The tools' options loading the trained tiny student at 64 px."""
    return ["--config-file", TINY_SAM, "MODEL.WEIGHTS", checkpoint, *SIZE_OPTS]


@pytest.fixture(scope="module")
def checkpoint(tiny_synth, tmp_path_factory):
    """OUTPUT_DIR/model_final.pth of one training iteration (student.* and head.* entries)."""
    from sard.config import load_config
    from sard.engine import Trainer

    out = str(tmp_path_factory.mktemp("train"))
    cfg = load_config(
        TINY_SAM,
        [
            "OUTPUT_DIR",
            out,
            "DATASETS.TRAIN",
            "('test_synth_train',)",
            "DATASETS.TEST",
            "()",
            *SIZE_OPTS,
            "SOLVER.MAX_ITER",
            "1",
        ],
    )
    Trainer(cfg).train()
    return os.path.join(out, "model_final.pth")


@pytest.fixture(scope="module")
def val_image(tiny_synth):
    folder = os.path.join(tiny_synth, "rockfrag_synth")
    coco = read_json(os.path.join(folder, "val.json"))
    entry = coco["images"][0]
    return os.path.join(folder, "val", os.path.basename(entry["file_name"])), coco, entry


def test_help_explains_every_option(capsys, load_script):
    for name in ("export_student", "predict", "bench_export"):
        assert_help_explains_every_option(load_script(f"tools/{name}.py"), capsys)


def test_from_config_loads_the_trained_student(checkpoint):
    from sard.export import SardPredictor
    from sard.distill import student_state_dict

    predictor = SardPredictor.from_config(TINY_SAM, checkpoint, SIZE_OPTS)
    trained = student_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    own = predictor.model.state_dict()
    assert predictor.model.family == "efficient_sam" and predictor.resize_mode == "stretch"
    assert set(trained) <= set(own) and all(torch.equal(own[k], trained[k]) for k in trained)
    with pytest.raises(ValueError, match="MODEL.WEIGHTS"):
        SardPredictor.from_config(TINY_SAM, None, SIZE_OPTS)


def test_export_cli_with_training_checkpoint_and_bare_state_dict(
    checkpoint, tmp_path, capsys, load_script
):
    from sard.export import load_student
    from sard.distill import student_state_dict

    tool = load_script("tools/export_student.py")
    code = tool.main(
        [
            *student_args(checkpoint),
            "--format",
            "onnx",
            "--out",
            str(tmp_path / "onnx"),
        ]
    )
    text = capsys.readouterr().out
    assert code == 0, text
    assert "verification PASSED: max abs difference" in text
    manifest = read_json(tmp_path / "onnx" / "manifest.json")
    assert manifest["family"] == "efficient_sam" and manifest["image_size"] == [64, 64]
    assert manifest["parameters"]["exported"] == manifest["parameters"]["student"]
    # The exported encoder is the trained student, not a random one.
    from sard.export import load_runner

    bare = tmp_path / "student.pth"
    torch.save(student_state_dict(torch.load(checkpoint, weights_only=True)), bare)
    _, student = load_student(TINY_SAM, ["MODEL.WEIGHTS", str(bare), *SIZE_OPTS])
    images = torch.rand(2, 3, 64, 64) * 255
    (embedding,) = load_runner(str(tmp_path / "onnx" / "image_encoder.onnx"))(images)
    with torch.no_grad():
        expected = student.extract_features(images)["image_embedding"]
    assert torch.allclose(embedding, expected, atol=1e-4)


def test_export_cli_exits_non_zero_when_verification_fails(
    monkeypatch, tmp_path, checkpoint, load_script
):
    import sard.export
    from sard.export.exporter import CaseResult, ExportReport

    failing = ExportReport(
        "onnx",
        {},
        str(tmp_path / "manifest.json"),
        [CaseResult("image_encoder", "1x3x64x64", 1e-2, 1e-4)],
    )
    monkeypatch.setattr(sard.export, "export_student", lambda *a, **k: failing)
    code = load_script("tools/export_student.py").main(
        ["--config-file", TINY_SAM, "MODEL.WEIGHTS", checkpoint, *SIZE_OPTS, "--out", str(tmp_path)]
    )
    assert code == 1


def test_predict_cli_boxes_from_coco(checkpoint, val_image, tmp_path, capsys, load_script):
    image_path, coco, entry = val_image
    code = load_script("tools/predict.py").main(
        [
            image_path,
            *student_args(checkpoint),
            "--prompts-json",
            os.path.join(os.path.dirname(os.path.dirname(image_path)), "val.json"),
            "--out",
            str(tmp_path),
            "--chunk-size",
            "16",
            "--no-progress",
        ]
    )
    assert code == 0
    stem = os.path.splitext(os.path.basename(image_path))[0]
    results = read_json(tmp_path / f"{stem}_results.json")
    anns = [a for a in coco["annotations"] if a["image_id"] == entry["id"]]
    assert len(results) == len(anns) > 16  # several chunks
    assert {r["image_id"] for r in results} == {entry["id"]}
    h, w = entry["height"], entry["width"]
    # Each result is the predictor's best mask for that annotation's box, in COCO RLE.
    from sard.data import read_image
    from sard.export import SardPredictor

    predictor = SardPredictor.from_config(TINY_SAM, checkpoint, SIZE_OPTS)
    predictor.set_image(read_image(image_path))
    for r, a in list(zip(results, anns))[:3]:
        x, y, bw, bh = a["bbox"]
        masks, scores, _ = predictor.predict(box=np.array([x, y, x + bw - 1, y + bh - 1]))
        best = int(np.argmax(scores))
        assert np.array_equal(decode_segmentation(r["segmentation"], h, w), masks[best])
        assert r["score"] == pytest.approx(float(scores[best]), abs=1e-6)
    overlay = np.asarray(Image.open(tmp_path / f"{stem}_overlay.png"))
    assert overlay.shape[2] == 3 and overlay.shape[0] >= 512 and overlay.std() > 10


def test_predict_cli_grid_of_points(checkpoint, val_image, tmp_path, load_script):
    image_path, _, _ = val_image
    code = load_script("tools/predict.py").main(
        [
            image_path,
            *student_args(checkpoint),
            "--grid",
            "4",
            "--image-id",
            "7",
            "--nms-iou",
            "0.5",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert code == 0
    stem = os.path.splitext(os.path.basename(image_path))[0]
    results = read_json(tmp_path / f"{stem}_results.json")
    assert len(results) <= 16 and all(r["image_id"] == 7 for r in results)
    from pycocotools import mask as mask_util

    rles = [
        {"size": r["segmentation"]["size"], "counts": r["segmentation"]["counts"].encode()}
        for r in results
    ]
    if len(rles) > 1:  # suppression left no pair above the IoU threshold
        ious = mask_util.iou(rles, rles, [0] * len(rles))
        assert (ious[~np.eye(len(rles), dtype=bool)] <= 0.5).all()


def test_predict_cli_errors_name_the_problem(checkpoint, val_image, tmp_path, load_script):
    image_path, _, _ = val_image
    tool = load_script("tools/predict.py")
    with pytest.raises(KeyError, match="image id 999 is not in the COCO file"):
        tool.main(
            [
                image_path,
                *student_args(checkpoint),
                "--prompts-json",
                os.path.join(os.path.dirname(os.path.dirname(image_path)), "val.json"),
                "--image-id",
                "999",
                "--out",
                str(tmp_path),
            ]
        )
    with pytest.raises(FileNotFoundError, match="MODEL.WEIGHTS"):
        tool.main(
            [
                image_path,
                "--config-file",
                TINY_SAM,
                "MODEL.WEIGHTS",
                str(tmp_path / "x.pth"),
                "--out",
                str(tmp_path),
            ]
        )


def test_overlay_puts_small_masks_over_large_ones_and_reads_rle():
    from sard.data.masks import encode_mask
    from sard.export.overlay import render_overlay

    image = np.full((32, 48, 3), 100, np.uint8)
    small = np.zeros((32, 48), bool)
    small[10:14, 20:26] = True
    full = np.ones((32, 48), bool)
    # The full mask comes last and as RLE: it must neither hide the small one nor need an array.
    picture = render_overlay(image, [small, encode_mask(full)], alpha=1.0, seed=3)
    k = picture.shape[0] // 32
    assert picture.shape == (32 * k, 48 * k, 3) and 48 * k >= 512 > 48 * (k - 1)
    colours = np.random.default_rng(3).integers(60, 256, size=(2, 3))
    assert np.array_equal(picture[12 * k + k // 2, 22 * k + k // 2], colours[0])
    assert np.array_equal(picture[2 * k + k // 2, 40 * k + k // 2], colours[1])

"""tools/segment_everything.py and tools/size_distribution.py end to end: a tiny student of
configs/tiny/sam_tiny_to_efficientsam_tiny.yaml on a mosaic of the tiny synthetic set."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from sard.data.masks import decode_segmentation
from sparse_masks import sparse_mask_model
from testkit import SIZE_OPTS, TINY_SAM, assert_help_explains_every_option, read_json

# Thresholds a random student passes (its IoU head has not learnt anything).
LOOSE = ["--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--points-per-side", "4"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A training-style checkpoint ({"model": {"student.*": ...}}) of a random EfficientSAM
    student whose automatic masks are small (tests/sparse_masks.py): an untrained student's
    masks cover every tile, so nothing would survive the tiling."""
    import torch

    student = sparse_mask_model("efficient_sam", 64, offset=0.2)
    path = tmp_path_factory.mktemp("ckpt") / "model_final.pth"
    torch.save({"model": {f"student.{k}": v for k, v in student.state_dict().items()}}, path)
    return str(path)


@pytest.fixture(scope="module")
def mosaic(tiny_synth, tmp_path_factory):
    """The two 64 px validation images side by side, twice (128 x 128), with its COCO file."""
    folder = os.path.join(tiny_synth, "rockfrag_synth")
    coco = read_json(os.path.join(folder, "val.json"))
    parts = []
    for entry in coco["images"][:2]:
        path = os.path.join(folder, "val", os.path.basename(entry["file_name"]))
        parts.append(np.asarray(Image.open(path).convert("RGB")))
    image = np.concatenate([np.concatenate(parts, 1), np.concatenate(parts[::-1], 1)], 0)
    out = tmp_path_factory.mktemp("mosaic")
    Image.fromarray(image).save(out / "rocks.png")
    Image.fromarray(image[:, ::-1].copy()).save(out / "rocks_flipped.png")
    (out / "notes.txt").write_text("not an image")
    return out, image


def run_segment(load_script, args):
    return load_script("tools/segment_everything.py").main(args)


def test_help_explains_every_option(capsys, load_script):
    for name in ("segment_everything", "size_distribution"):
        assert_help_explains_every_option(load_script(f"tools/{name}.py"), capsys)


def test_one_image_gives_the_five_files(load_script, checkpoint, mosaic, tmp_path, capsys):
    folder, image = mosaic
    out = tmp_path / "out"
    args = [str(folder / "rocks.png"), "--config-file", TINY_SAM, "MODEL.WEIGHTS", checkpoint]
    args += [*SIZE_OPTS, *LOOSE, "--tile", "64", "--tile-overlap", "24", "--mm-per-px", "0.5"]
    assert run_segment(load_script, [*args, "--out", str(out), "--no-progress"]) == 0
    names = sorted(os.listdir(out))
    suffixes = ("_results.json", "_objects.csv", "_summary.json", "_psd.png", "_overlay.png")
    assert names == sorted(f"rocks{s}" for s in suffixes)
    results = read_json(out / "rocks_results.json")
    summary = read_json(out / "rocks_summary.json")
    with open(out / "rocks_objects.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(results) == len(rows) == summary["count"] > 0
    assert summary["basis"] == "number" and summary["unit"] == "mm"
    assert summary["tile"] == 64 and summary["tiling"]["windows"] == 9
    for key in ("d10", "d50", "d80", "d90"):
        assert summary[key] > 0
    assert summary["d10"] <= summary["d50"] <= summary["d80"] <= summary["d90"]
    for r, row in zip(results, rows):
        mask = decode_segmentation(r["segmentation"], 128, 128)
        assert r["image_id"] == "rocks.png" and r["category_id"] == 1
        assert r["area"] == mask.sum() == pytest.approx(float(row["area_mm2"]) / 0.25)
        ys, xs = np.nonzero(mask)
        assert r["bbox"] == [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1]
    assert Image.open(out / "rocks_psd.png").size[0] > 500
    assert Image.open(out / "rocks_overlay.png").size[0] >= 512
    assert "objects; by number, equivalent_diameter (mm)" in capsys.readouterr().out


def test_a_folder_with_area_basis_and_filters(load_script, checkpoint, mosaic, tmp_path):
    folder, _ = mosaic
    out = tmp_path / "out"
    args = [str(folder), "--config-file", TINY_SAM, "MODEL.WEIGHTS", checkpoint, *SIZE_OPTS, *LOOSE]
    args += ["--glob", "rocks*", "--basis", "area", "--min-area", "5", "--exclude-border"]
    assert run_segment(load_script, [*args, "--out", str(out), "--no-progress"]) == 0
    for stem in ("rocks", "rocks_flipped"):
        summary = read_json(out / f"{stem}_summary.json")
        results = read_json(out / f"{stem}_results.json")
        assert summary["basis"] == "area" and summary["unit"] == "px"
        assert all(r["area"] >= 5 for r in results)
        assert summary["count"] == len(results) - summary["objects_touching_border"]
        assert summary["objects_found"] >= summary["objects_kept"] == len(results)


def test_strict_thresholds_say_which_one_removed_everything(
    load_script, checkpoint, mosaic, tmp_path, capsys
):
    folder, _ = mosaic
    args = [str(folder / "rocks.png"), "--config-file", TINY_SAM, "MODEL.WEIGHTS", checkpoint]
    args += [*SIZE_OPTS, "--points-per-side", "4", "--pred-iou-thresh", "0.99"]
    assert run_segment(load_script, [*args, "--out", str(tmp_path), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "0 objects (all" in text and "under --pred-iou-thresh 0.99" in text
    summary = read_json(tmp_path / "rocks_summary.json")
    assert summary["count"] == 0 and summary["d50"] is None


def test_bad_input_gives_one_line_errors(load_script, checkpoint, mosaic, tmp_path):
    folder, _ = mosaic
    base = [
        "--config-file",
        TINY_SAM,
        "MODEL.WEIGHTS",
        checkpoint,
        *SIZE_OPTS,
        "--out",
        str(tmp_path),
    ]
    cases = [
        ([str(folder / "missing.png"), *base], "no such image or folder"),
        ([str(folder), *base, "--glob", "*.jpg"], "no image files matching"),
        ([str(folder / "rocks.png"), *base, "--mm-per-px", "-1"], "--mm-per-px must be a positive"),
        (
            [str(folder / "rocks.png"), *base, "--tile", "64", "--tile-overlap", "64"],
            "overlap < tile",
        ),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit, match=message):
            run_segment(load_script, args)


def _gt_as_results(coco, scale_masks=False):
    """Ground-truth annotations written as COCO results (optionally dilated by one pixel)."""
    import cv2

    from sard.data.masks import encode_mask

    sizes = {im["id"]: (im["height"], im["width"]) for im in coco["images"]}
    out = []
    for a in coco["annotations"]:
        mask = decode_segmentation(a["segmentation"], *sizes[a["image_id"]])
        if scale_masks:
            mask = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        out.append(
            {
                "image_id": a["image_id"],
                "category_id": 1,
                "segmentation": encode_mask(mask),
                "score": 1.0,
            }
        )
    return out


def test_size_distribution_of_the_truth_itself_is_exact(load_script, tiny_synth, tmp_path, capsys):
    folder = os.path.join(tiny_synth, "rockfrag_synth")
    gt_path = os.path.join(folder, "val.json")
    coco = read_json(gt_path)
    tool = load_script("tools/size_distribution.py")
    same, grown = tmp_path / "same.json", tmp_path / "grown.json"
    same.write_text(json.dumps(_gt_as_results(coco)))
    grown.write_text(json.dumps(_gt_as_results(coco, scale_masks=True)))
    assert tool.main(["--gt", gt_path, "--pred", str(same), "--out", str(tmp_path / "a")]) == 0
    report = read_json(tmp_path / "a" / "size_distribution.json")
    assert report["images"] == 2
    assert {k: report["pred"][k] for k in report["gt"]} == report["gt"]
    assert report["gt"]["count"] == len(coco["annotations"])
    assert report["d50_error_pct"] == report["d80_error_pct"] == report["ks_distance"] == 0.0
    assert report["gt_found_pct"] == 100.0
    assert os.path.getsize(tmp_path / "a" / "size_distribution.png") > 10000
    args = ["--gt", gt_path, "--pred", str(grown), "--mm-per-px", "2", "--basis", "area"]
    assert tool.main([*args, "--out", str(tmp_path / "b")]) == 0
    report = read_json(tmp_path / "b" / "size_distribution.json")
    assert report["unit"] == "mm" and report["basis"] == "area"
    assert (
        report["d50_error_pct"] > 5 and report["d80_error_pct"] > 5 and report["ks_distance"] > 0.1
    )
    assert report["pred"]["d50"] > report["gt"]["d50"]
    # A floor is compared the same way, on the same images, and drawn as a third curve.
    args = ["--gt", gt_path, "--pred", str(grown), "--floor", str(same), "--floor-label", "exact"]
    assert tool.main([*args, "--out", str(tmp_path / "c")]) == 0
    report = read_json(tmp_path / "c" / "size_distribution.json")
    assert report["floor"]["ks_distance"] == 0.0 and report["floor"]["d50_error_pct"] == 0.0
    assert report["ks_distance"] == report["pred"]["ks_distance"] > 0.1
    assert "d50 err  d80 err     KS" in capsys.readouterr().out


def test_size_distribution_matches_images_by_file_name(load_script, tiny_synth, tmp_path):
    folder = os.path.join(tiny_synth, "rockfrag_synth")
    gt_path = os.path.join(folder, "val.json")
    coco = read_json(gt_path)
    entry = coco["images"][1]
    results = [r for r in _gt_as_results(coco) if r["image_id"] == entry["id"]]
    for r in results:
        r["image_id"] = os.path.basename(entry["file_name"])  # as segment_everything names it
    path = tmp_path / "named.json"
    path.write_text(json.dumps(results))
    tool = load_script("tools/size_distribution.py")
    assert tool.main(["--gt", gt_path, "--pred", str(path), "--out", str(tmp_path / "o")]) == 0
    report = read_json(tmp_path / "o" / "size_distribution.json")
    assert report["images"] == 1 and report["ks_distance"] == 0.0
    args = ["--gt", gt_path, "--pred", str(path), "--all-gt-images", "--out", str(tmp_path / "o")]
    assert tool.main(args) == 0
    report = read_json(tmp_path / "o" / "size_distribution.json")
    assert report["images"] == 2 and report["pred"]["count"] == len(results)
    assert report["gt"]["count"] == len(coco["annotations"]) > len(results)
    path.write_text(json.dumps([{**results[0], "image_id": "other.png"}]))
    with pytest.raises(SystemExit, match="no image with id or file name 'other.png'"):
        tool.main(["--gt", gt_path, "--pred", str(path), "--out", str(tmp_path / "o")])
    path.write_text("[]")
    with pytest.raises(SystemExit, match="--all-gt-images"):
        tool.main(["--gt", gt_path, "--pred", str(path), "--out", str(tmp_path / "o")])
    assert (
        tool.main(
            ["--gt", gt_path, "--pred", str(path), "--all-gt-images", "--out", str(tmp_path / "o")]
        )
        == 0
    )
    report = read_json(tmp_path / "o" / "size_distribution.json")
    assert report["pred"]["count"] == 0 and "ks_distance" not in report


def test_felzenszwalb_floor_finds_flat_regions_and_runs_without_a_config(load_script, tmp_path):
    from sard.export.classical import FelzenszwalbMaskGenerator

    image = np.full((60, 90, 3), 30, np.uint8)
    squares = [(5, 5, 12), (30, 40, 20), (10, 70, 15)]  # y0, x0, side
    for k, (y0, x0, side) in enumerate(squares):
        image[y0 : y0 + side, x0 : x0 + side] = (200, 60 * k, 250 - 60 * k)
    records = FelzenszwalbMaskGenerator(scale=50, sigma=0.0, min_size=5).generate(image)
    areas = sorted(r["area"] for r in records)
    assert areas == sorted(side * side for _, _, side in squares)  # the background is dropped
    r = min(records, key=lambda r: r["area"])
    assert r["bbox"] == [5, 5, 11, 11] and r["point_coords"] == [[10.5, 10.5]]
    with pytest.raises(ValueError, match="scale > 0"):
        FelzenszwalbMaskGenerator(scale=0)
    Image.fromarray(image).save(tmp_path / "flat.png")
    tool = "tools/segment_everything.py"
    args = [str(tmp_path / "flat.png"), "--segmenter", "felzenszwalb", "--fz-scale", "50"]
    args += ["--fz-sigma", "0", "--fz-min-size", "5", "--out", str(tmp_path / "o"), "--no-progress"]
    assert load_script(tool).main(args) == 0
    summary = read_json(tmp_path / "o" / "flat_summary.json")
    assert summary["count"] == 3 and summary["generator"]["segmenter"] == "felzenszwalb"
    assert summary["tiling"]["windows"] == 1
    with pytest.raises(SystemExit, match="--config-file is required"):
        load_script(tool).main([str(tmp_path / "flat.png"), "--out", str(tmp_path / "o")])

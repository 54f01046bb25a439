"""Issue 17 catalogue, data side: broken COCO files, images and GeoJSON.

Each case asserts the exact outcome: a counted warning or a fatal problem whose text names the
file or key, the validator's verdict, and that nothing is written. Inputs that used to crash the
interpreter (pycocotools writing past its buffers) or eat gigabytes run in a child process with a
memory cap, so a regression fails the test instead of killing the test session.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from sard.data import DatasetError, ImageReadError, load_coco_instances, read_image
from sard.data.converters import geojson_to_coco
from sard.data.image_io import image_size
from sard.data.masks import decode_segmentation, encode_mask, rle_problem
from sard.data.validate import format_report, validate_coco_dataset
from testkit import REPO

H, W = 20, 30
MEMORY_CAP = 3 << 30  # bytes of address space for the child processes


def square(y0: int, x0: int, size: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y0 : y0 + size, x0 : x0 + size] = True
    return mask


def good_annotation(ann_id: int = 1, image_id: int = 1) -> dict:
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "segmentation": encode_mask(square(3, 2, 4)),
        "bbox": [2, 3, 4, 4],
        "iscrowd": 0,
    }


def write_coco(tmp_path, annotations, images=None, categories=None) -> tuple:
    """One 20x30 RGB image (1.png) and a COCO file holding the given parts."""
    root = tmp_path / "imgs"
    root.mkdir(exist_ok=True)
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(root / "1.png")
    if images is None:
        images = [{"id": 1, "file_name": "1.png", "height": H, "width": W}]
    if categories is None:
        categories = [{"id": 1, "name": "grain"}]
    path = tmp_path / "data.json"
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return str(path), str(root)


def load_with_warnings(json_file: str, root: str, caplog) -> tuple:
    with caplog.at_level(logging.WARNING, logger="sard.data"):
        dicts = load_coco_instances(json_file, root)
    return dicts, caplog.text


def run_capped(code: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a child Python with at most MEMORY_CAP bytes of address space."""
    prelude = (
        "import resource\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_CAP}, {MEMORY_CAP}))\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


LOAD_AND_DECODE = """
import json, sys
from sard.data import load_coco_instances
from sard.data.masks import decode_instances
from sard.data.validate import validate_coco_dataset
report = validate_coco_dataset({json!r}, {root!r},
                               progress=False)
dicts = load_coco_instances({json!r}, {root!r})
masks, boxes, areas = decode_instances(
    [a["segmentation"] for a in dicts[0]["annotations"]], dicts[0]["height"], dicts[0]["width"])
print(json.dumps({{"ok": report.ok, "warnings": report.warnings, "areas": areas.tolist()}}))
"""


# ---------------------------------------------------------------- polygons far outside the image
@pytest.mark.parametrize("far", [1e8, 1e30])
def test_far_polygon_vertices_are_clipped_before_rasterising(tmp_path, far):
    """1e30 used to segfault pycocotools, 1e8 to take 7.9 GB: now clipped, same pixels."""
    poly = {**good_annotation(), "segmentation": [[1, 1, far, 1, far, far, 1, far]]}
    json_file, root = write_coco(tmp_path, [poly])
    res = run_capped(LOAD_AND_DECODE.format(json=json_file, root=root))
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["ok"] is True
    assert any("polygons extending outside the image clipped" in w for w in out["warnings"])
    assert out["areas"] == [(H - 1) * (W - 1)]  # the whole image but the first row and column


def test_nan_and_infinite_polygon_coordinates_are_dropped(tmp_path):
    bad = {**good_annotation(2), "segmentation": [[1, 1, float("nan"), 1, 5, 5]]}
    inf = {**good_annotation(3), "segmentation": [[1, 1, float("inf"), 1, 5, 5]]}
    json_file, root = write_coco(tmp_path, [good_annotation(), bad, inf])
    report = validate_coco_dataset(json_file, root, progress=False)
    assert report.ok
    assert any(
        "2 polygons with non-numeric coordinates dropped" in w for w in report.warnings
    ), report.warnings


# ---------------------------------------------------------------- RLE counts of the right size
GARBAGE_RLES = {
    "string of junk": "zzzzzzzz",
    "characters outside the alphabet": "~~~~",
    "counts too long": [1, 2, H * W],
    "counts too short": [5, 5],
    "negative runs": [-10, H * W + 10],
    "non-integers": [1.5, H * W - 1.5],
}


@pytest.mark.parametrize("name", sorted(GARBAGE_RLES))
def test_garbage_rle_counts_are_caught_and_training_does_not_crash(tmp_path, name):
    """Right-sized RLEs with garbage counts used to pass the validator and crash training."""
    rle = {"size": [H, W], "counts": GARBAGE_RLES[name]}
    assert rle_problem(rle, H, W) is not None
    bad = {**good_annotation(2), "segmentation": rle}
    json_file, root = write_coco(tmp_path, [good_annotation(), bad])
    res = run_capped(LOAD_AND_DECODE.format(json=json_file, root=root))
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["areas"] == [16]  # the good annotation only
    (line,) = [w for w in out["warnings"] if "RLE masks with corrupt counts skipped" in w]
    assert "annotation 2 of 1.png" in line


def test_sound_rles_pass_the_counts_check():
    rng = np.random.default_rng(0)
    for _ in range(50):
        mask = rng.random((H, W)) < rng.random()
        rle = encode_mask(mask)
        assert rle_problem(rle, H, W) is None
        assert np.array_equal(decode_segmentation(rle, H, W), mask)
        as_list = {"size": [H, W], "counts": [H * W]}
        assert rle_problem(as_list, H, W) is None


# ---------------------------------------------------------------- file_name outside the root
@pytest.mark.parametrize(
    "file_name, words",
    [
        ("../../etc/hosts", "climbs out with '..'"),
        ("sub/../../1.png", "climbs out with '..'"),
        ("/etc/hosts", "is an absolute path"),
    ],
)
def test_file_names_leaving_the_image_root_are_refused(tmp_path, file_name, words):
    images = [{"id": 1, "file_name": file_name, "height": H, "width": W}]
    json_file, root = write_coco(tmp_path, [good_annotation()], images=images)
    with pytest.raises(DatasetError) as err:
        load_coco_instances(json_file, root)
    text = str(err.value)
    assert "data.json" in text and repr(file_name) in text and words in text
    assert "allow_outside_root=True" in text  # the opt-in is named
    report = validate_coco_dataset(json_file, root, progress=False)
    assert not report.ok and any(words in line for line in report.fatal)


def test_outside_root_opt_in_reads_the_file(tmp_path, load_script, capsys):
    outside = tmp_path / "elsewhere.png"
    Image.fromarray(np.full((H, W, 3), 7, np.uint8)).save(outside)
    images = [{"id": 1, "file_name": str(outside), "height": H, "width": W}]
    json_file, root = write_coco(tmp_path, [good_annotation()], images=images)
    dicts = load_coco_instances(json_file, root, allow_outside_root=True)
    assert dicts[0]["file_name"] == str(outside)
    cli = load_script("tools/validate_dataset.py")
    assert cli.main([json_file, "--image-root", root]) == 1
    assert cli.main([json_file, "--image-root", root, "--allow-outside-root"]) == 0
    assert "result: OK" in capsys.readouterr().out


# ---------------------------------------------------------------- ids of the wrong type
def test_list_category_id_is_a_counted_warning_not_a_type_error(tmp_path, caplog):
    bad = {**good_annotation(2), "category_id": [1]}
    json_file, root = write_coco(tmp_path, [good_annotation(), bad])
    dicts, text = load_with_warnings(json_file, root, caplog)
    assert len(dicts[0]["annotations"]) == 1
    assert "1 annotations whose category_id is not an integer skipped" in text
    assert "category_id [1]" in text


@pytest.mark.parametrize(
    "part, words",
    [
        ("category", "categories[0] has id [1]; category ids must be integers"),
        ("image", "images[0] has id [1]; image ids must be integers"),
        ("file_name", "file_name 5 is not a file name"),
    ],
)
def test_ids_and_file_names_of_the_wrong_type_are_fatal(tmp_path, part, words):
    images = categories = None
    if part == "category":
        categories = [{"id": [1], "name": "grain"}]
    elif part == "image":
        images = [{"id": [1], "file_name": "1.png", "height": H, "width": W}]
    else:
        images = [{"id": 1, "file_name": 5, "height": H, "width": W}]
    json_file, root = write_coco(tmp_path, [good_annotation()], images, categories)
    with pytest.raises(DatasetError, match="data.json") as err:
        load_coco_instances(json_file, root)
    assert words in str(err.value)


def test_unhashable_annotation_image_id_is_skipped(tmp_path, caplog):
    bad = {**good_annotation(2), "image_id": {"id": 1}}
    json_file, root = write_coco(tmp_path, [good_annotation(), bad])
    dicts, text = load_with_warnings(json_file, root, caplog)
    assert len(dicts[0]["annotations"]) == 1
    assert "1 annotations whose image_id is not an integer skipped" in text


# ---------------------------------------------------------------- datasets with nothing to learn
def test_empty_categories_fail_validation_with_a_clear_message(tmp_path, load_script, capsys):
    json_file, root = write_coco(tmp_path, [good_annotation()], categories=[])
    report = validate_coco_dataset(json_file, root, progress=False)
    assert not report.ok
    assert any("'categories' is empty" in line for line in report.fatal)
    assert "result: FAILED" in format_report(report)
    assert load_script("tools/validate_dataset.py").main([json_file, "--image-root", root]) == 1
    with pytest.raises(DatasetError, match="'categories' is empty"):
        load_coco_instances(json_file, root)


def test_zero_usable_instances_fail_validation(tmp_path):
    junk = {**good_annotation(), "segmentation": {"size": [H, W], "counts": [H * W]}}
    json_file, root = write_coco(tmp_path, [junk])  # an all-background mask: skipped
    report = validate_coco_dataset(json_file, root, progress=False)
    assert not report.ok
    (line,) = [f for f in report.fatal if "no usable instance" in f]
    assert "none of the 1 annotation(s)" in line
    with pytest.raises(DatasetError, match="no usable instance"):
        load_coco_instances(json_file, root)


# ---------------------------------------------------------------- images
def test_float_tiff_with_nan_is_refused_naming_the_file(tmp_path):
    data = np.random.default_rng(0).random((H, W)).astype(np.float32)
    data[3, 4] = np.nan
    Image.fromarray(data, mode="F").save(tmp_path / "nan.tif")
    with pytest.raises(ImageReadError, match=r"nan\.tif: float image holds 1 NaN"):
        read_image(tmp_path / "nan.tif")
    finite = np.nan_to_num(data)
    Image.fromarray(finite, mode="F").save(tmp_path / "ok.tif")
    assert read_image(tmp_path / "ok.tif").max() > 0  # finite floats still decode


def _png_header_only(path, width: int, height: int) -> None:
    """A PNG whose header announces width x height (no pixel data is needed to trip PIL)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))


def test_huge_image_is_a_one_line_error_naming_the_file(tmp_path):
    path = tmp_path / "huge.png"
    _png_header_only(path, 20000, 20000)
    for read in (read_image, image_size):
        with pytest.raises(ImageReadError) as err:
            read(path)
        text = str(err.value)
        assert text.startswith(str(path)) and "too large to decode safely" in text
        assert "\n" not in text and "MAX_IMAGE_PIXELS" in text


def test_validator_reports_unreadable_images_as_fatal(tmp_path):
    json_file, root = write_coco(tmp_path, [good_annotation()])
    _png_header_only(tmp_path / "imgs" / "1.png", 20000, 20000)
    report = validate_coco_dataset(json_file, root, progress=False)
    assert not report.ok and any("1.png: image too large" in line for line in report.fatal)


# ---------------------------------------------------------------- GeoJSON
def _geojson_pair(tmp_path, features, crs=None, name="a"):
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / f"{name}.png")
    data = {"type": "FeatureCollection", "features": features}
    if crs is not None:
        data["crs"] = crs
    (tmp_path / f"{name}.geojson").write_text(json.dumps(data))
    return [(str(tmp_path / f"{name}.geojson"), str(tmp_path / f"{name}.png"))]


def _polygon(coords, props=None):
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [coords]},
        "properties": props or {},
    }


SQUARE = [[2, 2], [8, 2], [8, 8], [2, 8], [2, 2]]
CRS84 = {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}}
EPSG4326 = {"type": "name", "properties": {"name": "EPSG:4326"}}
UTM = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}}
CODED = {"type": "EPSG", "properties": {"code": 4326}}


@pytest.mark.parametrize(
    "crs, kind",
    [
        (CRS84, "geographic"),
        (EPSG4326, "geographic"),
        (CODED, "geographic"),
        (UTM, "map coordinates"),
    ],
)
def test_geojson_with_a_crs_is_refused_unless_pixels_are_declared(tmp_path, crs, kind):
    items = _geojson_pair(tmp_path, [_polygon(SQUARE)], crs=crs)
    out = tmp_path / "out"
    with pytest.raises(DatasetError) as err:
        geojson_to_coco(items, str(out), "train")
    text = str(err.value)
    assert "a.geojson" in text and kind in text and "--pixel-coordinates" in text
    assert not out.exists()  # nothing written
    stats = geojson_to_coco(items, str(out), "train", pixel_coordinates=True)
    assert stats["instances"] == 1


def test_self_intersecting_polygons_are_repaired_and_counted(tmp_path, caplog):
    bowtie = [[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]  # two triangles meeting at (5, 5)
    items = _geojson_pair(tmp_path, [_polygon(bowtie), _polygon(SQUARE)])
    with caplog.at_level(logging.WARNING, logger="sard.data"):
        geojson_to_coco(items, str(tmp_path / "out"), "train")
    assert "1 self-intersecting or otherwise invalid polygons repaired" in caplog.text
    coco = json.loads((tmp_path / "out" / "train.json").read_text())
    first = decode_segmentation(coco["annotations"][0]["segmentation"], H, W)
    # The repaired shape is the two triangles |x - 5| >= |y - 5| of the 10x10 square.
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    inside = (xs < 10) & (ys < 10) & (np.abs(xs - 5) >= np.abs(ys - 5))
    assert np.logical_xor(first, inside).sum() <= 10  # boundary rounding only
    assert first[5, 1] and first[5, 8] and not first[1, 5] and not first[8, 5]


@pytest.mark.parametrize(
    "feature, words",
    [
        ("a string", "feature 0 is a str, not a GeoJSON Feature object"),
        (
            {"type": "Feature", "geometry": [[0, 0], [1, 1]], "properties": {}},
            "feature 0 has a geometry that is a list",
        ),
        (
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [SQUARE]},
                "properties": ["grain"],
            },
            "feature 0 has properties that are a list",
        ),
    ],
)
def test_malformed_geojson_features_are_clear_errors(tmp_path, feature, words):
    items = _geojson_pair(tmp_path, [feature])
    with pytest.raises(DatasetError) as err:
        geojson_to_coco(items, str(tmp_path / "out"), "train")
    assert "a.geojson" in str(err.value) and words in str(err.value)
    assert not (tmp_path / "out").exists()


def test_geojson_far_vertices_do_not_crash(tmp_path):
    far = [[1, 1], [1e30, 1], [1e30, 1e30], [1, 1e30], [1, 1]]
    items = _geojson_pair(tmp_path, [_polygon(far)])
    code = (
        "from sard.data.converters import geojson_to_coco\n"
        f"print(geojson_to_coco({items!r}, {str(tmp_path / 'out')!r}, 'train')['instances'])"
    )
    res = run_capped(code)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "1"


def test_prepare_geojson_cli_refuses_a_crs_in_one_line(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _geojson_pair(src, [_polygon(SQUARE)], crs=CRS84)
    out = tmp_path / "out"
    cmd = [sys.executable, "datasets/prepare_geojson.py", "--src", str(src), "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("error: ") and "a.geojson" in line and "--pixel-coordinates" in line
    assert not out.exists()
    ok = subprocess.run(
        cmd + ["--pixel-coordinates"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert (out / "train.json").is_file()


# ---------------------------------------------------------------- more broken COCO
def test_absurd_image_size_is_fatal_not_an_overflow(tmp_path):
    """10^5 x 10^5 px used to reach pycocotools' 32-bit counts and raise OverflowError."""
    big = 100_000
    images = [{"id": 1, "file_name": "1.png", "height": big, "width": big}]
    rle = {"size": [big, big], "counts": [big * big - 10, 10]}
    anns = [{**good_annotation(), "segmentation": rle}]
    json_file, root = write_coco(tmp_path, anns, images=images)
    report = validate_coco_dataset(json_file, root, progress=False)
    assert not report.ok
    assert any("100000x100000 is more pixels than COCO masks can hold" in f for f in report.fatal)


def test_no_images_is_fatal(tmp_path):
    json_file, root = write_coco(tmp_path, [], images=[])
    report = validate_coco_dataset(json_file, root, progress=False)
    assert not report.ok and any("'images' is empty" in f for f in report.fatal)

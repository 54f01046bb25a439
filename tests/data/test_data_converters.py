"""Converters: label images, GeoJSON polygons and mnfinder data -> COCO -> the same masks."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from sard.data import DatasetError, ImageReadError, load_coco_instances, read_label_image
from sard.data.converters import find_label_pairs, geojson_to_coco, labels_to_coco
from sard.data.masks import decode_segmentation
from sard.data.mnfinder_data import find_mnfinder_package, list_mnfinder_samples, mnfinder_to_coco

GRAVEL = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "gravel_fh")


def masks_by_instance(json_file: str, image_root: str):
    """[(file basename, [bool masks in JSON order])] through the project's own loader."""
    out = []
    for d in load_coco_instances(json_file, image_root):
        masks = [
            decode_segmentation(a["segmentation"], d["height"], d["width"])
            for a in d["annotations"]
        ]
        out.append((os.path.basename(d["file_name"]), masks))
    return out


def test_label_image_round_trip_gives_back_the_same_instances(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    labels = np.zeros((12, 16), np.uint16)
    labels[1:4, 1:5] = 3
    labels[6:10, 2:4] = 300  # a 16-bit value
    labels[6:8, 10:12] = 7
    labels[10:12, 13:16] = 7  # one label in two pieces stays one instance
    Image.fromarray(labels).save(src / "a_mask.png")
    Image.fromarray(np.full((12, 16, 3), 90, np.uint8)).save(src / "a.jpg")
    Image.fromarray(np.zeros((12, 16), np.uint8)).save(src / "empty_mask.png")
    Image.fromarray(np.zeros((12, 16), np.uint8)).save(src / "empty.png")
    pairs = find_label_pairs(str(src))
    assert [os.path.basename(p[0]) for p in pairs] == ["a.jpg", "empty.png"]
    stats = labels_to_coco(pairs, str(tmp_path / "out"), "train")
    assert stats["instances"] == 3 and stats["images"] == 2
    (name, masks), (_, empty) = masks_by_instance(
        str(tmp_path / "out" / "train.json"), str(tmp_path / "out" / "train")
    )
    assert name == "a.jpg" and empty == []
    for mask, value in zip(masks, (3, 7, 300)):
        assert np.array_equal(mask, labels == value)


def test_real_gravel_label_image_round_trip(tmp_path):
    if not os.path.isdir(GRAVEL):
        pytest.skip("../shared/data/gravel_fh not present")
    pairs = find_label_pairs(os.path.join(GRAVEL, "test"))
    assert len(pairs) == 1
    stats = labels_to_coco(pairs, str(tmp_path), "test")
    labels = read_label_image(pairs[0][1])
    values = [v for v in np.unique(labels) if v > 0]
    assert stats["instances"] == len(values) == 152
    ((_, masks),) = masks_by_instance(str(tmp_path / "test.json"), str(tmp_path / "test"))
    for mask, value in zip(masks, values):
        assert np.array_equal(mask, labels == value)
    assert stats["median_area_px"] < 1000  # real tiny-dense grains


def test_label_converter_rejects_colour_labels_and_size_mismatch(tmp_path):
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(tmp_path / "x_mask.png")
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(tmp_path / "x.png")
    with pytest.raises(ImageReadError, match="x_mask.png: expected a single-channel"):
        labels_to_coco(find_label_pairs(str(tmp_path)), str(tmp_path / "o"), "train")
    Image.fromarray(np.zeros((5, 6), np.uint8)).save(tmp_path / "x_mask.png")
    with pytest.raises(DatasetError, match="x_mask.png: label size"):
        labels_to_coco(find_label_pairs(str(tmp_path)), str(tmp_path / "o"), "train")
    os.remove(tmp_path / "x.png")
    with pytest.raises(DatasetError, match="no image found next to"):
        find_label_pairs(str(tmp_path))


def test_a_bad_pair_in_the_middle_writes_nothing(tmp_path):
    """The converter reads every pair before it copies: a broken third label image leaves no
    half-converted split (no image folder, no JSON)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray(np.full((8, 8, 3), 50, np.uint8)).save(src / f"{name}.png")
        labels = np.zeros((8, 8), np.uint8)
        labels[2:5, 2:5] = 1
        Image.fromarray(labels).save(src / f"{name}_mask.png")
    (src / "c_mask.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    with pytest.raises(ImageReadError, match="c_mask.png"):
        labels_to_coco(find_label_pairs(str(src)), str(out), "train")
    assert not (out / "train").exists() and not (out / "train.json").exists()


def test_images_sharing_a_file_name_are_refused_before_copying(tmp_path):
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(tmp_path / folder / "x.png")
        Image.fromarray(np.ones((6, 6), np.uint8)).save(tmp_path / folder / "x_mask.png")
    pairs = find_label_pairs(str(tmp_path / "one")) + find_label_pairs(str(tmp_path / "two"))
    with pytest.raises(DatasetError, match="two images share the file name 'x.png'"):
        labels_to_coco(pairs, str(tmp_path / "out"), "train")
    assert not (tmp_path / "out" / "train").exists()


def _feature(geometry, **props):
    return {"type": "Feature", "properties": props, "geometry": geometry}


def test_geojson_polygons_with_holes_multipolygons_and_classes(tmp_path, caplog):
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "img.png")
    square = [[2, 2], [10, 2], [10, 10], [2, 10], [2, 2]]
    hole = [[4, 4], [6, 4], [6, 6], [4, 6], [4, 4]]
    features = [
        _feature({"type": "Polygon", "coordinates": [square, hole]}, cls="rock"),
        _feature(
            {
                "type": "MultiPolygon",
                "coordinates": [
                    [[[12, 12], [14, 12], [14, 14], [12, 14]]],
                    [[[16, 2], [18, 2], [18, 4], [16, 4]]],
                ],
            },
            cls="fines",
        ),
        _feature({"type": "Point", "coordinates": [1, 1]}, cls="rock"),
        _feature({"type": "Polygon", "coordinates": [[[30, 30], [40, 30], [40, 40]]]}, cls="rock"),
        _feature({"type": "Polygon", "coordinates": [[[1, 1], [2, 2]]]}, cls="rock"),
    ]
    (tmp_path / "img.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": features})
    )
    with caplog.at_level(logging.WARNING, logger="sard.data"):
        stats = geojson_to_coco(
            [(str(tmp_path / "img.geojson"), str(tmp_path / "img.png"))],
            str(tmp_path / "out"),
            "train",
            category_property="cls",
        )
    assert stats["instances"] == 2
    assert "1 features that are not Polygon/MultiPolygon skipped" in caplog.text
    assert "polygons with fewer than 3 points skipped" in caplog.text
    assert "features with an empty mask" in caplog.text
    coco = json.loads((tmp_path / "out" / "train.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["fines", "rock"]
    rock = next(a for a in coco["annotations"] if a["category_id"] == 2)
    mask = decode_segmentation(rock["segmentation"], 20, 20)
    expected = np.zeros((20, 20), bool)
    expected[2:10, 2:10] = True
    expected[4:6, 4:6] = False  # the hole
    assert np.array_equal(mask, expected) and rock["bbox"] == [2.0, 2.0, 8.0, 8.0]
    fines = next(a for a in coco["annotations"] if a["category_id"] == 1)
    assert fines["area"] == 8  # two 2x2 squares in one instance


def test_geojson_negate_y_and_bad_files(tmp_path):
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "img.png")
    poly = {"type": "Polygon", "coordinates": [[[1, -1], [4, -1], [4, -3], [1, -3]]]}
    (tmp_path / "a.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": [_feature(poly)]})
    )
    geojson_to_coco(
        [(str(tmp_path / "a.geojson"), str(tmp_path / "img.png"))],
        str(tmp_path / "out"),
        "val",
        negate_y=True,
    )
    (ann,) = json.loads((tmp_path / "out" / "val.json").read_text())["annotations"]
    assert ann["bbox"] == [1.0, 1.0, 3.0, 2.0]
    (tmp_path / "b.geojson").write_text(json.dumps({"type": "Feature"}))
    with pytest.raises(DatasetError, match="b.geojson: not a GeoJSON FeatureCollection"):
        geojson_to_coco(
            [(str(tmp_path / "b.geojson"), str(tmp_path / "img.png"))], str(tmp_path / "out"), "val"
        )


@pytest.fixture
def mnfinder_dir():
    package = find_mnfinder_package()
    if package is None:
        pytest.skip("mnfinder not installed (pip install --no-deps mnfinder)")
    return package


def test_mnfinder_is_found_without_importing_it(mnfinder_dir):
    import sys

    assert "mnfinder" not in sys.modules  # find_spec does not run the package (TensorFlow)
    counts = {s: len(list_mnfinder_samples(mnfinder_dir, s)) for s in ("train", "val", "test")}
    assert counts["train"] > counts["test"] > counts["val"] > 0


def test_mnfinder_conversion_on_one_sample_per_split(mnfinder_dir, tmp_path):
    # A package folder holding only the first validation sample keeps the test fast.
    name, image, nucleus, mn = list_mnfinder_samples(mnfinder_dir, "val")[0]
    experiment = os.path.basename(os.path.dirname(os.path.dirname(image)))
    fake = tmp_path / "pkg" / "validation-data" / experiment
    for sub, src in (("images", image), ("nucleus_masks", nucleus), ("mn_masks", mn)):
        (fake / sub).mkdir(parents=True)
        os.symlink(src, fake / sub / os.path.basename(src))
    stats = mnfinder_to_coco(
        str(tmp_path / "out"), package_dir=str(tmp_path / "pkg"), splits=["val"], progress=False
    )["val"]
    coco = json.loads((tmp_path / "out" / "val.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["nucleus", "micronucleus"]
    by_cat = {1: [], 2: []}
    for ann in coco["annotations"]:
        by_cat[ann["category_id"]].append(ann["area"])
    assert len(by_cat[1]) > 10 and len(by_cat[2]) > 10
    assert np.median(by_cat[2]) < np.median(by_cat[1]) / 10  # micronuclei are tiny
    nuclei_blue = np.asarray(Image.open(nucleus))[..., 2]
    mn_pixels = np.asarray(Image.open(mn))[..., 2] > 0
    assert len(by_cat[1]) == len(np.unique(nuclei_blue[(nuclei_blue > 0) & ~mn_pixels]))
    image_out = np.asarray(Image.open(tmp_path / "out" / "val" / coco["images"][0]["file_name"]))
    assert image_out.dtype == np.uint8 and image_out.shape[2] == 3 and image_out.max() == 255
    assert stats["instances"] == len(coco["annotations"])
    masks = [
        decode_segmentation(a["segmentation"], *image_out.shape[:2]) for a in coco["annotations"]
    ]
    assert int(np.sum(masks, axis=0).max()) == 1  # instances do not overlap

"""COCO loading, image reading and the validator: every bad-input case of issue 5."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from sard.data import DatasetError, ImageReadError, load_coco_instances, read_image
from sard.data.masks import decode_instances, decode_segmentation, encode_mask
from sard.data.validate import format_report, validate_coco_dataset

H, W = 20, 30


def square_mask(y0: int, x0: int, size: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[y0 : y0 + size, x0 : x0 + size] = True
    return mask


def write_dataset(tmp_path, annotations=None, images=None, categories=None, n_images=2):
    """A valid 2-image dataset (RGB PNGs) whose parts can be replaced."""
    root = tmp_path / "imgs"
    root.mkdir(exist_ok=True)
    if images is None:
        images = []
        for i in range(1, n_images + 1):
            Image.fromarray(np.full((H, W, 3), 40 * i, np.uint8)).save(root / f"{i}.png")
            images.append({"id": i, "file_name": f"{i}.png", "height": H, "width": W})
    if annotations is None:
        annotations = [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 7,
                "bbox": [2, 3, 4, 4],
                "segmentation": encode_mask(square_mask(3, 2, 4)),
                "area": 16,
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 2,
                "category_id": 9,
                "bbox": [10, 5, 3, 3],
                "segmentation": [[10, 5, 13, 5, 13, 8, 10, 8]],
                "area": 9,
                "iscrowd": 0,
            },
        ]
    if categories is None:
        categories = [{"id": 9, "name": "b"}, {"id": 7, "name": "a"}]
    path = tmp_path / "data.json"
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return str(path), str(root)


def test_valid_dataset_loads_into_detectron2_dicts(tmp_path):
    json_file, root = write_dataset(tmp_path)
    dicts = load_coco_instances(json_file, root)
    assert [d["image_id"] for d in dicts] == [1, 2]
    first = dicts[0]
    assert first["file_name"] == os.path.join(root, "1.png")
    assert (first["height"], first["width"]) == (H, W)
    ann = first["annotations"][0]
    assert ann["bbox"] == [2.0, 3.0, 4.0, 4.0] and int(ann["bbox_mode"]) == 1
    assert ann["category_id"] == 0  # COCO id 7 is the smallest -> contiguous 0
    assert dicts[1]["annotations"][0]["category_id"] == 1
    assert ann["iscrowd"] == 0 and ann["area"] == 16
    mask = decode_segmentation(ann["segmentation"], H, W)
    assert np.array_equal(mask, square_mask(3, 2, 4))
    poly_mask = decode_segmentation(dicts[1]["annotations"][0]["segmentation"], H, W)
    assert poly_mask.sum() == 9 and poly_mask[5:8, 10:13].all()


def test_missing_image_file_is_fatal_and_named(tmp_path):
    json_file, root = write_dataset(tmp_path)
    os.remove(os.path.join(root, "2.png"))
    with pytest.raises(DatasetError, match=r"missing image file .*2\.png"):
        load_coco_instances(json_file, root)


@pytest.mark.parametrize(
    "content, reason",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a COCO file"),
        ('{"images": [], "annotations": []}', "missing key"),
        ('{"images": {}, "annotations": [], "categories": []}', "'images' must be a list"),
    ],
)
def test_json_that_is_not_coco_is_rejected_with_the_file_name(tmp_path, content, reason):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DatasetError, match=reason) as info:
        load_coco_instances(str(path), str(tmp_path))
    assert "bad.json" in str(info.value)


def test_duplicate_image_ids_are_fatal(tmp_path):
    images = [
        {"id": 1, "file_name": "1.png", "height": H, "width": W},
        {"id": 1, "file_name": "2.png", "height": H, "width": W},
    ]
    json_file, root = write_dataset(tmp_path)  # writes the image files
    json_file, root = write_dataset(tmp_path, images=images, annotations=[])
    with pytest.raises(DatasetError, match="duplicate image id 1"):
        load_coco_instances(json_file, root)


def test_duplicate_category_ids_are_fatal(tmp_path):
    cats = [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]
    json_file, root = write_dataset(tmp_path, categories=cats, annotations=[])
    with pytest.raises(DatasetError, match="duplicate category id 1"):
        load_coco_instances(json_file, root)


def test_safe_problems_are_skipped_or_fixed_with_counted_warnings(tmp_path, caplog):
    good = encode_mask(square_mask(3, 2, 4))
    anns = [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [2, 3, 4, 4], "segmentation": good},
        {"id": 2, "image_id": 99, "category_id": 7, "bbox": [2, 3, 4, 4], "segmentation": good},
        {
            "id": 3,
            "image_id": 1,
            "category_id": 7,
            "bbox": [0, 0, 1, 1],
            "segmentation": encode_mask(np.zeros((H, W), bool)),
        },
        {"id": 4, "image_id": 1, "category_id": 7, "bbox": [-5, 3, 11, 4], "segmentation": good},
        {"id": 5, "image_id": 1, "category_id": 7, "bbox": [2, 3, 0, 4], "segmentation": good},
        {"id": 5, "image_id": 1, "category_id": 7, "bbox": [2, 3, 4, 4], "segmentation": good},
        {"id": 7, "image_id": 1, "category_id": 7, "segmentation": [[1, 1, 2, 1]]},
        {"id": 8, "image_id": 1, "category_id": 7, "segmentation": [[25, 15, 40, 15, 40, 30]]},
        {"id": 9, "image_id": 1, "category_id": 7, "segmentation": {"size": [5, 5], "counts": "0"}},
        {"id": 10, "image_id": 1, "category_id": 42, "segmentation": good},
        {"id": 11, "image_id": 1, "category_id": 7, "segmentation": [[1, "a", 3, 4, 5, 6]]},
    ]
    json_file, root = write_dataset(tmp_path, annotations=anns)
    with caplog.at_level(logging.WARNING, logger="sard.data"):
        dicts = load_coco_instances(json_file, root)
    text = caplog.text
    assert "1 annotations pointing at an unknown image skipped" in text
    assert "1 annotations with an empty (zero-area) mask skipped" in text
    assert "1 boxes out of the image bounds clipped" in text
    assert "1 zero-area boxes replaced by the mask's box" in text
    assert "1 duplicate annotation ids (kept)" in text
    assert "1 degenerate polygons dropped" in text
    assert "1 polygons extending outside the image clipped" in text
    assert "1 RLE masks whose size differs from the image skipped" in text
    assert "1 annotations with an unknown category skipped" in text
    assert "1 polygons with non-numeric coordinates dropped" in text
    assert "2 annotations with no usable polygon skipped" in text  # ids 7 and 11
    assert "1 images without instances (kept)" in text  # image 2 lost its only annotation
    kept = dicts[0]["annotations"]
    assert len(kept) == 5  # ids 1, 4, 5 (zero box), 5 (dup), 8 (clipped polygon)
    assert kept[1]["bbox"] == [0.0, 3.0, 6.0, 4.0]  # clipped to the image
    assert kept[2]["bbox"] == [2.0, 3.0, 4.0, 4.0]  # recomputed from the mask
    clipped = decode_segmentation(kept[4]["segmentation"], H, W)
    assert clipped.any() and kept[4]["area"] == clipped.sum()
    assert len(dicts) == 2 and dicts[1]["annotations"] == []


def test_truncated_and_garbage_images_raise_naming_the_file(tmp_path):
    full = tmp_path / "full.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(full)
    data = full.read_bytes()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not an image")
    for path in (truncated, garbage):
        with pytest.raises(ImageReadError, match=path.name):
            read_image(path)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_image(tmp_path / "nope.png")


def test_grayscale_rgba_and_16bit_images_are_converted(tmp_path):
    gray = np.arange(H * W, dtype=np.uint8).reshape(H, W)
    Image.fromarray(gray).save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], gray) and np.array_equal(out[..., 2], gray)

    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.shape == (H, W, 3) and (out[..., 0] == 200).all() and (out[..., 1] == 0).all()

    deep = np.linspace(1000, 5000, H * W).reshape(H, W).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.png")
    out = read_image(tmp_path / "d.png")
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    assert out.min() == 0 and out.max() == 255  # stretched, not divided by 257 (which gives <20)
    assert np.all(np.diff(out[..., 0].ravel().astype(int)) >= 0)  # order preserved


def test_exif_rotated_jpeg_is_read_upright(tmp_path):
    from sard.data.image_io import image_size

    pixels = np.zeros((10, 20, 3), np.uint8)
    pixels[:, :5] = 255
    img = Image.fromarray(pixels)
    exif = img.getexif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees clockwise
    img.save(tmp_path / "r.jpg", exif=exif)
    out = read_image(tmp_path / "r.jpg")
    assert out.shape == (20, 10, 3) and image_size(tmp_path / "r.jpg") == (20, 10)
    assert out[:5].mean() > 200 and out[-5:].mean() < 50  # the white band is now on top


def test_validator_reports_summary_and_fatal_problems(tmp_path):
    json_file, root = write_dataset(tmp_path)
    report = validate_coco_dataset(json_file, root, progress=False)
    assert report.ok and report.stats["instances"] == 2 and report.stats["images"] == 2
    assert report.class_counts == {"a": 1, "b": 1}
    assert dict(report.size_hist)["4-8 px"] == 1 and dict(report.size_hist)["0-4 px"] == 1
    text = format_report(report)
    assert "result: OK" in text and "objects per image" in text

    Image.fromarray(np.zeros((H, W), np.uint16)).save(os.path.join(root, "1.png"))  # 16-bit
    (tmp_path / "imgs" / "2.png").write_bytes(b"\x89PNG broken")
    report = validate_coco_dataset(json_file, root, progress=False)
    assert not report.ok
    assert any("2.png" in m and "unreadable" in m for m in report.fatal)
    assert any("16-bit images converted" in w for w in report.warnings)


def test_validator_cli_exit_status(tmp_path, capsys, load_script):
    cli = load_script("tools/validate_dataset.py")
    json_file, root = write_dataset(tmp_path)
    assert cli.main([json_file, "--image-root", root]) == 0
    assert "2 images, 2 instances" in capsys.readouterr().out
    os.remove(os.path.join(root, "1.png"))
    assert cli.main([json_file, "--image-root", root]) == 1
    assert "missing image file" in capsys.readouterr().out
    from sard.user_errors import run_tool

    assert run_tool(cli.main, ["no_such_dataset_name"]) == 2
    assert "no_such_dataset_name" in capsys.readouterr().err


def test_decode_instances_handles_more_than_255_instances():
    """Real microscopy images hold over 255 nuclei; pycocotools' area() fails on such lists."""
    rng = np.random.default_rng(0)
    masks = rng.random((300, 12, 10)) < 0.3
    masks[7] = False  # an empty mask keeps area 0 and a degenerate box
    segs = [encode_mask(m) for m in masks]
    got, boxes, areas = decode_instances(segs, 12, 10)
    np.testing.assert_array_equal(np.asarray(got), masks)
    np.testing.assert_array_equal(areas, masks.sum(axis=(1, 2)))
    assert areas.dtype == np.int64 and boxes.shape == (300, 4)
    rows, cols = np.nonzero(masks[0])
    assert boxes[0].tolist() == [cols.min(), rows.min(), cols.max(), rows.max()]

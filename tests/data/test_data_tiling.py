"""Tiling a COCO split at native resolution (sard.data.tiling)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from sard.data.converters import mask_annotation, write_coco_split
from sard.data.masks import decode_segmentation
from sard.data.tiling import tile_coco_split, tile_starts


def test_tile_starts_cover_the_side_without_padding():
    assert tile_starts(64, 32) == [0, 32]
    assert tile_starts(70, 32) == [0, 32, 38]  # last window flush with the edge
    assert tile_starts(20, 32) == [0]  # a short side stays whole
    with pytest.raises(ValueError):
        tile_starts(10, 0)


def _write_source(tmp_path):
    """A 20 x 30 RGB image whose pixel values encode their position, and three instances."""
    height, width = 20, 30
    yy, xx = np.mgrid[0:height, 0:width]
    pixels = np.stack([yy * 10, xx * 8, np.full_like(yy, 7)], axis=-1).astype(np.uint8)
    os.makedirs(tmp_path / "src" / "train")
    Image.fromarray(pixels).save(tmp_path / "src" / "train" / "a.png")
    masks = np.zeros((3, height, width), bool)
    masks[0, 2:18, 10:20] = True  # crosses every tile border
    masks[1, 0:3, 0:3] = True  # inside the first tile only
    masks[2, 15:20, 15:16] = True  # 5 px; its pieces in the top tiles have 1 px
    anns = [mask_annotation(m, i + 1, 1, 1 + (i == 1)) for i, m in enumerate(masks)]
    images = [{"id": 1, "file_name": "a.png", "height": height, "width": width}]
    cats = [{"id": 1, "name": "grain"}, {"id": 2, "name": "pebble"}]
    write_coco_split(str(tmp_path / "src"), "train", images, anns, cats, "test")
    return pixels, masks


def test_tiles_keep_pixels_and_clip_instances(tmp_path):
    pixels, masks = _write_source(tmp_path)
    out = tmp_path / "tiles"
    tile_coco_split(
        str(tmp_path / "src" / "train.json"),
        str(tmp_path / "src" / "train"),
        str(out),
        "train",
        16,
        min_area=2,
        progress=False,
    )
    coco = json.load(open(out / "train.json"))
    offsets = [(im["tile_of"]["top"], im["tile_of"]["left"]) for im in coco["images"]]
    assert offsets == [(0, 0), (0, 14), (4, 0), (4, 14)]
    assert [c["name"] for c in coco["categories"]] == ["grain", "pebble"]
    by_image = {im["id"]: [] for im in coco["images"]}
    for ann in coco["annotations"]:
        by_image[ann["image_id"]].append(ann)
    for im, (top, left) in zip(coco["images"], offsets):
        tile = np.asarray(Image.open(out / "train" / im["file_name"]))
        np.testing.assert_array_equal(tile, pixels[top : top + 16, left : left + 16])
        expected = [
            (c, m[top : top + 16, left : left + 16])
            for c, m in zip((1, 2, 1), masks)
            if m[top : top + 16, left : left + 16].sum() >= 2
        ]
        got = by_image[im["id"]]
        assert len(got) == len(expected)
        for ann, (category, piece) in zip(got, expected):
            assert ann["category_id"] == category
            assert ann["area"] == piece.sum()
            np.testing.assert_array_equal(decode_segmentation(ann["segmentation"], 16, 16), piece)
    # The 5 px column (rows 15-19) leaves 1 px pieces in the top tiles (row 15): dropped.
    assert sum(a["area"] == 1 for a in coco["annotations"]) == 0
    assert coco["info"]["statistics"]


def test_prepare_tiles_command(tmp_path, capsys, load_script):
    """datasets/prepare_tiles.py as datasets/README.md runs it (train/test splits)."""
    _write_source(tmp_path)
    os.replace(tmp_path / "src" / "train.json", tmp_path / "src" / "test.json")
    os.rename(tmp_path / "src" / "train", tmp_path / "src" / "test")
    _write_source(tmp_path / "again")
    os.replace(tmp_path / "again" / "src" / "train.json", tmp_path / "src" / "train.json")
    os.rename(tmp_path / "again" / "src" / "train", tmp_path / "src" / "train")
    module = load_script("datasets/prepare_tiles.py")
    args = ["--src", str(tmp_path / "src"), "--out", str(tmp_path / "tiles"), "--tile", "16"]
    assert module.main([*args, "--splits", "train", "test"]) == 0
    for split in ("train", "test"):
        coco = json.load(open(tmp_path / "tiles" / f"{split}.json"))
        assert len(coco["images"]) == 4 and len(os.listdir(tmp_path / "tiles" / split)) == 4
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        module.main([*args, "--splits", "val"])  # no val.json
    with pytest.raises(SystemExit):
        module.main([*args[:-1], "0"])

"""TiledMaskGenerator on a mosaic whose truth is known: an oracle segmenter that sees only the
tile's pixels returns every visible piece of every object (cut ones included, as a model would);
the tiled result must hold each object exactly once, whole."""

from __future__ import annotations

import logging

import numpy as np
import pycocotools.mask as mask_util
import pytest

from sard.export.tiled import TiledMaskGenerator, record_mask, tile_boxes, tile_cores, tile_starts

H, W = 230, 310
MAX_EXTENT = 28  # px across, the largest object of the mosaic


def mosaic(seed: int = 0, count: int = 120):
    """(H, W, 3) image of non-touching discs and rectangles, each with its own colour on a black
    background, and their (K, H, W) masks. Some objects sit on the image border."""
    rng = np.random.default_rng(seed)
    image = np.zeros((H, W, 3), np.uint8)
    taken = np.zeros((H, W), bool)
    masks = []
    yy, xx = np.mgrid[:H, :W]
    for _ in range(count * 4):
        size = int(rng.integers(3, MAX_EXTENT + 1))
        y0, x0 = int(rng.integers(-size // 2, H - size // 2)), int(
            rng.integers(-size // 2, W - size // 2)
        )
        if rng.random() < 0.5:
            r = size / 2
            mask = (yy - (y0 + r)) ** 2 + (xx - (x0 + r)) ** 2 <= r * r
        else:
            mask = (
                (yy >= y0)
                & (yy < y0 + size)
                & (xx >= x0)
                & (xx < x0 + int(rng.integers(2, size + 1)))
            )
        grown = mask.copy()
        grown[1:] |= mask[:-1]
        grown[:-1] |= mask[1:]
        grown[:, 1:] |= grown[:, :-1]
        grown[:, :-1] |= grown[:, 1:]
        if mask.sum() < 3 or (grown & taken).any():
            continue
        k = len(masks) + 1
        image[mask] = (k % 256, k // 256, 200)
        taken |= mask
        masks.append(mask)
        if len(masks) == count:
            break
    return image, np.stack(masks)


class ColourOracle:
    """Segments any image of the mosaic by colour: one record per colour visible in it (the
    visible part of the object), in SAM's record format."""

    def __init__(self, shrink_odd_calls: bool = False) -> None:
        self.calls = 0
        self.shrink_odd_calls = shrink_odd_calls

    def generate(self, image: np.ndarray):
        self.calls += 1
        h, w = image.shape[:2]
        codes = image[..., 0].astype(np.int64) + 256 * image[..., 1].astype(np.int64)
        records = []
        for code in np.unique(codes[image[..., 2] == 200]):
            mask = (codes == code) & (image[..., 2] == 200)
            if self.shrink_odd_calls and self.calls % 2:
                # An imperfect model: in every other tile, masks lose their top row.
                rows = np.flatnonzero(mask.any(axis=1))
                if rows.size > 1:
                    mask[rows[0]] = False
            ys, xs = np.nonzero(mask)
            records.append(
                {
                    "segmentation": mask,
                    "area": int(mask.sum()),
                    "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs)), int(np.ptp(ys))],
                    "predicted_iou": 0.5 + (int(code) % 7) / 20,
                    "point_coords": [[float(xs.mean()), float(ys.mean())]],
                    "stability_score": 1.0,
                    "crop_box": [0, 0, w, h],
                }
            )
        return records


def as_key(mask: np.ndarray) -> bytes:
    return mask_util.encode(np.asfortranarray(mask))["counts"]


@pytest.fixture(scope="module")
def scene():
    image, truth = mosaic()
    assert len(truth) > 80
    return image, truth


def test_tile_starts_cover_and_overlap():
    for length, tile, overlap in [(310, 96, 40), (230, 64, 36), (100, 100, 10), (101, 100, 0)]:
        starts = tile_starts(length, tile, overlap)
        assert starts[0] == 0 and starts[-1] == max(length - tile, 0)
        shared = [a + tile - b for a, b in zip(starts, starts[1:])]
        assert all(s >= overlap for s in shared), (starts, shared)
    assert tile_starts(50, 96, 40) == [0]
    with pytest.raises(ValueError, match="overlap"):
        tile_starts(300, 64, 64)


def test_cores_partition_the_image():
    boxes = tile_boxes((H, W), 96, 40)
    cores = tile_cores((H, W), boxes)
    yy, xx = np.mgrid[:H, :W] + 0.5
    hits = np.zeros((H, W), int)
    for (x0, y0, x1, y1), box in zip(cores, boxes):
        inside = (xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)
        assert inside.sum() > 0
        # A core lies inside its window, away from inner sides by half the overlap.
        assert box[0] <= x0 and x1 <= box[2] and box[1] <= y0 and y1 <= box[3]
        hits += inside
    assert (hits == 1).all()


@pytest.mark.parametrize("tile,overlap", [(96, 40), (64, 36), (128, 50), (100, 33)])
def test_each_object_once_and_whole(scene, tile, overlap):
    image, truth = scene
    oracle = ColourOracle()
    tiler = TiledMaskGenerator(oracle, tile=tile, overlap=overlap, edge_margin=2)
    assert tiler.max_whole_extent >= MAX_EXTENT
    records = tiler.generate(image)
    got = sorted(as_key(record_mask(r["segmentation"])) for r in records)
    assert got == sorted(as_key(m) for m in truth)
    stats = tiler.last_stats
    assert stats.windows == oracle.calls > 4
    # The test has teeth: objects were cut by tile sides, and others found whole twice.
    assert stats.cut > 0 and stats.merged > 0 and stats.lost == stats.unmatched == 0
    assert stats.kept == len(truth)


def test_imperfect_copies_are_merged(scene):
    """Copies of one object that differ between tiles are still counted once."""
    image, truth = scene
    tiler = TiledMaskGenerator(ColourOracle(shrink_odd_calls=True), tile=96, overlap=40)
    records = tiler.generate(image)
    assert len(records) == len(truth)
    masks = np.stack([record_mask(r["segmentation"]) for r in records])
    inter = np.einsum("ihw,jhw->ij", masks.astype(np.int64), truth.astype(np.int64))
    iou = inter / (masks.sum((1, 2))[:, None] + truth.sum((1, 2))[None] - inter)
    assert (iou.max(axis=1) >= 0.5).all() and (iou.max(axis=0) >= 0.5).all()
    assert tiler.last_stats.merged > 0


def test_too_small_overlap_loses_large_objects_loudly_but_never_doubles(scene, caplog):
    image, truth = scene
    tiler = TiledMaskGenerator(ColourOracle(), tile=64, overlap=12, edge_margin=2)
    with caplog.at_level(logging.WARNING, logger="sard.export.tiled"):
        records = tiler.generate(image)
    got = {as_key(record_mask(r["segmentation"])) for r in records}
    assert len(got) == len(records) < len(truth)
    assert got <= {as_key(m) for m in truth}  # every kept mask is a whole object
    stats = tiler.last_stats
    assert stats.lost == len(truth) - len(records)
    assert stats.lost_max_extent > tiler.max_whole_extent
    assert "raise it above" in caplog.text


def test_one_window_returns_the_generators_records(scene):
    image, _ = scene
    direct = ColourOracle().generate(image)
    tiled = TiledMaskGenerator(ColourOracle(), tile=400, overlap=50, output_mode="binary_mask")
    records = tiled.generate(image)
    assert len(records) == len(direct)
    for a, b in zip(records, direct):
        assert np.array_equal(a["segmentation"], b["segmentation"])
        assert {k: v for k, v in a.items() if k != "segmentation"} == {
            k: v for k, v in b.items() if k != "segmentation"
        }


def test_output_modes_and_image_coordinates(scene):
    image, _ = scene
    outs = {
        mode: TiledMaskGenerator(ColourOracle(), tile=96, overlap=40, output_mode=mode).generate(
            image
        )
        for mode in ("binary_mask", "uncompressed_rle", "coco_rle")
    }
    assert len({len(v) for v in outs.values()}) == 1
    for a, b, c in zip(*outs.values()):
        mask = a["segmentation"]
        assert mask.shape == (H, W)
        assert np.array_equal(record_mask(b["segmentation"]), mask)
        assert np.array_equal(record_mask(c["segmentation"]), mask)
        assert isinstance(c["segmentation"]["counts"], str)
        ys, xs = np.nonzero(mask)
        assert a["bbox"] == [xs.min(), ys.min(), np.ptp(xs), np.ptp(ys)]
        x, y = a["point_coords"][0]
        assert abs(x - xs.mean()) < 1e-6 and abs(y - ys.mean()) < 1e-6
        assert a["area"] == mask.sum()


def test_bad_settings_give_clear_errors():
    with pytest.raises(ValueError, match="overlap < tile"):
        TiledMaskGenerator(ColourOracle(), tile=64, overlap=64)
    with pytest.raises(ValueError, match="raise|above 4"):
        TiledMaskGenerator(ColourOracle(), tile=64, overlap=3, edge_margin=2)
    with pytest.raises(ValueError, match="edge_margin must be >= 1"):
        TiledMaskGenerator(ColourOracle(), tile=64, overlap=16, edge_margin=0)

    class Wrong:
        def generate(self, image):
            return [{"segmentation": np.zeros((5, 5), bool)}]

    with pytest.raises(ValueError, match="masks of the image it is given"):
        TiledMaskGenerator(Wrong(), tile=64, overlap=16).generate(np.zeros((80, 80, 3), np.uint8))

"""The synthetic RockFrag generator: deterministic, dense, tiny, and honest about its numbers."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image

from sard.data import SynthConfig, load_coco_instances, render_image
from sard.data.masks import decode_segmentation
from sard.data.stats import TINY_SIDE_PX
from sard.data.synthetic_dataset import generate_rockfrag_synth

SIZE = 96


def file_digests(folder) -> dict:
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "a"
    stats = generate_rockfrag_synth(
        str(out),
        num_images={"train": 2, "val": 1},
        config=SynthConfig(image_size=SIZE),
        seed=3,
        progress=False,
    )
    return out, stats


def test_generator_is_deterministic(small_set, tmp_path):
    out, stats = small_set
    again = generate_rockfrag_synth(
        str(tmp_path / "b"),
        num_images={"train": 2, "val": 1},
        config=SynthConfig(image_size=SIZE),
        seed=3,
        progress=False,
    )
    assert again == stats
    assert file_digests(out) == file_digests(tmp_path / "b")
    generate_rockfrag_synth(
        str(tmp_path / "c"),
        num_images={"train": 1},
        config=SynthConfig(image_size=SIZE),
        seed=4,
        progress=False,
        preview=False,
    )
    assert file_digests(tmp_path / "c")["train/000000.png"] != file_digests(out)["train/000000.png"]


def test_an_image_does_not_depend_on_the_other_split_sizes(small_set):
    out, _ = small_set
    pixels, _ = render_image(np.random.default_rng([3, 0, 1]), SynthConfig(image_size=SIZE))
    assert np.array_equal(pixels, np.asarray(Image.open(out / "train" / "000001.png")))


def test_reported_numbers_are_true_and_say_dense_and_tiny(small_set):
    out, stats = small_set
    coco = json.loads((out / "train.json").read_text())
    assert coco["info"]["statistics"] == stats["train"]
    dicts = load_coco_instances(str(out / "train.json"), str(out / "train"))
    areas = [a["area"] for d in dicts for a in d["annotations"]]
    counts = [len(d["annotations"]) for d in dicts]
    s = stats["train"]
    assert s["instances"] == len(areas) and s["instances_per_image_mean"] == np.mean(counts)
    assert s["median_area_px"] == np.median(areas)
    assert s["tiny_fraction"] == pytest.approx(np.mean(np.sqrt(areas) < TINY_SIDE_PX))
    # dense: dozens of fragments in a 96 px image covering most of it; tiny: median object
    # under 0.5% of the image and most objects under 16 px a side
    assert s["instances_per_image_min"] >= 30
    assert s["coverage"] > 0.5
    assert s["median_area_fraction"] < 0.005
    assert s["tiny_fraction"] > 0.5


def test_masks_are_disjoint_and_boxes_tight(small_set):
    out, _ = small_set
    d = load_coco_instances(str(out / "val.json"), str(out / "val"))[0]
    cover = np.zeros((SIZE, SIZE), np.int32)
    for ann in d["annotations"]:
        mask = decode_segmentation(ann["segmentation"], SIZE, SIZE)
        cover += mask
        ys, xs = np.nonzero(mask)
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert ann["area"] == mask.sum() >= SynthConfig().min_area
    assert cover.max() == 1


def test_density_and_size_options_move_the_numbers():
    def numbers(cfg):
        _, inst = render_image(np.random.default_rng(0), cfg)
        areas = np.bincount(inst.ravel())[1:]
        return len(areas), (inst > 0).mean()

    count, coverage = numbers(SynthConfig(image_size=SIZE))
    sparse_count, sparse_coverage = numbers(SynthConfig(image_size=SIZE, density=0.5))
    fine_count, _ = numbers(SynthConfig(image_size=SIZE, min_size=3, max_size=6))
    assert sparse_coverage < coverage - 0.15
    assert fine_count > 2 * count
    with pytest.raises(ValueError, match="min_size <= max_size"):
        SynthConfig(min_size=10, max_size=5).validate()
    with pytest.raises(ValueError, match="density"):
        SynthConfig(density=0).validate()


def test_preview_and_cli(small_set, tmp_path, capsys, load_script):
    out, _ = small_set
    preview = np.asarray(Image.open(out / "preview.png"))
    assert preview.shape == (2 * SIZE, 2 * SIZE, 3)  # 2 train images above their overlays
    cli = load_script("datasets/prepare_rockfrag_synth.py")
    args = [
        "--out",
        str(tmp_path / "cli"),
        "--num-train",
        "1",
        "--num-val",
        "0",
        "--num-test",
        "1",
        "--image-size",
        "64",
        "--seed",
        "1",
        "--no-preview",
    ]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "train: 1 images" in printed and "test: 1 images" in printed
    assert sorted(os.listdir(tmp_path / "cli")) == ["test", "test.json", "train", "train.json"]
    from sard.user_errors import run_tool

    assert run_tool(cli.main, args + ["--min-size", "0.5"]) == 2
    assert "min_size" in capsys.readouterr().err

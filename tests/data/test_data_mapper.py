"""PromptDatasetMapper: geometry, augmentation consistency, prompts, determinism, bad input."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from sard.data import DatasetError, PromptDatasetMapper
from sard.data import mapper as mapper_module
from sard.data.masks import decode_segmentation, encode_mask
from sard.data.prompts import (
    LABEL_BOX_BR,
    LABEL_BOX_TL,
    LABEL_NEG,
    LABEL_PAD,
    LABEL_POS,
    eval_rng,
)
from testkit import paint_rectangles

H, W = 60, 90
# (y0, x0, h, w) of the instances; instance k is painted red 255, green 20 * (k + 1)
RECTS = [
    (2, 3, 10, 14),
    (20, 40, 6, 6),
    (40, 70, 15, 12),
    (30, 5, 3, 4),
    (50, 30, 8, 20),
    (10, 60, 9, 9),
    (45, 55, 2, 2),
    (5, 25, 12, 6),
]


def make_dict(tmp_path, rects=RECTS, size=(H, W), image_id="img_7"):
    h, w = size
    image = np.zeros((h, w, 3), np.uint8)
    anns = paint_rectangles(image, rects, lambda k: (255, 20 * (k + 1), 0))
    path = tmp_path / f"{image_id}.png"
    Image.fromarray(image).save(path)
    return {
        "file_name": str(path),
        "height": h,
        "width": w,
        "image_id": image_id,
        "annotations": anns,
    }


def check_sample(out, box_jitter):
    """Every invariant a sample must satisfy, whatever the augmentation."""
    image, masks = out["image"], out["gt_masks"]
    vh, vw = out["input_hw"]
    assert image.abs()[:, vh:, :].sum() == 0 and image.abs()[:, :, vw:].sum() == 0
    assert not masks[:, vh:, :].any() and not masks[:, :, vw:].any()
    for q in range(masks.shape[0]):
        ys, xs = torch.nonzero(masks[q], as_tuple=True)
        assert len(ys) > 0
        x0, y0, x1, y1 = out["boxes"][q].tolist()
        assert x0 <= xs.min() and y0 <= ys.min() and x1 >= xs.max() and y1 >= ys.max()
        if box_jitter == 0:
            assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max(), ys.max())
        labels, points = out["point_labels"][q], out["points"][q].long()
        assert labels[0] == LABEL_BOX_TL and labels[1] == LABEL_BOX_BR
        assert torch.equal(out["points"][q, :2].reshape(4), out["boxes"][q])
        for label, (px, py) in zip(labels[2:].tolist(), points[2:].tolist()):
            assert label in (LABEL_POS, LABEL_NEG, LABEL_PAD)
            if label == LABEL_POS:
                assert masks[q, py, px]
            elif label == LABEL_NEG:
                assert not masks[q, py, px] and px < vw and py < vh
        # the image moved with the mask: interior pixels carry one instance's colour
        padded = torch.nn.functional.pad(masks[q][None, None].float(), (1, 1, 1, 1))
        inner = -torch.nn.functional.max_pool2d(-padded, 3, stride=1)[0, 0] > 0.5  # eroded
        if inner.any():
            red, green = image[0][inner], image[1][inner]
            assert red.min() > 200
            assert green.max() - green.min() < 12  # one instance, not a mix


def eval_mapper(image_size=32, resize_mode="stretch", **kwargs) -> PromptDatasetMapper:
    """The evaluation mapper most tests here use; keyword arguments as PromptDatasetMapper's."""
    return PromptDatasetMapper(
        is_train=kwargs.pop("is_train", False),
        image_size=image_size,
        resize_mode=resize_mode,
        **kwargs,
    )


@pytest.mark.parametrize("resize_mode", ["longest_pad", "stretch"])
@pytest.mark.parametrize("box_jitter", [0.0, 0.3])
def test_box_encloses_mask_after_every_augmentation(tmp_path, resize_mode, box_jitter):
    d = make_dict(tmp_path)
    mapper = PromptDatasetMapper(
        is_train=True,
        image_size=48,
        resize_mode=resize_mode,
        prompt_type="box+point",
        num_points=2,
        num_neg_points=1,
        box_jitter=box_jitter,
        hflip=True,
        vflip=True,
        scale_jitter=(0.6, 1.8),
    )
    seen_images = set()
    for seed in range(10):
        torch.manual_seed(seed)
        out = mapper(d)
        assert out["points"].shape[1:] == (5, 2) and out["gt_masks"].shape[1:] == (48, 48)
        check_sample(out, box_jitter)
        seen_images.add(out["image"].numpy().tobytes())
    assert len(seen_images) >= 8  # the augmentation really varies


def test_longest_pad_and_stretch_geometry(tmp_path):
    d = make_dict(tmp_path)
    pad = eval_mapper(64, "longest_pad")(d)
    assert pad["input_hw"] == (43, 64)  # 60 * 64 / 90 = 42.7, rounded like SAM
    assert pad["image"][:, 43:].abs().sum() == 0 and pad["image"][:, :43].sum() > 0
    stretch = eval_mapper(64)(d)
    assert stretch["input_hw"] == (64, 64)
    # first instance spans x in [3, 16], y in [2, 11] of 90 x 60: boxes scale per axis
    assert torch.allclose(pad["boxes"][0], torch.tensor([2.0, 1.0, 11.0, 8.0]), atol=1.0)
    assert torch.allclose(stretch["boxes"][0], torch.tensor([2.0, 2.0, 11.0, 12.0]), atol=1.0)
    assert (pad["height"], pad["width"]) == (H, W) and pad["image"].dtype == torch.float32
    assert pad["image"].max() == 255


def test_eval_keeps_all_instances_in_order_with_original_masks(tmp_path):
    d = make_dict(tmp_path)
    out = eval_mapper(64, "longest_pad")(d)
    assert out["gt_masks"].shape[0] == len(RECTS) == out["gt_masks_orig"].shape[0]
    for q, ann in enumerate(d["annotations"]):
        expected = decode_segmentation(ann["segmentation"], H, W)
        assert np.array_equal(out["gt_masks_orig"][q].numpy(), expected)
    capped = eval_mapper(64, "longest_pad", max_prompts=3)(d)
    assert capped["gt_masks_orig"].shape[0] == 3
    index = [
        next(
            i
            for i, a in enumerate(d["annotations"])
            if np.array_equal(decode_segmentation(a["segmentation"], H, W), m.numpy())
        )
        for m in capped["gt_masks_orig"]
    ]
    assert index == sorted(index)  # the subset keeps the dataset order


def test_eval_prompts_are_identical_across_runs(tmp_path):
    d = make_dict(tmp_path)
    kwargs = dict(
        image_size=64,
        resize_mode="longest_pad",
        prompt_type="box+point",
        num_points=3,
        num_neg_points=2,
        max_prompts=5,
    )
    torch.manual_seed(0)
    first = eval_mapper(**kwargs)(d)
    torch.manual_seed(123)
    np.random.seed(5)
    second = eval_mapper(**kwargs)(d)
    for key in ("boxes", "points", "point_labels", "gt_masks_orig"):
        assert torch.equal(first[key], second[key]), key
    other_seed = eval_mapper(**kwargs, eval_seed=1)(d)
    assert not torch.equal(first["points"], other_seed["points"])
    # the seed comes from crc32(repr(image_id)), not Python's randomised hash(): the same
    # numbers in every process
    assert eval_rng("img_7", 0).integers(0, 1000, 4).tolist() == [290, 25, 727, 88]
    assert eval_rng(7, 0).integers(0, 1000, 4).tolist() == [729, 306, 31, 44]
    # the first positive point at evaluation is the most interior pixel (its centre here)
    every = eval_mapper(**{**kwargs, "max_prompts": None})(d)
    for k in (0, 2, 4):  # rectangles 10 x 14, 15 x 12, 8 x 20
        ys, xs = np.nonzero(every["gt_masks"][k].numpy())
        px, py = every["points"][k, 2].tolist()
        assert abs(px - xs.mean()) <= 0.5 and abs(py - ys.mean()) <= 0.5


def test_training_caps_and_randomises_the_prompted_instances(tmp_path):
    d = make_dict(tmp_path)
    mapper = PromptDatasetMapper(
        is_train=True, image_size=64, resize_mode="longest_pad", max_prompts=3, hflip=False
    )
    subsets = set()
    for seed in range(6):
        torch.manual_seed(seed)
        out = mapper(d)
        assert out["gt_masks"].shape[0] == 3 and "gt_masks_orig" not in out
        subsets.add(tuple(sorted(out["boxes"][:, 0].tolist())))
    assert len(subsets) > 1


def test_tiny_object_that_vanishes_in_the_input_frame_is_still_prompted(tmp_path):
    d = make_dict(tmp_path, rects=[(57, 101, 1, 1), (10, 10, 40, 40)], size=(200, 200))
    out = eval_mapper(32, "longest_pad", prompt_type="box+point")(d)
    assert out["gt_masks_orig"][0].sum() == 1 and out["gt_masks"][0].sum() == 0
    x0, y0, x1, y1 = out["boxes"][0].tolist()
    assert (x0, y0) == (x1, y1)  # a degenerate box at the object's place
    assert abs(x0 - (101.5 * 32 / 200 - 0.5)) < 1e-4 and abs(y0 - (57.5 * 32 / 200 - 0.5)) < 1e-4
    assert out["point_labels"][0].tolist() == [LABEL_BOX_TL, LABEL_BOX_BR, LABEL_POS]


def test_empty_masks_are_dropped_with_a_counted_warning(tmp_path, caplog):
    d = make_dict(tmp_path)
    d["annotations"].append(
        {**d["annotations"][0], "segmentation": encode_mask(np.zeros((H, W), bool))}
    )
    mapper_module.EMPTY_MASKS_DROPPED.count = 0
    with caplog.at_level(logging.WARNING, logger="sard.data"):
        out = eval_mapper()(d)
    assert out["gt_masks_orig"].shape[0] == len(RECTS)
    assert "dropped 1 instances with an empty mask so far" in caplog.text
    assert d["file_name"] in caplog.text


def test_image_without_instances_gives_empty_prompt_tensors(tmp_path):
    d = make_dict(tmp_path)
    d["annotations"] = []
    for is_train in (True, False):
        out = eval_mapper(is_train=is_train, prompt_type="point", num_points=2)(d)
        assert out["gt_masks"].shape == (0, 32, 32) and out["points"].shape == (0, 2, 2)


def test_bad_input_is_reported(tmp_path):
    d = make_dict(tmp_path)
    with pytest.raises(DatasetError, match="img_7.png: image is 90x60 but the dataset says"):
        eval_mapper()({**d, "height": 61})
    with pytest.raises(FileNotFoundError, match="gone.png"):
        eval_mapper()({**d, "file_name": str(tmp_path / "gone.png")})
    with pytest.raises(ValueError, match="resize_mode"):
        PromptDatasetMapper(is_train=True, image_size=32, resize_mode="crop")
    with pytest.raises(ValueError, match="prompt_type"):
        PromptDatasetMapper(is_train=True, image_size=32, resize_mode="stretch", prompt_type="x")
    with pytest.raises(ValueError, match="scale_jitter"):
        PromptDatasetMapper(
            is_train=True, image_size=32, resize_mode="stretch", scale_jitter=(1.5, 1.0)
        )

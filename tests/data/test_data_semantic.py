"""Semantic datasets (Cityscapes, ADE20K layouts), the RockFrag semantic view, the mapper."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from sard.data import (
    ADE20K_CLASSES,
    CITYSCAPES_CLASSES,
    DatasetCatalog,
    DatasetError,
    MetadataCatalog,
    SemanticDatasetMapper,
    instances_to_semantic,
    load_ade20k_semantic,
    load_cityscapes_semantic,
    register_rockfrag_semantic,
)
from sard.data.masks import encode_mask
from sard.data.semantic import ade20k_to_train_ids, cityscapes_ids_to_train_ids


def rect_ann(h, w, y0, x0, rh, rw, category=0):
    mask = np.zeros((h, w), bool)
    mask[y0 : y0 + rh, x0 : x0 + rw] = True
    return {"segmentation": encode_mask(mask), "category_id": category, "iscrowd": 0}


def test_instances_to_semantic_marks_contacts_and_outlines_as_boundary():
    anns = [
        rect_ann(10, 12, 1, 1, 5, 4),
        rect_ann(10, 12, 1, 5, 5, 4),
        rect_ann(10, 12, 7, 9, 3, 3, 1),
    ]
    plain = instances_to_semantic(anns, 10, 12, boundary_width=0, num_thing_classes=2)
    assert plain[0, 0] == 0 and plain[3, 3] == 1 and plain[8, 10] == 2
    labels = instances_to_semantic(anns, 10, 12, boundary_width=1, num_thing_classes=2)
    boundary = 3
    assert labels[3, 4] == boundary and labels[3, 5] == boundary  # the contact between 1 and 2
    assert labels[1, 2] == boundary  # outline against the background
    assert labels[3, 2] == 1 and labels[3, 7] == 1  # interiors stay "thing"
    assert labels[9, 11] == boundary  # objects at the image border are outlined too
    assert labels[0, 0] == 0 and (labels[plain == 0] == 0).all()  # background untouched


def _rockfrag_json(tmp_path, h=30, w=40):
    (tmp_path / "imgs").mkdir()
    image = np.zeros((h, w, 3), np.uint8)
    image[5:15, 5:20] = (200, 10, 10)
    Image.fromarray(image).save(tmp_path / "imgs" / "a.png")
    ann = rect_ann(h, w, 5, 5, 10, 15)
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "height": h, "width": w}],
        "annotations": [{**ann, "id": 1, "image_id": 1, "category_id": 4, "bbox": [5, 5, 15, 10]}],
        "categories": [{"id": 4, "name": "fragment"}],
    }
    (tmp_path / "a.json").write_text(json.dumps(coco))
    return str(tmp_path / "a.json"), str(tmp_path / "imgs")


def test_rockfrag_semantic_view_and_mapper(tmp_path):
    json_file, image_root = _rockfrag_json(tmp_path)
    name = "test_rockfrag_semantic_view"
    try:
        register_rockfrag_semantic(name, json_file, image_root, boundary_width=1)
        (d,) = DatasetCatalog.get(name)
        meta = MetadataCatalog.get(name)
        assert meta.stuff_classes == ["background", "fragment", "boundary"]
        assert meta.evaluator_type == "sem_seg" and meta.ignore_label == 255
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    out = SemanticDatasetMapper(is_train=False, image_size=(24, 24))(d)
    orig = out["sem_seg_orig"].numpy()
    assert orig[10, 10] == 1 and orig[5, 10] == 2 and orig[0, 0] == 0 and orig[14, 19] == 2
    assert out["input_hw"] == (18, 24)  # 30 x 40 fitted into 24 x 24
    sem = out["sem_seg"]
    assert sem.dtype == torch.int64 and (sem[18:] == 255).all() and (sem[:18] != 255).all()
    assert sem[7, 9] == 1 and out["image"][0, 7, 9] > 150
    assert set(torch.unique(sem).tolist()) == {0, 1, 2, 255}


def _cityscapes(tmp_path, with_labels=True):
    img_dir = tmp_path / "leftImg8bit" / "train" / "aachen"
    gt_dir = tmp_path / "gtFine" / "train" / "aachen"
    img_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    stem = "aachen_000000_000019"
    image = np.zeros((16, 32, 3), np.uint8)
    image[:, 16:] = 255
    Image.fromarray(image).save(img_dir / f"{stem}_leftImg8bit.png")
    label_ids = np.full((16, 32), 7, np.uint8)  # road
    label_ids[:, 16:] = 26  # car
    label_ids[0, 0] = 0  # unlabeled
    if with_labels:
        train_ids = cityscapes_ids_to_train_ids(label_ids)
        Image.fromarray(train_ids).save(gt_dir / f"{stem}_gtFine_labelTrainIds.png")
    return str(tmp_path / "leftImg8bit" / "train"), str(tmp_path / "gtFine" / "train")


def test_cityscapes_layout_loads_and_maps(tmp_path):
    image_dir, gt_dir = _cityscapes(tmp_path)
    (d,) = load_cityscapes_semantic(image_dir, gt_dir)
    assert d["sem_seg_file_name"].endswith("aachen_000000_000019_gtFine_labelTrainIds.png")
    assert (d["height"], d["width"]) == (16, 32) and d["image_id"] == "aachen_000000_000019"
    out = SemanticDatasetMapper(is_train=False, image_size=(8, 16), resize_mode="stretch")(d)
    assert out["sem_seg_orig"][0, 0] == 255 and out["sem_seg_orig"][5, 5] == 0
    assert out["sem_seg"][4, 12] == 13 and out["sem_seg"][4, 3] == 0
    assert CITYSCAPES_CLASSES[13] == "car" and len(CITYSCAPES_CLASSES) == 19


def test_cityscapes_missing_labels_are_fatal(tmp_path):
    image_dir, gt_dir = _cityscapes(tmp_path, with_labels=False)
    with pytest.raises(DatasetError, match="1 label file\\(s\\) missing.*labelTrainIds"):
        load_cityscapes_semantic(image_dir, gt_dir)
    with pytest.raises(FileNotFoundError, match="Cityscapes image directory not found"):
        load_cityscapes_semantic(str(tmp_path / "nope"), gt_dir)


def test_ade20k_layout_and_label_shift(tmp_path):
    assert len(ADE20K_CLASSES) == 150 == len(set(ADE20K_CLASSES))
    official = np.array([[0, 1, 150]], np.uint8)
    assert ade20k_to_train_ids(official).tolist() == [[255, 0, 149]]
    (tmp_path / "images").mkdir()
    (tmp_path / "ann").mkdir()
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(tmp_path / "images" / "ADE_val_1.jpg")
    Image.fromarray(np.full((6, 7), 3, np.uint8)).save(tmp_path / "ann" / "ADE_val_1.png")
    (d,) = load_ade20k_semantic(str(tmp_path / "images"), str(tmp_path / "ann"))
    with pytest.raises(DatasetError, match="ADE_val_1.png: label size"):
        SemanticDatasetMapper(is_train=False, image_size=(6, 8))(d)


def test_training_augmentation_keeps_labels_on_their_pixels(tmp_path):
    h, w = 40, 50
    labels = np.zeros((h, w), np.uint8)
    labels[5:25, 10:30] = 1
    labels[28:38, 30:48] = 2
    image = np.stack([labels * 100, np.zeros_like(labels), np.zeros_like(labels)], axis=-1)
    Image.fromarray(image.astype(np.uint8)).save(tmp_path / "x.png")
    Image.fromarray(labels).save(tmp_path / "x_label.png")
    d = {
        "file_name": str(tmp_path / "x.png"),
        "sem_seg_file_name": str(tmp_path / "x_label.png"),
        "height": h,
        "width": w,
    }
    mapper = SemanticDatasetMapper(
        is_train=True, image_size=(32, 32), scale_jitter=(0.7, 1.6), hflip=True, vflip=True
    )
    outputs = set()
    for seed in range(8):
        torch.manual_seed(seed)
        out = mapper(d)
        sem, red = out["sem_seg"], out["image"][0]
        assert "sem_seg_orig" not in out
        for cls in (1, 2):
            mask = (sem == cls).float()[None, None]
            inner = -torch.nn.functional.max_pool2d(-torch.nn.functional.pad(mask, (1,) * 4), 3, 1)
            inner = inner[0, 0] > 0.5
            if inner.any():
                assert (red[inner] - 100 * cls).abs().max() < 1
        outputs.add(sem.numpy().tobytes())
    assert len(outputs) >= 6

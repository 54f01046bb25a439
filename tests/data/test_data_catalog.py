"""Catalogs, registration of COCO / semantic datasets and the built-in names."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

from sard.data import (
    HAS_DETECTRON2,
    DatasetCatalog,
    MetadataCatalog,
    datasets_root,
    register_builtin_datasets,
    register_rockfrag,
)
from sard.data.catalog import Metadata, _DatasetCatalog, _MetadataCatalog
from sard.data.masks import encode_mask


@pytest.fixture
def fresh_names():
    """claim(names): the names are free for the test (entries already registered, e.g. from
    ./datasets, are set aside) and everything is restored afterwards (the catalogs are global)."""
    claimed, stashed = [], []

    def claim(names):
        for name in names:
            claimed.append(name)
            for catalog in (DatasetCatalog, MetadataCatalog):
                if name in catalog.list():
                    stashed.append((catalog, name, catalog.pop(name)))

    yield claim
    for name in claimed:
        for catalog in (DatasetCatalog, MetadataCatalog):
            if name in catalog.list():
                catalog.remove(name)
    for catalog, name, entry in stashed:
        catalog[name] = entry


def test_fallback_catalog_has_detectron2_semantics():
    catalog = _DatasetCatalog()
    catalog.register("a", lambda: [{"x": 1}])
    assert catalog.get("a") == [{"x": 1}] and catalog.list() == ["a"]
    with pytest.raises(AssertionError, match="already registered"):
        catalog.register("a", lambda: [])
    with pytest.raises(KeyError, match="'b' is not registered.*Available datasets are: a"):
        catalog.get("b")
    with pytest.raises(TypeError):
        catalog.register("c", [1, 2])
    catalog.remove("a")
    assert catalog.list() == []

    metadata = _MetadataCatalog()
    meta = metadata.get("a").set(thing_classes=["rock"], evaluator_type="x")
    assert isinstance(meta, Metadata) and metadata.get("a").thing_classes == ["rock"]
    meta.thing_classes = ["rock"]  # the same value again is fine
    with pytest.raises(AssertionError, match="cannot be set to a different value"):
        meta.thing_classes = ["stone"]
    with pytest.raises(AttributeError, match="'missing' does not exist"):
        _ = meta.missing
    assert meta.get("missing", 3) == 3 and meta.as_dict()["name"] == "a"


def test_catalog_is_detectron2s_when_available():
    if HAS_DETECTRON2:
        from detectron2.data import DatasetCatalog as D2Catalog

        assert DatasetCatalog is D2Catalog
    else:
        assert isinstance(DatasetCatalog, _DatasetCatalog)
        assert importlib.util.find_spec("detectron2") is None


def _tiny_coco(tmp_path, split="train", categories=({"id": 3, "name": "fragment"},)):
    img_dir = tmp_path / split
    img_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(img_dir / "0.png")
    mask = np.zeros((8, 10), bool)
    mask[2:5, 3:7] = True
    coco = {
        "images": [{"id": 5, "file_name": "0.png", "height": 8, "width": 10}],
        "annotations": [
            {
                "id": 1,
                "image_id": 5,
                "category_id": 3,
                "bbox": [3, 2, 4, 3],
                "segmentation": encode_mask(mask),
                "area": 12,
                "iscrowd": 0,
            }
        ],
        "categories": list(categories),
    }
    json_file = tmp_path / f"{split}.json"
    json_file.write_text(json.dumps(coco))
    return str(json_file), str(img_dir)


def test_register_rockfrag_is_lazy_and_sets_metadata(tmp_path, fresh_names):
    json_file, image_root = _tiny_coco(tmp_path)
    fresh_names(["test_rockfrag_tiny"])
    register_rockfrag("test_rockfrag_tiny", json_file, image_root, pixel_size_mm=0.39)
    meta = MetadataCatalog.get("test_rockfrag_tiny")
    assert meta.evaluator_type == "sard_promptable" and meta.json_file == json_file
    assert meta.image_root == image_root and meta.pixel_size_mm == 0.39
    assert meta.get("thing_classes") is None  # nothing read yet
    dicts = DatasetCatalog.get("test_rockfrag_tiny")
    assert meta.thing_classes == ["fragment"]
    assert meta.thing_dataset_id_to_contiguous_id == {3: 0}
    (ann,) = dicts[0]["annotations"]
    assert ann["category_id"] == 0 and ann["bbox"] == [3.0, 2.0, 4.0, 3.0]


def test_register_rockfrag_checks_given_classes(tmp_path, fresh_names):
    json_file, image_root = _tiny_coco(tmp_path)
    fresh_names(["test_rockfrag_wrong_classes"])
    register_rockfrag("test_rockfrag_wrong_classes", json_file, image_root, thing_classes=["grain"])
    with pytest.raises(ValueError, match="differ from the thing_classes"):
        DatasetCatalog.get("test_rockfrag_wrong_classes")


def test_builtin_registration_only_for_existing_files_and_idempotent(tmp_path, fresh_names):
    root = tmp_path / "root"
    synth = root / "rockfrag_synth"
    synth.mkdir(parents=True)
    (synth / "train").mkdir()
    (synth / "train.json").write_text("not even json: registration must not read it")
    (synth / "val.json").write_text("{}")  # no val/ folder -> not registered
    gravel = root / "gravel_fh"
    gravel.mkdir()
    (gravel / "test").mkdir()
    (gravel / "test.json").write_text("{}")
    expected = {
        "rockfrag_synth_train",
        "rockfrag_synth_sem_train",
        "gravel_fh_test",
        "gravel_fh_sem_test",
    }
    fresh_names(expected)
    names = register_builtin_datasets(str(root))
    assert set(names) == expected
    assert register_builtin_datasets(str(root)) == []  # second call: nothing new
    assert MetadataCatalog.get("rockfrag_synth_train").thing_classes == ["fragment"]
    meta = MetadataCatalog.get("gravel_fh_sem_test")
    assert meta.evaluator_type == "sem_seg" and meta.ignore_label == 255
    assert meta.stuff_classes == ["background", "grain", "boundary"]


def test_datasets_root_follows_environment(monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", "/some/where")
    assert datasets_root() == "/some/where"
    monkeypatch.delenv("DETECTRON2_DATASETS")
    assert datasets_root() == "datasets"
    assert datasets_root("x") == "x"


def test_prompt_label_constants_are_the_models_contract():
    """One home for the label values (SAM's convention), and importing it loads no torch."""
    import subprocess
    import sys

    from sard import prompt_labels

    values = (prompt_labels.LABEL_PAD, prompt_labels.LABEL_NEG, prompt_labels.LABEL_POS)
    assert values + (prompt_labels.LABEL_BOX_TL, prompt_labels.LABEL_BOX_BR) == (-1, 0, 1, 2, 3)
    probe = "import sys, sard.prompt_labels; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

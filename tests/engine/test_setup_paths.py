"""Setup shared by both engines: dataset paths, optional detectron2, weights messages,
evaluation without a teacher, reproducible runs."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import warnings

import pytest
import torch

from sard.config import load_config
from sard.data import DatasetError
from sard.data.paths import dataset_folder_name, register_dataset_paths
from testkit import REPO, TINY_SAM


def _copy_split(tiny_synth, tmp_path, split="train"):
    src = os.path.join(tiny_synth, "rockfrag_synth")
    dst = tmp_path / "my_rocks"
    dst.mkdir(exist_ok=True)
    shutil.copy(os.path.join(src, f"{split}.json"), dst / f"{split}.json")
    shutil.copytree(os.path.join(src, split), dst / split)
    return dst


def test_a_json_path_is_a_coco_dataset_with_images_beside_it(tiny_synth, tmp_path):
    from sard.data import DatasetCatalog

    folder = _copy_split(tiny_synth, tmp_path)
    entry = str(folder / "train.json")
    assert register_dataset_paths("DATASETS.TRAIN", [entry], semantic=False) == [entry]
    records = DatasetCatalog.get(entry)
    assert len(records) == 4 and records[0]["file_name"].startswith(str(folder / "train"))
    # Idempotent: registering again keeps the registration.
    register_dataset_paths("DATASETS.TRAIN", [entry], semantic=False)


def test_one_json_serves_a_promptable_then_a_semantic_pair_in_one_process(tiny_synth, tmp_path):
    """The same COCO file as instances (SAM pair), then as semantic maps (Mask2Former pair):
    the second config gets the semantic view, and the first gets its own back."""
    from sard.data import DatasetCatalog, MetadataCatalog

    entry = str(_copy_split(tiny_synth, tmp_path) / "train.json")
    register_dataset_paths("DATASETS.TRAIN", [entry], semantic=False)
    assert MetadataCatalog.get(entry).evaluator_type != "sem_seg"
    assert "annotations" in DatasetCatalog.get(entry)[0]
    register_dataset_paths("DATASETS.TRAIN", [entry], semantic=True)
    assert MetadataCatalog.get(entry).evaluator_type == "sem_seg"
    assert "sem_seg_from_instances" in DatasetCatalog.get(entry)[0]
    register_dataset_paths("DATASETS.TRAIN", [entry], semantic=False)
    assert MetadataCatalog.get(entry).evaluator_type != "sem_seg"


def test_missing_image_folder_names_where_images_are_expected(tiny_synth, tmp_path):
    folder = _copy_split(tiny_synth, tmp_path)
    shutil.rmtree(folder / "train")
    with pytest.raises(FileNotFoundError, match=r"DATASETS\.TRAIN.*my_rocks/train/"):
        register_dataset_paths("DATASETS.TRAIN", [str(folder / "train.json")], semantic=False)


def test_missing_json_and_unknown_names_say_what_was_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"DATASETS\.TEST.*nope\.json"):
        register_dataset_paths("DATASETS.TEST", [str(tmp_path / "nope.json")], semantic=False)
    with pytest.raises(DatasetError, match="neither a registered dataset"):
        register_dataset_paths("DATASETS.TEST", ["no_such_dataset"], semantic=False)


def test_a_folder_of_images_is_an_unlabeled_dataset_needing_pseudo_labels(tiny_synth, tmp_path):
    folder = _copy_split(tiny_synth, tmp_path)
    with pytest.raises(DatasetError, match="folder of images.*unlabeled.*COCO instances file"):
        register_dataset_paths("DATASETS.TRAIN", [str(folder / "train")], semantic=False)


def test_a_broken_json_is_refused_at_start_up_by_the_validator(tiny_synth, tmp_path):
    folder = _copy_split(tiny_synth, tmp_path)
    data = json.load(open(folder / "train.json"))
    data["images"][0]["file_name"] = "missing.png"
    json.dump(data, open(folder / "train.json", "w"))
    with pytest.raises(DatasetError, match="validate_dataset.py"):
        register_dataset_paths("DATASETS.TRAIN", [str(folder / "train.json")], semantic=False)


def test_dataset_folder_names():
    assert dataset_folder_name("rockfrag_synth_val") == "rockfrag_synth_val"
    assert dataset_folder_name("data/my_rocks/val.json") == "my_rocks_val"
    assert dataset_folder_name("/abs/path/my_rocks/train.json") == "my_rocks_train"


def test_a_broken_detectron2_install_behaves_as_absent(tmp_path):
    """detectron2 importable but its data module failing (missing cloudpickle): sard.data and
    the built-in engine still work, and --engine detectron2 says why it cannot run."""
    fake = tmp_path / "fake" / "detectron2"
    (fake / "data").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "config").mkdir()
    (fake / "config" / "__init__.py").write_text("")
    (fake / "data" / "__init__.py").write_text(
        "raise ImportError(\"No module named 'cloudpickle'\")"
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "fake"))
    code = (
        "import sard.data, sard.config as c; "
        "assert not sard.data.HAS_DETECTRON2; print(c.detectron2_import_error())"
    )
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "cloudpickle" in res.stdout and "detectron2.data" in res.stdout
    res = subprocess.run(
        [sys.executable, "tools/train_net.py", "--engine", "detectron2", "--config-file", TINY_SAM],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert res.returncode != 0 and "cloudpickle" in res.stderr


def test_a_member_with_weights_never_announces_a_random_init(tmp_path, caplog, recwarn):
    from sard.models import build_model
    from sard.distill import build_member

    path = tmp_path / "student.pth"
    torch.save(
        build_model("efficient_sam", size="tiny", image_size=64, weights=None).state_dict(), path
    )
    cfg = load_config(
        TINY_SAM, ["INPUT.IMAGE_SIZE", "(64, 64)", "MODEL.STUDENT.WEIGHTS", str(path)]
    )
    # (Studies run in-process quieten "sard.models": ask for its records explicitly.)
    with caplog.at_level(logging.INFO, logger="sard.models.checkpoint"):
        build_member(cfg, cfg.MODEL.STUDENT, "student")
    said = caplog.text + " ".join(str(w.message) for w in recwarn)
    assert "random" not in said and "no weights path" not in said
    assert "loaded" in caplog.text
    # Without weights it is said once, naming the key.
    cfg.MODEL.STUDENT.WEIGHTS = ""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_member(cfg, cfg.MODEL.STUDENT, "student")
    messages = [str(w.message) for w in caught if "random" in str(w.message)]
    assert len(messages) == 1 and "MODEL.STUDENT.WEIGHTS" in messages[0]


def test_evaluation_builds_no_teacher(tiny_synth, tmp_path, monkeypatch):
    import sard.distill.build as build_module
    from sard.engine import Trainer
    from sard.engine.trainer import evaluate_weights

    opts = ["OUTPUT_DIR", str(tmp_path), "INPUT.IMAGE_SIZE", "(64, 64)"]
    opts += ["DATASETS.TRAIN", "('test_synth_train',)", "DATASETS.TEST", "('test_synth_val',)"]
    trainer = Trainer(load_config(TINY_SAM, opts))
    trainer.train()
    built = []
    real = build_module.build_member
    monkeypatch.setattr(
        build_module,
        "build_member",
        lambda cfg, node, role: built.append(role) or real(cfg, node, role),
    )
    # The teacher's weights need not exist for evaluation.
    cfg = load_config(
        TINY_SAM,
        opts
        + ["MODEL.WEIGHTS", str(tmp_path / "model_final.pth"), "MODEL.TEACHER.WEIGHTS", "nope.pth"],
    )
    results = evaluate_weights(cfg)
    assert built == ["student"]
    trainer.model.eval()
    again = trainer.test()
    assert results["test_synth_val"]["sard_instances"] == again["test_synth_val"]["sard_instances"]


def test_the_same_command_and_seed_give_the_same_numbers(tiny_synth, tmp_path):
    from sard.engine import Trainer

    def run(out):
        opts = ["OUTPUT_DIR", str(out), "INPUT.IMAGE_SIZE", "(64, 64)", "SEED", "11"]
        opts += ["DATASETS.TRAIN", "('test_synth_train',)", "DATASETS.TEST", "('test_synth_val',)"]
        trainer = Trainer(load_config(TINY_SAM, opts))
        results = trainer.train()
        return results, trainer.model.state_dict()

    first, a = run(tmp_path / "a")
    second, b = run(tmp_path / "b")
    assert first == second
    assert all(torch.equal(a[k], b[k]) for k in a)

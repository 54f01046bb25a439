"""The paper configs as users run them: real architectures, weights in the official layouts.

Each selected top-level config builds its real teacher and student, loads random teacher
weights written by the test in the official release layout (SAM's .pth, a transformers
save_pretrained folder, a timm ViT state dict), trains two iterations (one epoch of 2 images at
batch 1: the MAX_EPOCHS path) and evaluates one image at 128 px, through tools/train_net.py.

One config per distinct (teacher, student) architecture pair runs here: the cityscapes and
ade20k variants of the Mask2Former and ViT pairs build the same networks as their rockfrag
variants (only NUM_CLASSES and dataset names differ) and would add minutes of CI for nothing
new; their configs are still loaded and resolved by tests/engine/test_contract.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

from sard.config import load_config
from sard.models.official_layout import save_random_official_weights
from testkit import REPO

PAIRS = [
    "sam_h_to_efficientsam.yaml",
    "sam_h_to_efficientsam_s.yaml",
    "m2f_swinl_to_r50_rockfrag.yaml",
    "m2f_swinl_to_swint_rockfrag.yaml",
    "vit_l_to_vit_t_rockfrag.yaml",
]


def test_every_top_level_config_is_covered_by_a_pair():
    import glob

    pairs = set()
    for path in glob.glob(os.path.join(REPO, "configs", "*.yaml")):
        if os.path.basename(path).startswith("Base-"):
            continue
        cfg = load_config(path)
        t, s = cfg.MODEL.TEACHER, cfg.MODEL.STUDENT
        pairs.add((t.FAMILY, t.SIZE, s.FAMILY, s.SIZE))
    tested = set()
    for name in PAIRS:
        cfg = load_config(os.path.join(REPO, "configs", name))
        t, s = cfg.MODEL.TEACHER, cfg.MODEL.STUDENT
        tested.add((t.FAMILY, t.SIZE, s.FAMILY, s.SIZE))
    assert pairs == tested


@pytest.fixture(scope="module")
def official_weights(tmp_path_factory):
    """(family, size, num_classes) -> a path of random weights in the official layout."""
    folder = tmp_path_factory.mktemp("official")
    made = {}

    def get(family: str, size: str, num_classes: int) -> str:
        key = (family, size, num_classes)
        if key not in made:
            suffix = "" if family == "mask2former" else ".pth"
            path = str(folder / f"{family}_{size}_{num_classes}{suffix}")
            made[key] = save_random_official_weights(family, size, path, num_classes=num_classes)
        return made[key]

    yield get
    # 4.4 GB of random SAM-H, ViT-L and Swin-L weights: pytest keeps its last three temp trees,
    # so leaving them would hold ~13 GB of a developer's disk.
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def two_image_set(tiny_synth, tmp_path_factory):
    """The first 2 training images of the tiny synthetic set (train.json + train/) and its
    validation split, in the by-path layout."""
    import json
    import shutil

    src = os.path.join(tiny_synth, "rockfrag_synth")
    dst = tmp_path_factory.mktemp("two")
    data = json.load(open(os.path.join(src, "train.json")))
    keep = {im["id"] for im in data["images"][:2]}
    data["images"] = [im for im in data["images"] if im["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    json.dump(data, open(dst / "train.json", "w"))
    (dst / "train").mkdir()
    for im in data["images"]:
        shutil.copy(os.path.join(src, "train", im["file_name"]), dst / "train" / im["file_name"])
    shutil.copy(os.path.join(src, "val.json"), dst / "val.json")
    shutil.copytree(os.path.join(src, "val"), dst / "val")
    return str(dst)


@pytest.mark.parametrize("name", PAIRS)
def test_paper_config_trains_two_iterations_and_evaluates(
    name, official_weights, two_image_set, tmp_path
):
    config = os.path.join("configs", name)
    cfg = load_config(os.path.join(REPO, config))
    teacher = cfg.MODEL.TEACHER
    weights = official_weights(teacher.FAMILY, teacher.SIZE, cfg.MODEL.NUM_CLASSES)
    data = two_image_set
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "tools/train_net.py",
        "--config-file",
        config,
        "MODEL.TEACHER.WEIGHTS",
        weights,
        "MODEL.DEVICE",
        "cpu",
        "INPUT.IMAGE_SIZE",
        "(128, 128)",
        "DATASETS.TRAIN",
        f"('{data}/train.json',)",
        "DATASETS.TEST",
        f"('{data}/val.json',)",
        "SOLVER.MAX_EPOCHS",
        "1",  # one epoch of 2 images at batch 1: 2 iterations
        "SOLVER.IMS_PER_BATCH",
        "1",
        "SOLVER.LOG_PERIOD",
        "1",
        "TEST.MAX_IMAGES",
        "1",
        "DATALOADER.NUM_WORKERS",
        "0",
        "OUTPUT_DIR",
        str(out),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="2")
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    log = (out / "log.txt").read_text()
    assert "training contract: 2 iterations (1 epochs x 2 images / batch 1)" in log
    assert "loaded" in log  # the teacher's official-layout weights went through the loader
    ckpt = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)
    assert ckpt["iteration"] == 1
    assert not [k for k in ckpt["model"] if k.startswith("teacher.")]
    assert (out / "inference").is_dir()

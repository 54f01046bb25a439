"""Configs: every YAML loads under the built-in engine; errors name the key or the file."""

from __future__ import annotations

import glob
import os

import pytest

from sard.config import get_cfg, load_config, validate_config
from sard.losses import method_names
from testkit import REPO

CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))


def test_there_are_configs():
    names = {os.path.relpath(p, os.path.join(REPO, "configs")) for p in CONFIGS}
    for required in (
        "Base-SARD.yaml",
        "sam_h_to_efficientsam.yaml",
        "sam_h_to_efficientsam_s.yaml",
        "m2f_swinl_to_r50_cityscapes.yaml",
        "m2f_swinl_to_r50_ade20k.yaml",
        "m2f_swinl_to_r50_rockfrag.yaml",
    ):
        assert required in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, REPO))
def test_every_config_loads(path):
    cfg = load_config(path)
    assert cfg.MODEL.SARD.METHOD in method_names()
    assert len(cfg.INPUT.IMAGE_SIZE) == 2


def test_paper_defaults():
    cfg = load_config(os.path.join(REPO, "configs", "sam_h_to_efficientsam.yaml"))
    s = cfg.MODEL.SARD
    assert (s.BETA_E, s.BETA_C, s.BETA_D, s.RADIUS) == (2.0, 1.0, 1.0, 7)
    assert (s.LAMBDA_F, s.LAMBDA_D, s.MU, s.ALPHA) == (1.0, 0.5, 1.0, 0.5)
    assert cfg.SOLVER.OPTIMIZER == "ADAMW" and cfg.SOLVER.MAX_EPOCHS == 100
    assert (cfg.MODEL.TEACHER.FAMILY, cfg.MODEL.TEACHER.SIZE) == ("sam", "vit_h")
    assert (cfg.MODEL.STUDENT.FAMILY, cfg.MODEL.STUDENT.SIZE) == ("efficient_sam", "ti")


def test_ablation_configs_set_betas():
    cfg = load_config(os.path.join(REPO, "configs", "ablations", "sam_h_to_efficientsam_D.yaml"))
    assert (cfg.MODEL.SARD.BETA_E, cfg.MODEL.SARD.BETA_C, cfg.MODEL.SARD.BETA_D) == (0, 0, 1)


def test_unknown_key_in_file_names_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL:\n  SARD:\n    BETA_X: 3.0\n")
    with pytest.raises(KeyError, match="MODEL.SARD.BETA_X"):
        load_config(str(bad))


def test_unknown_key_on_command_line_names_the_key():
    with pytest.raises(AssertionError, match="SOLVER.NOT_A_KEY"):
        load_config(opts=["SOLVER.NOT_A_KEY", "1"])


def test_overrides_and_arch_keys():
    cfg = load_config(opts=["SOLVER.MAX_ITER", "7", "MODEL.STUDENT.ARCH.EMBED_DIM", "48"])
    assert cfg.SOLVER.MAX_ITER == 7
    assert cfg.MODEL.STUDENT.ARCH.EMBED_DIM == 48
    with pytest.raises(ValueError, match="odd"):
        load_config(opts=["SOLVER.MAX_ITER"])


def test_missing_config_file():
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config("nope.yaml")


def test_missing_teacher_weights_fail_naming_file_and_key():
    cfg = load_config(os.path.join(REPO, "configs", "sam_h_to_efficientsam.yaml"))
    with pytest.raises(FileNotFoundError, match=r"MODEL\.TEACHER\.WEIGHTS.*sam_vit_h_4b8939\.pth"):
        validate_config(cfg)
    # The scratch baseline never needs the teacher.
    cfg.MODEL.SARD.METHOD = "none"
    validate_config(cfg)


def test_unknown_method():
    cfg = get_cfg()
    cfg.MODEL.SARD.METHOD = "magic"
    with pytest.raises(ValueError, match="magic"):
        validate_config(cfg)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, REPO))
def test_every_config_loads_under_detectron2(path):
    pytest.importorskip("detectron2.config", reason="detectron2 is not installed")
    cfg = load_config(path, use_detectron2=True)
    assert type(cfg).__module__.startswith("detectron2")
    assert cfg.MODEL.META_ARCHITECTURE == "SARDDistiller"

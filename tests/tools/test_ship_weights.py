"""tools/ship_weights.py: the model tensors of a training checkpoint, exactly, in safetensors."""

from __future__ import annotations

import hashlib
import os

import pytest
import torch


@pytest.fixture
def tool(load_script):
    return load_script("tools/ship_weights.py")


def _training_checkpoint(path, scale: int = 1):
    model = {"student.w": torch.randn(4 * scale, 3), "student.b": torch.arange(5.0)}
    optimizer = {"state": {0: {"exp_avg": torch.ones(4, 3)}}, "param_groups": [{"lr": 0.1}]}
    torch.save({"model": model, "optimizer": optimizer, "iteration": 7}, path)
    return model


def test_ships_the_model_tensors_exactly_and_prints_the_sha256(tool, tmp_path, capsys):
    from safetensors.torch import load_file

    model = _training_checkpoint(tmp_path / "model_final.pth")
    out = tmp_path / "weights" / "t.safetensors"
    assert tool.main([str(tmp_path / "model_final.pth"), "--out", str(out)]) == 0
    shipped = load_file(str(out))
    assert set(shipped) == set(model)  # no optimizer, iteration or RNG entries
    for k, v in model.items():
        assert shipped[k].dtype == v.dtype and torch.equal(shipped[k], v)
    printed = capsys.readouterr().out
    assert f"sha256 {hashlib.sha256(out.read_bytes()).hexdigest()}" in printed
    assert "2 tensors, 17 parameters" in printed


def test_the_shipped_file_loads_as_a_teacher_checkpoint(tool, tmp_path):
    from sard.distill.build import student_state_dict
    from sard.models.checkpoint import read_state_dict

    model = _training_checkpoint(tmp_path / "c.pth")
    tool.ship(str(tmp_path / "c.pth"), str(tmp_path / "c.safetensors"))
    bare = student_state_dict(read_state_dict(tmp_path / "c.safetensors"))
    assert set(bare) == {"w", "b"} and torch.equal(bare["w"], model["student.w"])


def test_refuses_a_file_over_the_limit(tool, tmp_path, capsys):
    _training_checkpoint(tmp_path / "big.pth", scale=20_000)  # 80000 x 3 floats: 0.96 MB
    out = str(tmp_path / "big.safetensors")
    assert tool.main([str(tmp_path / "big.pth"), "--out", out, "--limit-mb", "0.5"]) == 1
    assert "over the 0.5 MB limit" in capsys.readouterr().err
    assert not os.path.exists(out)  # nothing over the limit is left to commit by mistake


def test_bad_input_is_one_line(tool, tmp_path, capsys):
    from sard.user_errors import run_tool

    _training_checkpoint(tmp_path / "c.pth")
    assert run_tool(tool.main, [str(tmp_path / "c.pth"), "--out", str(tmp_path / "c.pt")]) == 2
    assert "name it *.safetensors" in capsys.readouterr().err
    assert (
        run_tool(tool.main, [str(tmp_path / "no.pth"), "--out", str(tmp_path / "n.safetensors")])
        == 2
    )
    assert "does not exist" in capsys.readouterr().err


def test_help_explains_every_option(tool, capsys):
    from testkit import assert_help_explains_every_option

    assert_help_explains_every_option(tool, capsys)

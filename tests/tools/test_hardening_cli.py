"""Issue 17 catalogue, command-line side: the expected-error mechanism, numeric flags of every
tool, and prompts the predictor must refuse.

Expected errors print one line on stderr and exit 2 (``sard.user_errors.run_tool``); bad flag
values are refused by argparse (exit 2, naming the flag) before anything runs.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cli_values import float_range, int_range
from sard.user_errors import EXIT_USER_ERROR, UserError, run_tool
from testkit import REPO, SIZE_OPTS, TINY_SAM


# ---------------------------------------------------------------- the mechanism
def _raiser(err: BaseException):
    def main(argv=None):
        raise err

    return main


@pytest.mark.parametrize(
    "err, line",
    [
        (UserError("data.json: no categories"), "error: data.json: no categories"),
        (FileNotFoundError("x.pth does not exist"), "error: x.pth does not exist"),
        (ValueError("bad value"), "error: bad value"),
        (KeyError("unknown dataset 'a'"), "error: unknown dataset 'a'"),  # no repr quotes
        (UserError("first\n  second\n"), "error: first; second"),
        (OSError(errno.ENOSPC, "No space left on device", "out.pth"), "No space left on device"),
        (PermissionError(errno.EACCES, "Permission denied", "/ro"), "Permission denied"),
    ],
)
def test_expected_errors_are_one_line_and_exit_2(capsys, monkeypatch, err, line):
    monkeypatch.delenv("SARD_TRACEBACK", raising=False)
    assert run_tool(_raiser(err), []) == EXIT_USER_ERROR
    captured = capsys.readouterr()
    (printed,) = captured.err.strip().splitlines()
    assert printed.startswith("error: ") and line in printed
    assert captured.out == ""


@pytest.mark.parametrize("err", [RuntimeError("a bug"), TypeError("a bug"), AssertionError()])
def test_unexpected_errors_keep_their_traceback(err):
    with pytest.raises(type(err)):
        run_tool(_raiser(err), [])


def test_traceback_env_shows_expected_errors_too(monkeypatch):
    monkeypatch.setenv("SARD_TRACEBACK", "1")
    with pytest.raises(UserError):
        run_tool(_raiser(UserError("x")), [])


def test_status_and_interrupt(capsys):
    assert run_tool(lambda argv: 1, []) == 1
    assert run_tool(lambda argv: None, []) == 0
    assert run_tool(lambda argv: ["a list"], []) == 0  # visualize_structure returns its files
    assert run_tool(_raiser(KeyboardInterrupt()), []) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


def test_library_errors_are_user_errors():
    from sard.data import DatasetError, ImageReadError
    from sard.local_paths import RemoteWeightsError
    from sard.models.checkpoint import (
        CheckpointMismatchError,
        CorruptCheckpointError,
        UnsafeCheckpointError,
    )

    for cls in (
        DatasetError,
        ImageReadError,
        CheckpointMismatchError,
        CorruptCheckpointError,
        RemoteWeightsError,
        UnsafeCheckpointError,
    ):
        assert issubclass(cls, UserError), cls


# ---------------------------------------------------------------- bounded flag values
@pytest.mark.parametrize(
    "parse, text, words",
    [
        (int_range(1), "0", "must be an integer >= 1, got '0'"),
        (int_range(1), "1.5", "must be an integer >= 1"),
        (int_range(0, 10), "11", "<= 10"),
        (float_range(0, 1), "nan", "must be a finite number >= 0 and <= 1, got 'nan'"),
        (float_range(0, 1), "inf", "finite"),
        (float_range(0, 1), "1.5", "<= 1"),
        (float_range(0, lo_open=True), "0", "> 0"),
        (float_range(), "-inf", "finite"),
        (float_range(), "abc", "finite number"),
    ],
)
def test_value_parsers_refuse(parse, text, words):
    with pytest.raises(argparse.ArgumentTypeError, match=words.replace("(", r"\(")):
        parse(text)


def test_value_parsers_accept():
    assert int_range(1)("16") == 16 and int_range()("-3") == -3
    assert float_range(0, 1)("0.7") == 0.7 and float_range(0, 1)("1") == 1.0
    assert float_range(0)("0") == 0.0


def _load(script: str, monkeypatch):
    """The script as a module, registered in sys.modules while the test runs (dataclasses in
    a script need their module there)."""
    import importlib.util

    name = "hardening_" + os.path.splitext(os.path.basename(script))[0]
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, script))
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


# (script, arguments before the bad flag, flag, bad value)
BAD_FLAGS = [
    ("tools/predict.py", ["img.png", "--config-file", "c.yaml"], "--grid", "0"),
    ("tools/predict.py", ["img.png", "--config-file", "c.yaml"], "--grid", "-4"),
    ("tools/predict.py", ["img.png", "--config-file", "c.yaml"], "--nms-iou", "nan"),
    ("tools/predict.py", ["img.png", "--config-file", "c.yaml"], "--nms-iou", "1.5"),
    ("tools/predict.py", ["img.png", "--config-file", "c.yaml"], "--chunk-size", "0"),
    ("tools/predict.py", ["img.png", "--config-file", "c.yaml"], "--min-score", "nan"),
    ("tools/export_student.py", ["--config-file", "c.yaml", "--out", "o"], "--tolerance", "-1"),
    ("tools/export_student.py", ["--config-file", "c.yaml", "--out", "o"], "--tolerance", "nan"),
    ("tools/export_student.py", ["--config-file", "c.yaml", "--out", "o"], "--opset", "0"),
    ("tools/export_student.py", ["--config-file", "c.yaml", "--out", "o"], "--seed", "-1"),
    ("tools/bench_eval.py", [], "--size", "0"),
    ("tools/bench_eval.py", [], "--repeats", "0"),
    ("tools/bench_eval.py", [], "--dilation-ratio", "0"),
    ("tools/bench_eval.py", [], "--jitter", "nan"),
    ("tools/bench_structure.py", [], "--reps", "0"),
    ("tools/bench_structure.py", [], "--radii", "-1"),
    ("tools/bench_structure.py", [], "--threads", "0"),
    ("tools/bench_losses.py", [], "--batch", "0"),
    ("tools/bench_losses.py", [], "--warmup", "-1"),
    ("tools/bench_losses.py", [], "--threads", "-2"),
    ("tools/bench_train.py", [], "--batch", "0"),
    ("tools/bench_train.py", [], "--iters", "0"),
    ("tools/bench_export.py", [], "--prompts", "0"),
    ("tools/bench_export.py", [], "--repeats", "0"),
    ("tools/benchmark.py", [], "--batch", "0"),
    ("tools/benchmark.py", [], "--reps", "0"),
    ("tools/benchmark.py", [], "--semantic-size", "0x512"),
    ("datasets/prepare_tiles.py", ["--src", "s", "--out", "o"], "--tile", "0"),
    ("datasets/prepare_tiles.py", ["--src", "s", "--out", "o"], "--min-area", "-1"),
    ("datasets/prepare_label_images.py", ["--src", "s"], "--min-area", "0"),
    ("datasets/prepare_rockfrag_synth.py", [], "--num-train", "-1"),
    ("datasets/prepare_rockfrag_synth.py", [], "--density", "nan"),
    ("datasets/prepare_rockfrag_synth.py", [], "--density", "1.5"),
    ("datasets/prepare_rockfrag_synth.py", [], "--image-size", "8"),
    ("datasets/prepare_rockfrag_synth.py", [], "--min-size", "-2"),
    ("datasets/prepare_rockfrag_synth.py", [], "--size-exponent", "inf"),
]


@pytest.mark.parametrize(
    "script, before, flag, value", BAD_FLAGS, ids=[f"{s}{f}={v}" for s, _, f, v in BAD_FLAGS]
)
def test_bad_flag_values_are_refused_before_anything_runs(
    capsys, tmp_path, monkeypatch, script, before, flag, value
):
    monkeypatch.chdir(tmp_path)  # nothing may be written; tmp_path must stay empty
    tool = _load(script, monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        tool.main([*before, f"{flag}={value}"])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.split("error:")[-1]
    assert flag in message and ("must be" in message or "must look like" in message), message
    assert os.listdir(tmp_path) == []


def test_predict_grid_default_is_still_16(load_script):
    tool = load_script("tools/predict.py")
    args = tool.argument_parser().parse_intermixed_args(["img.png", "--config-file", "c.yaml"])
    assert args.grid is None and tool.DEFAULT_GRID == 16


# ---------------------------------------------------------------- the predictor
@pytest.fixture(scope="module")
def predictor():
    import warnings

    from sard.export import SardPredictor
    from sard.models import build_model

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model("efficient_sam", size="tiny", image_size=64, weights="")
    p = SardPredictor(model)
    p.set_image(np.full((40, 50, 3), 120, np.uint8))
    return p


NAN = float("nan")


@pytest.mark.parametrize(
    "points, boxes, words",
    [
        (None, [[NAN, 1.0, 5.0, 5.0]], "boxes hold NaN or infinite values (e.g. box #0)"),
        (None, [[1.0, 1.0, 5.0, 5.0], [1.0, 1.0, float("inf"), 5.0]], "e.g. box #1"),
        ([[[NAN, 1.0]]], None, "point_coords hold NaN or infinite values"),
    ],
)
def test_nan_prompts_are_refused_by_predict_torch(predictor, points, boxes, words):
    coords = labels = box_tensor = None
    if points is not None:
        coords, labels = torch.tensor(points), torch.ones(1, 1, dtype=torch.long)
    if boxes is not None:
        box_tensor = torch.tensor(boxes)
    with pytest.raises(ValueError) as err:
        predictor.predict_torch(coords, labels, box_tensor)
    assert words in str(err.value)


def test_nan_box_through_predict_is_refused(predictor):
    with pytest.raises(ValueError, match="box holds NaN"):
        predictor.predict(box=np.array([NAN, 1, 5, 5]))


# ---------------------------------------------------------------- whole tools, real exit codes
def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    env.pop("SARD_TRACEBACK", None)
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def _one_error_line(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == EXIT_USER_ERROR, res.stderr[-3000:]
    lines = [line for line in res.stderr.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def student_file(tmp_path_factory) -> str:
    """A bare tiny EfficientSAM state dict, as load_student accepts."""
    import warnings

    from sard.models import build_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model("efficient_sam", size="tiny", image_size=64, weights="")
    path = tmp_path_factory.mktemp("student") / "student.pth"
    torch.save(model.state_dict(), path)
    return str(path)


def _image(tmp_path) -> str:
    path = tmp_path / "img.png"
    Image.fromarray(np.full((40, 50, 3), 120, np.uint8)).save(path)
    return str(path)


def test_predict_refuses_a_weights_url_in_one_line(tmp_path):
    url = "https://example.com/model_final.pth"
    res = _run(
        "tools/predict.py",
        _image(tmp_path),
        "--config-file",
        TINY_SAM,
        "--out",
        str(tmp_path / "out"),
        *SIZE_OPTS,
        "MODEL.WEIGHTS",
        url,
    )
    line = _one_error_line(res)
    assert "MODEL.WEIGHTS" in line and url in line and "never downloads" in line
    assert not (tmp_path / "out").exists()


def _predict_with_prompts_file(tmp_path, image: str, student_file: str):
    """tools/predict.py on ``image`` with the prompts of tmp_path/p.json, writing tmp_path/out."""
    args = ["--prompts-json", str(tmp_path / "p.json"), "--out", str(tmp_path / "out")]
    args += [*SIZE_OPTS, "MODEL.WEIGHTS", student_file]
    return _run("tools/predict.py", image, "--config-file", TINY_SAM, *args)


def test_predict_names_the_annotation_with_a_nan_box(tmp_path, student_file):
    image = _image(tmp_path)
    coco = {
        "images": [{"id": 1, "file_name": "img.png", "height": 40, "width": 50}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [NAN, 1, 4, 4]}],
        "categories": [{"id": 1, "name": "grain"}],
    }
    (tmp_path / "p.json").write_text(json.dumps(coco))  # json writes NaN, and reads it back
    res = _predict_with_prompts_file(tmp_path, image, student_file)
    line = _one_error_line(res)
    assert "annotation 7 of image 1" in line and "4 finite numbers" in line
    assert not (tmp_path / "out").exists()


def test_predict_names_a_prompts_file_that_is_not_json(tmp_path, student_file):
    (tmp_path / "p.json").write_text("{not json")
    res = _predict_with_prompts_file(tmp_path, _image(tmp_path), student_file)
    assert "p.json is not valid JSON" in _one_error_line(res)


@pytest.mark.parametrize("content", [b"", b"<html>Not Found</html>"], ids=["empty", "html"])
def test_export_names_a_broken_checkpoint_in_one_line(tmp_path, content):
    bad = tmp_path / "model_final.pth"
    bad.write_bytes(content)
    res = _run(
        "tools/export_student.py",
        "--config-file",
        TINY_SAM,
        "--out",
        str(tmp_path / "out"),
        *SIZE_OPTS,
        "MODEL.WEIGHTS",
        str(bad),
    )
    line = _one_error_line(res)
    assert str(bad) in line and ("is empty" in line or "not a PyTorch checkpoint" in line)
    assert not (tmp_path / "out").exists()


def test_visualize_structure_refuses_teacher_weights_url(tmp_path):
    res = _run(
        "tools/visualize_structure.py",
        "--config-file",
        TINY_SAM,
        "--input",
        _image(tmp_path),
        "--out",
        str(tmp_path / "out"),
        *SIZE_OPTS,
        "MODEL.TEACHER.WEIGHTS",
        "s3://bucket/sam.pth",
    )
    line = _one_error_line(res)
    assert "MODEL.TEACHER.WEIGHTS" in line and "never downloads" in line


def test_validate_dataset_unknown_name_is_one_line():
    line = _one_error_line(_run("tools/validate_dataset.py", "no_such_dataset"))
    assert "'no_such_dataset' is neither a JSON file nor a registered dataset" in line


def test_prepare_label_images_missing_folder_is_one_line(tmp_path):
    res = _run(
        "datasets/prepare_label_images.py",
        "--src",
        str(tmp_path / "nope"),
        "--out",
        str(tmp_path / "out"),
        "--splits",
        "train",
    )
    assert "label-image directory not found" in _one_error_line(res)


def test_predict_output_folder_that_is_a_file_is_one_line(tmp_path, student_file, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("predict_tool", f"{REPO}/tools/predict.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    (tmp_path / "out").write_text("a file, not a folder")
    argv = [
        _image(tmp_path),
        "--config-file",
        TINY_SAM,
        "--grid",
        "2",
        "--no-progress",
        "--out",
        str(tmp_path / "out"),
        *SIZE_OPTS,
        "MODEL.WEIGHTS",
        student_file,
    ]
    assert run_tool(tool.main, argv) == EXIT_USER_ERROR
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and str(tmp_path / "out") in line

"""tools/quickstart.py at a minuscule size: every stage runs and writes its outputs; its default
pair is the shipped teacher and the config that names it."""

from __future__ import annotations

import json
import os

import pytest

from testkit import REPO, TINY_TEACHER_ARGS

PAIR_CONFIG = "sam_p4_teacher_to_sam_p4_d64.yaml"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = [
    *("--image-size", "64", "--num-train", "4", "--num-test", "2"),
    *("--min-size", "6", "--max-size", "16", "--teacher-iters", "2", "--student-iters", "2"),
    *TINY_TEACHER_ARGS,
    "--train-teacher",  # TINY_TEACHER_ARGS' narrow teacher is not the shipped one
]


@pytest.fixture(scope="module")
def quickstart(load_script):
    return load_script("tools/quickstart.py")


def test_quickstart_writes_table_json_and_pictures_then_skips_finished_runs(
    quickstart, tmp_path, capsys
):
    out = tmp_path / "qs"
    payload = quickstart.main(["--out", str(out), *TINY])
    for name in ("structure_map.png", "predictions.png", "training_curves.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) < 500_000, name
    table = (out / "table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert [r.split("|")[1].strip() for r in rows[1:]] == [
        "teacher",
        "student (scratch)",
        "student + SARD",
        "prompt box (filled)",
    ]
    saved = json.loads((out / "results.json").read_text())
    # The floor is the teacher's own box_* metrics; models trained 2 iterations sit below it,
    # and the table says so.
    floor = saved["box_floor"]
    teacher = saved["runs"]["teacher"]["metrics"]
    assert floor == {"mIoU": teacher["box_mIoU"], "bIoU": teacher["box_bIoU"]}
    assert 30.0 < floor["mIoU"] < 100.0
    assert "↓" in rows[1] and "nothing beyond the prompt" in table
    assert saved["runs"].keys() == {"teacher", "scratch", "sard"}
    for run in saved["runs"].values():
        assert 0.0 <= run["metrics"]["mIoU"] <= 100.0 and 0.0 <= run["metrics"]["bIoU"] <= 100.0
        assert run["efficiency"]["params_m"] > 0 and run["efficiency"]["latency_ms"] > 0
    # The students share one architecture (the default: 4 px patches, a 64-wide decoder); the
    # teacher is the wider SAM of the flags.
    eff = {k: v["efficiency"] for k, v in saved["runs"].items()}
    assert eff["scratch"]["params_m"] == eff["sard"]["params_m"]
    assert saved["runs"]["sard"]["model"] == "sam:tiny (patch_size=4, decoder_dim=64)"
    assert saved["runs"]["teacher"]["model"].startswith("sam:tiny (embed_dim=64")
    assert payload["wall_s"] > 0
    assert "total wall time" in capsys.readouterr().out
    # The SARD run was distilled from the teacher's checkpoint.
    opts = dict(saved["runs"]["sard"]["opts"])
    assert saved["runs"]["sard"]["teacher_weights"] == str(out / "teacher" / "model_final.pth")
    assert opts["MODEL.SARD.METHOD"] == "sard"

    stamps = {k: os.path.getmtime(out / k / "results.json") for k in saved["runs"]}
    quickstart.main(["--out", str(out), *TINY])
    assert "already done, skipped" in capsys.readouterr().out
    assert stamps == {k: os.path.getmtime(out / k / "results.json") for k in saved["runs"]}
    # Other settings into the same folder: refused before anything is trained or overwritten.
    with pytest.raises(ValueError, match="other settings"):
        quickstart.main(["--out", str(out), *TINY, "--teacher-iters", "3"])


def test_quickstart_rejects_bad_sizes(quickstart):
    with pytest.raises(SystemExit):
        quickstart.parse_args(["--image-size", "100"])
    with pytest.raises(SystemExit):
        quickstart.parse_args(["--teacher-iters", "0"])


def test_quickstart_defaults_are_the_shipped_teacher_and_its_config(quickstart):
    """The flags' defaults load the shipped teacher and train exactly the pair of
    configs/tiny/sam_p4_teacher_to_sam_p4_d64.yaml (teacher, student, regime, prompts)."""
    from sard.config import load_config

    args = quickstart.parse_args([])
    assert args.teacher_weights == str(quickstart.SHIPPED_TEACHER)
    assert os.path.isfile(args.teacher_weights)
    specs = quickstart.run_specs(args, {"train": "t", "test": "v"}, quickstart.REPO / "out")
    base = load_config(args.config_file, specs["sard"].opts())
    pair = load_config(str(quickstart.REPO / "configs" / "tiny" / PAIR_CONFIG))
    for key in (
        *("MODEL.TEACHER", "MODEL.STUDENT", "MODEL.SARD.MULTIMASK_OUTPUT"),
        *("MODEL.SARD.TASK_LOSS", "INPUT.PROMPT.MAX_PROMPTS", "SOLVER.MAX_ITER"),
    ):
        assert _node(base, key) == _node(pair, key), key


def test_quickstart_by_default_distils_from_the_shipped_teacher(quickstart, tmp_path, capsys):
    out = tmp_path / "qs"
    small = ["--num-train", "2", "--num-test", "1", "--student-iters", "1", "--prompts", "2"]
    saved = quickstart.main(
        ["--out", str(out), *small, "--jobs", "1", "--latency-prompts", "2", "--latency-reps", "1"]
    )
    teacher, sard = saved["runs"]["teacher"], saved["runs"]["sard"]
    assert teacher["iterations"] == 0  # loaded and evaluated, never trained
    assert "loaded and evaluated" in capsys.readouterr().out
    assert saved["settings"]["teacher_weights"] == str(quickstart.SHIPPED_TEACHER)
    assert sard["teacher_weights"] == str(quickstart.SHIPPED_TEACHER)
    # On the quickstart's own test data the shipped teacher clears the prompt-box floor.
    assert teacher["metrics"]["mIoU"] > teacher["metrics"]["box_mIoU"]


def test_quickstart_refuses_teacher_flags_the_shipped_teacher_lacks(quickstart, capsys):
    with pytest.raises(SystemExit):
        quickstart.parse_args(["--teacher-patch", "8"])
    assert "--train-teacher" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        quickstart.parse_args(["--train-teacher", "--teacher-weights", __file__])
    assert "exclude each other" in capsys.readouterr().err
    trained = quickstart.parse_args(["--train-teacher", "--teacher-patch", "8"])
    assert trained.teacher_weights == "" and trained.teacher_patch == 8


def _node(cfg, dotted: str):
    """cfg's value at a dotted key; the teacher's WEIGHTS as an absolute path (the config's is
    relative to the repository, the run's absolute)."""
    value = cfg
    for part in dotted.split("."):
        value = value[part]
    if dotted == "MODEL.TEACHER":
        value = dict(value, WEIGHTS=os.path.abspath(os.path.join(REPO, value["WEIGHTS"])))
    return value

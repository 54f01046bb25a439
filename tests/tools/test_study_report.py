"""tools/study_report.py: runs of one setting gathered from several studies into one report,
and the merges it must refuse. Hand-written run records; no training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FLOOR = {"box_mIoU": 75.0, "box_bIoU": 57.4, "box_bIoU_small": 74.2, "box_bIoU_nb3+": 41.6}
SHARED = [["SOLVER.MAX_ITER", "4000"], ["INPUT.IMAGE_SIZE", "(128, 128)"]]


@pytest.fixture(scope="module")
def report(load_script):
    return load_script("tools/study_report.py")


def record(method: str, seed: int, miou: float, opts=None, **metrics) -> dict:
    """A run record as compare_methods writes it (bucket metrics follow mIoU)."""
    values = {"mIoU": miou, "bIoU": miou - 7.0, "bIoU_small": miou - 10, "bIoU_nb3+": miou - 25}
    out = {"method": method, "seed": seed, "metrics": {**values, **FLOOR, **metrics}}
    if opts is not None:
        base = [["SEED", str(seed)], ["MODEL.SARD.METHOD", method.split("_")[0]]]
        out["opts"] = base + opts
    return out


def study_folder(
    root: Path,
    runs,
    teacher=None,
    setup="4000 iterations",
    unfinished=(),
    label="mnfinder (128 px tiles), cpu scale",
    settings=None,
) -> Path:
    """A compare_methods --out folder holding finished ``runs`` (and unfinished run folders)."""
    for run in runs:
        run_dir = root / "runs" / f"{run['method']}_seed{run['seed']}"
        run_dir.mkdir(parents=True)
        (run_dir / "results.json").write_text(json.dumps(run))
    for name in unfinished:
        (root / "runs" / name).mkdir(parents=True)
    if teacher is not None:
        (root / "teacher").mkdir()
        (root / "teacher" / "results.json").write_text(json.dumps(teacher))
    recorded = {"lr": 0.001, "methods": ["sard", "none"], "seeds": [0], **(settings or {})}
    study = {"label": label, "setup": setup, "settings": recorded, "runs": runs}
    (root / "results.json").write_text(json.dumps(study))
    return root


def test_two_sittings_become_one_table(report, tmp_path, capsys):
    teacher = record("none", 0, 80.8, SHARED)
    first = study_folder(
        tmp_path / "a",
        [record("none", 0, 74.6, SHARED), record("sard", 0, 74.9, SHARED)],
        teacher,
        unfinished=["mgd_seed0"],
    )
    # An older results file without overrides (its runs cannot be checked: said, not refused).
    older = tmp_path / "older.json"
    older.write_text(json.dumps({"runs": [record("none", 1, 74.9), record("sard", 1, 78.3)]}))
    second = study_folder(tmp_path / "b", [record("uniform", 1, 71.0, SHARED)], teacher)
    out = tmp_path / "merged"
    payload = report.main([str(first), str(older), str(second), "--out", str(out)])
    said = capsys.readouterr().out
    assert "(1 unfinished left out)" in said
    assert "not checked against the others: 2 runs without config overrides" in said
    # the studies' --methods order (sard, none), then METHOD_VARIANTS' (uniform), by seed
    assert [(r["method"], r["seed"]) for r in payload["runs"]] == [
        ("sard", 0),
        ("sard", 1),
        ("none", 0),
        ("none", 1),
        ("uniform", 1),
    ]
    table = (out / "table.md").read_text()
    assert table.startswith("mnfinder (128 px tiles), cpu scale: 4000 iterations. Teacher: mIoU")
    assert "Seeds 0 1;" in table and "+5.8 / +16.4 vs the prompt-box floor: above it" in table
    # SARD - none, paired over seeds 0 and 1: +0.3 and +3.4 -> +1.9 mean, won 2/2.
    assert "| sard | 2 | 76.6 ± 2.4 | 69.6 ± 2.4 | +1.9 ± 2.2 (2/2) |" in table
    assert "| prompt box (filled) |" in (out / "buckets.md").read_text()
    assert (out / "bars.png").read_bytes().startswith(b"\x89PNG")
    saved = json.loads((out / "results.json").read_text())
    assert saved["sources"] == [str(first), str(older), str(second)]
    assert saved["teacher"]["metrics"]["mIoU"] == 80.8 and saved["box_floor"]["mIoU"] == 75.0

    # The report's own results.json merges again with the study it came from (same runs).
    again = report.main([str(out / "results.json"), str(first), "--out", str(tmp_path / "r2")])
    assert again["summary"] == payload["summary"]


@pytest.mark.parametrize(
    "second, message",
    [
        # the same run with other scores
        (dict(runs=[record("none", 0, 70.0, SHARED)]), "none seed 0 is in"),
        # a setting that differs (the students' schedule)
        (
            dict(runs=[record("mgd", 1, 74.0, [["SOLVER.MAX_ITER", "1000"], SHARED[1]])]),
            "SOLVER.MAX_ITER",
        ),
        # another teacher
        (dict(runs=[record("mgd", 1, 74.0, SHARED)], teacher=record("none", 0, 80.1)), "teachers"),
        # another setup line, another label
        (dict(runs=[record("mgd", 1, 74.0, SHARED)], setup="1000 iterations"), "setups"),
        (dict(runs=[record("mgd", 1, 74.0, SHARED)], label="synth, cpu scale"), "labels"),
        # another test set (the prompt-box floor differs)
        (dict(runs=[record("mgd", 1, 74.0, SHARED, box_mIoU=64.2)]), "different test sets"),
        # a setting only one study recorded (a flag left at its default is not in the opts)
        (dict(runs=[record("mgd", 1, 74.0, SHARED + [["INPUT.JITTER", "2"]])]), "INPUT.JITTER"),
        # another flag recorded by the study (an --lr the overrides would show too)
        (dict(runs=[record("mgd", 1, 74.0, SHARED)], settings={"lr": 0.01}), "--lr 0.001 vs"),
    ],
)
def test_merges_that_mix_settings_are_refused(report, tmp_path, second, message):
    teacher = record("none", 0, 80.8, SHARED)
    first = study_folder(tmp_path / "a", [record("none", 0, 74.6, SHARED)], teacher)
    other = study_folder(tmp_path / "b", **{"teacher": teacher, **second})
    with pytest.raises(ValueError, match=message):
        report.main([str(first), str(other), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out" / "table.md").exists()


def test_bad_sources_are_named(report, tmp_path):
    with pytest.raises(SystemExit):
        report.parse_args([str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a study folder"):
        report.main([str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    broken = tmp_path / "broken.json"
    broken.write_text('{"runs": [')
    with pytest.raises(ValueError, match="not valid JSON"):
        report.main([str(broken), "--out", str(tmp_path / "o")])
    (tmp_path / "other.json").write_text('{"summary": {}}')
    with pytest.raises(ValueError, match="no list of runs"):
        report.main([str(tmp_path / "other.json"), "--out", str(tmp_path / "o")])


def test_flags_too_old_to_describe_the_setup_are_said(report, tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"settings": {"dataset": "synth"}, "runs": [record("none", 0, 60)]}))
    payload = report.main([str(old), "--out", str(tmp_path / "o")])
    assert payload["setup"] == "setup not recorded" and payload["label"] == "study"


def test_real_overrides_of_every_method_merge_and_a_regime_change_does_not(report, tmp_path):
    from studies.study import Member, RunSpec, Schedule, _identity

    def run(method: str, seed: int, extra=()) -> dict:
        spec = RunSpec(
            method,
            seed,
            Member("sam", "tiny", (("patch_size", 4),)),
            Schedule(4000),
            128,
            "compare_mnfinder_train",
            "compare_mnfinder_test",
            teacher=Member("sam", "tiny", (("embed_dim", 128),)),
            teacher_weights="/somewhere/model_final.pth",
            extra_opts=list(extra),
        )
        return {**record(method, seed, 70.0 + seed), "opts": _identity(spec.opts())}

    methods = ["none", "cwd", "mgd", "uniform", "sard", "sard_E", "sard_C"]
    first = study_folder(tmp_path / "a", [run(m, 0) for m in methods])
    second = study_folder(tmp_path / "b", [run(m, 1) for m in methods])
    payload = report.main([str(first), str(second), "--out", str(tmp_path / "ok")])
    # compare_methods' --methods order first ("sard", "none"), then METHOD_VARIANTS'
    assert list(payload["summary"]) == ["sard", "none", "cwd", "mgd", "uniform", "sard_E", "sard_C"]
    assert payload["unchecked"] == {}
    jitter = study_folder(tmp_path / "c", [run("none", 2, ["INPUT.SCALE_JITTER", "(0.5, 2.0)"])])
    with pytest.raises(ValueError, match="INPUT.SCALE_JITTER = <not set> vs"):
        report.main([str(first), str(jitter), "--out", str(tmp_path / "no")])

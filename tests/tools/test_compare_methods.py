"""tools/compare_methods.py at a minuscule size: outputs, then finished runs are skipped."""

from __future__ import annotations

import json
import os

import pytest

from testkit import REPO, TINY_TEACHER_ARGS

TINY = [
    *("--dataset", "synth", "--methods", "none", "sard", "--seeds", "0"),
    *("--iters", "2", "--teacher-iters", "2"),
    *("--image-size", "64", "--num-train", "4", "--num-test", "2", "--fragment-px", "6", "20"),
    *TINY_TEACHER_ARGS,
]


@pytest.fixture(scope="module")
def compare(load_script):
    return load_script("tools/compare_methods.py")


def test_compare_methods_outputs_then_skips_finished_runs(compare, tmp_path, capsys, load_script):
    out = tmp_path / "cmp"
    payload = compare.main(["--out", str(out), *TINY])
    assert (out / "bars.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "bars.png").stat().st_size < 500_000
    saved = json.loads((out / "results.json").read_text())
    assert list(saved["summary"]) == ["none", "sard"]
    for method in ("none", "sard"):
        stats = saved["summary"][method]["mIoU"]
        assert stats["n"] == 1 and stats["std"] == 0.0 and 0.0 <= stats["mean"] <= 100.0
    run_dirs = sorted(p.name for p in (out / "runs").iterdir())
    assert run_dirs == ["none_seed0", "sard_seed0"]
    table = (out / "table.md").read_text()
    # small/crowded buckets exist when every run has them; with one seed Δ has no spread
    buckets = (out / "buckets.md").read_text()
    assert "| method | seeds | bIoU_small |" in buckets and "| sard | 1 |" in buckets
    assert "ΔmIoU vs none" in table and "| sard | 1 |" in table
    # The prompt-box floor: a row of every table, from the evaluator's box_* metrics.
    floor = saved["box_floor"]
    assert floor == {m: saved["teacher"]["metrics"][f"box_{m}"] for m in ("mIoU", "bIoU")}
    assert f"| prompt box (filled) | — | {floor['mIoU']:.1f} | {floor['bIoU']:.1f} |" in table
    assert "vs the prompt-box floor" in table and "prompt box (filled)" in buckets
    assert "| prompt box (filled) | 0 | 0 | 0 |" in (out / "efficiency.md").read_text()
    eff = (out / "efficiency.md").read_text()
    assert "teacher efficient_sam:tiny (embed_dim=64" in eff and "efficient_sam:tiny + sard" in eff
    assert saved["efficiency"]["teacher"]["params_m"] > 0
    # The SARD student learned from the teacher trained in this folder.
    sard_run = next(r for r in saved["runs"] if r["method"] == "sard")
    assert sard_run["teacher_weights"] == str(out / "teacher" / "model_final.pth")
    assert dict(sard_run["opts"])["MODEL.SARD.METHOD"] == "sard"
    # Finished runs keep only final weights without optimizer state (disk stays small).
    assert sorted(p.name for p in (out / "runs" / "sard_seed0").glob("*.pth")) == [
        "model_final.pth"
    ]
    assert payload["summary"]["sard"]["bIoU"]["n"] == 1
    # Reported again from the folder alone, without training: the same tables.
    study_report = load_script("tools/study_report.py")
    reported = study_report.main([str(out), "--out", str(tmp_path / "r")])
    assert (tmp_path / "r" / "table.md").read_text() == table
    assert (tmp_path / "r" / "buckets.md").read_text() == buckets
    assert reported["summary"] == saved["summary"] and reported["setup"] == saved["setup"]
    # A study recorded before label and setup were: both rebuilt from its recorded flags.
    older = {k: v for k, v in saved.items() if k not in ("label", "setup")}
    (tmp_path / "older.json").write_text(json.dumps(older))
    rebuilt = study_report.main([str(tmp_path / "older.json"), "--out", str(tmp_path / "r2")])
    assert (rebuilt["label"], rebuilt["setup"]) == (saved["label"], saved["setup"])
    assert saved["setup"].startswith("teacher efficient_sam:tiny (embed_dim=64")

    # The teacher's W on the test images: 64 px / stride 16 = a 4 x 4 grid, every variant.
    stats = load_script("tools/structure_weight_stats.py").main(
        [
            "--run-dir",
            str(out / "teacher"),
            "--data-folder",
            str(out / "data" / "synth"),
            "--prefix",
            "compare_synth",
        ]
    )
    assert stats["grid"] == [4, 4] and stats["images"] == 2
    assert set(stats["means"]) == {"sard (2,1,1)", "E only", "C only", "D only", "E+C (2,1,0)"}
    for means in stats["means"].values():
        assert 1 / 16 - 1e-9 <= means["ess_ratio"] <= 1 + 1e-9
        assert 0 <= means["boundary_share"] <= 1 and means["instances_per_cell"] > 0
    assert json.loads((out / "teacher" / "weight_stats.json").read_text())["grid"] == [4, 4]
    assert "| sard (2,1,1) |" in (out / "teacher" / "weight_stats.md").read_text()

    stamps = {p: p.stat().st_mtime for p in out.glob("**/metrics.json")}
    assert len(stamps) == 3  # teacher + 2 students
    capsys.readouterr()
    transfer = []
    gravel = os.path.join(os.path.dirname(REPO), "shared", "data", "gravel_fh")
    if os.path.isdir(gravel):  # the real photos ship with the project's shared data
        transfer = [
            "--transfer-to",
            "gravel",
            "--gravel-source",
            gravel,
            "--transfer-image-size",
            "64",
        ]
    compare.main(["--out", str(out), *TINY, *transfer])
    assert {p: p.stat().st_mtime for p in out.glob("**/metrics.json")} == stamps
    if transfer:  # trained on synthetic data, evaluated unchanged on the real gravel image
        moved = json.loads((out / "transfer_gravel.json").read_text())
        assert moved["image_size"] == 64 and list(moved["summary"]) == ["none", "sard"]
        assert moved["teacher"]["count"] > 40  # the test photo holds 45 to 190 grains
        assert (out / "transfer_gravel.png").stat().st_size < 500_000
        moved_table = (out / "transfer_gravel.md").read_text()
        assert "evaluated unchanged on the gravel test split" in moved_table
        assert "| prompt box (filled) |" in moved_table
        assert moved["box_floor"]["mIoU"] == moved["teacher"]["box_mIoU"]

    # A given teacher (the README passes the quickstart's) is evaluated, never retrained.
    given = str(out / "teacher" / "model_final.pth")
    again = tmp_path / "given"
    payload = compare.main(
        ["--out", str(again), *TINY, "--methods", "sard", "--teacher-weights", given]
    )
    assert payload["teacher"]["metrics"] == saved["teacher"]["metrics"]  # same weights and data
    assert [r["method"] for r in payload["runs"]] == ["sard"]
    assert payload["runs"][0]["teacher_weights"] == os.path.abspath(given)
    assert not (again / "teacher" / "model_final.pth").exists()
    # --teacher-init fine-tunes that teacher here (2 more iterations), then teaches.
    tuned = tmp_path / "tuned"
    payload = compare.main(
        ["--out", str(tuned), *TINY, "--methods", "sard", "--teacher-init", given]
    )
    assert (tuned / "teacher" / "model_final.pth").exists()
    assert payload["runs"][0]["teacher_weights"] == str(tuned / "teacher" / "model_final.pth")
    with pytest.raises(SystemExit):
        compare.parse_args(
            [*TINY, "--out", "x", "--teacher-init", given, "--teacher-weights", given]
        )


def test_compare_methods_argument_errors(compare, tmp_path):
    with pytest.raises(SystemExit):
        compare.parse_args(["--dataset", "synth", "--out", "x", "--methods", "dino"])
    with pytest.raises(SystemExit):
        compare.parse_args(
            ["--dataset", "synth", "--out", "x", "--teacher-weights", str(tmp_path / "missing.pth")]
        )
    for bad in (["--tile", "64"], ["--tile", "-1"], ["--fragment-px", "9", "3"]):
        with pytest.raises(SystemExit):
            compare.parse_args(["--dataset", "synth", "--out", "x", *bad])
    with pytest.raises(SystemExit):  # gravel names its source: no default outside a checkout
        compare.parse_args(["--dataset", "gravel", "--out", "x"])
    args = compare.parse_args(["--dataset", "gravel", "--gravel-source", "g", "--out", "x"])
    assert args.image_size == 256 and args.iters == 300 and args.device == "cpu"
    assert args.tile == 0
    args = compare.parse_args(["--dataset", "mnfinder", "--out", "x"])
    assert args.image_size == 128 and args.tile == 128  # native-resolution tiles on a CPU
    # The regime's levers: a sam-family pair on a finer grid, scale jitter for every run.
    args = compare.parse_args(
        ["--dataset", "synth", "--out", "x", "--teacher-family", "sam", "--teacher-patch", "8"]
        + ["--student-family", "sam", "--student-patch", "8", "--scale-jitter", "0.8", "1.25"]
        + ["--student-decoder-dim", "64"]
    )
    from studies.comparison import make_spec, teacher_spec

    args = compare.comparison_settings(args)
    opts = dict(zip(*[iter(make_spec(args, "sard", 0, ["a", "b"], "t.pth").opts())] * 2))
    assert opts["MODEL.STUDENT.ARCH.PATCH_SIZE"] == "8" and opts["MODEL.STUDENT.FAMILY"] == "sam"
    assert opts["MODEL.TEACHER.ARCH.PATCH_SIZE"] == "8"
    assert opts["MODEL.STUDENT.ARCH.DECODER_DIM"] == "64"  # the student only
    assert "MODEL.TEACHER.ARCH.DECODER_DIM" not in opts
    assert opts["INPUT.SCALE_JITTER"] == "(0.8, 1.25)"
    assert dict(zip(*[iter(teacher_spec(args, ["a", "b"]).opts())] * 2))["INPUT.SCALE_JITTER"]
    for fixed in (["--student-patch", "8"], ["--student-decoder-dim", "64"]):
        with pytest.raises(SystemExit):  # EfficientSAM's patch and decoder width are fixed
            compare.parse_args(["--dataset", "synth", "--out", "x", *fixed])
    with pytest.raises(SystemExit):  # 8 heads on half the width
        compare.parse_args(
            ["--dataset", "synth", "--out", "x", "--student-family", "sam"]
            + ["--student-decoder-dim", "40"]
        )
    # A COCO dataset: all four flags, files that exist, not together with --dataset.
    coco = tmp_path / "a.json"
    coco.write_text("{}")
    four = ["--train-json", str(coco), "--train-images", str(tmp_path)]
    four += ["--test-json", str(coco), "--test-images", str(tmp_path)]
    args = compare.parse_args(["--out", "x", *four])
    assert args.dataset == "custom" and args.tile == 0 and args.transfer_image_size == 256
    for bad in (
        four[:6],  # --test-images missing
        ["--dataset", "synth", *four],
        [*four[:2], str(tmp_path / "nope.json"), *four[3:]],
        [*four, "--transfer-json", str(coco)],  # without --transfer-images
        [*four, "--transfer-json", str(coco), "--transfer-images", str(tmp_path),
         "--transfer-to", "gravel"],  # fmt: skip
    ):
        with pytest.raises(SystemExit):
            compare.parse_args(["--out", "x", *bad])


def test_any_coco_dataset_tiled_with_a_transfer_set(compare, tmp_path):
    """--train/--test-json/-images instead of --dataset, tiles at native resolution, and every
    model evaluated unchanged on another labelled set (tiled as well)."""
    from sard.data.synthetic import SynthConfig
    from studies.study_data import ensure_synth

    data, other = tmp_path / "data", tmp_path / "other"
    ensure_synth(str(data), SynthConfig(image_size=96, min_size=6, max_size=16),
                 {"train": 2, "test": 1}, seed=0, progress=False)  # fmt: skip
    ensure_synth(str(other), SynthConfig(image_size=128, min_size=8, max_size=20),
                 {"test": 1}, seed=1, progress=False)  # fmt: skip
    flags = TINY[2:]  # the synth-only flags are ignored for a COCO dataset
    out = tmp_path / "cmp"
    custom = ["--train-json", str(data / "train.json"), "--train-images", str(data / "train")]
    custom += ["--test-json", str(data / "test.json"), "--test-images", str(data / "test")]
    transfer = ["--transfer-json", str(other / "test.json"), "--transfer-images"]
    transfer += [str(other / "test"), "--transfer-tile", "64"]
    payload = compare.main(["--out", str(out), *custom, "--tile", "48", *transfer, *flags])
    assert payload["settings"]["dataset"] == "custom"
    tiles = json.loads((out / "data" / "custom_tile48" / "test.json").read_text())
    assert len(tiles["images"]) == 4  # a 96 px image in 48 px tiles
    assert all(im["width"] == im["height"] == 48 for im in tiles["images"])
    assert os.path.islink(out / "data" / "custom" / "train.json")  # linked, not copied
    moved = json.loads((out / "transfer_transfer_tile64.json").read_text())
    assert moved["image_size"] == 64 and list(moved["summary"]) == ["none", "sard"]
    assert "| prompt box (filled) |" in (out / "transfer_transfer_tile64.md").read_text()
    # Another dataset into the same folder is refused, naming the link.
    with pytest.raises(ValueError, match="other data"):
        compare.main(["--out", str(out), *custom[:4], "--test-json", str(other / "test.json"),
                      "--test-images", str(other / "test"), *flags])  # fmt: skip


def test_arch_overrides_of_a_member(compare):
    """Patch size and decoder width: official values add nothing, other values become
    MODEL.<ROLE>.ARCH keys, EfficientSAM's fixed layout and bad steps are refused by name."""
    from studies.study import Member, with_arch

    sam = Member("sam", "tiny")
    assert with_arch(sam, "decoder_dim", 256) == sam and with_arch(sam, "patch_size", 16) == sam
    narrow = with_arch(with_arch(sam, "patch_size", 4), "decoder_dim", 64)
    opts = dict(zip(*[iter(narrow.opts("STUDENT"))] * 2))
    assert opts["MODEL.STUDENT.ARCH.PATCH_SIZE"] == "4"
    assert opts["MODEL.STUDENT.ARCH.DECODER_DIM"] == "64"
    assert narrow.describe() == "sam:tiny (patch_size=4, decoder_dim=64)"
    with pytest.raises(ValueError, match="efficient_sam has a fixed decoder width of 256"):
        with_arch(Member("efficient_sam", "tiny"), "decoder_dim", 64)
    with pytest.raises(ValueError, match="patch size must be a positive multiple of 4, got 6"):
        with_arch(sam, "patch_size", 6)
    with pytest.raises(ValueError, match="decoder width must be a positive multiple of 16"):
        with_arch(sam, "decoder_dim", -16)


def test_a_stopped_study_leaves_its_setting_and_finished_runs(
    compare, tmp_path, monkeypatch, capsys, load_script
):
    """Stopped after the scratch run: results.json already holds label, setup, the teacher,
    the finished run and what was pending, so study_report reports it as a study."""
    import studies.comparison

    trained = studies.comparison.train_run_job

    def stop_at_sard(job):
        if job["label"] == "sard":
            raise KeyboardInterrupt  # Ctrl-C (or a killed machine) in the middle of the call
        return trained(job)

    monkeypatch.setattr(studies.comparison, "train_run_job", stop_at_sard)
    out = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        compare.main(["--out", str(out), *TINY])
    saved = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in saved["runs"]] == ["none"] and saved["pending"] == ["sard_seed0"]
    assert saved["teacher"]["metrics"]["mIoU"] >= 0 and saved["setup"].startswith("teacher ")
    capsys.readouterr()
    report = load_script("tools/study_report.py").main([str(out), "--out", str(tmp_path / "r")])
    assert report["setup"] == saved["setup"] and [r["method"] for r in report["runs"]] == ["none"]
    assert "1 finished run(s) (1 unfinished left out)" in capsys.readouterr().out
    load_script("tools/study_report.py").main([str(out / "results.json"), "--out", str(out / "r")])
    assert "1 finished run(s) (1 unfinished left out)" in capsys.readouterr().out
    # The call run again finishes the study; its results.json no longer lists anything pending.
    monkeypatch.setattr(studies.comparison, "train_run_job", trained)
    compare.main(["--out", str(out), *TINY])
    saved = json.loads((out / "results.json").read_text())
    assert "pending" not in saved and [r["method"] for r in saved["runs"]] == ["none", "sard"]

#!/usr/bin/env python
"""SARD end to end on a CPU: data, the shipped teacher, a scratch student, a SARD student, report.

    python tools/quickstart.py                      # under 30 min on 2 cores
    python tools/quickstart.py --out output/qs --student-iters 600

Stages:
1. generate a small synthetic RockFrag set under --out (reused when already there);
2. the teacher: by default the shipped one (weights/sam_p4_synth_teacher.safetensors, above the
   prompt-box floor), evaluated, not trained; --train-teacher trains one from scratch instead
   (METHOD "none", --teacher-iters; how the shipped one was made, about 3 h on 2 cores);
3. distil the student with SARD from the teacher;
4. train the same student from scratch, same schedule and seed (with --jobs 2 in a second
   process beside stages 2 and 3: it needs no teacher);
5. evaluate all three on the test split and write into --out: table.md, results.json,
   structure_map.png (W(i) of the teacher's image embedding on a test image), predictions.png
   (teacher / scratch / SARD masks for the same box prompts), training_curves.png.

The default pair is configs/tiny/sam_p4_teacher_to_sam_p4_d64.yaml (a test holds the flags'
defaults equal to it): the shipped SAM-family teacher (embed 128, depth 4, 4 px patches) and a
SAM-family student with 4 px patches and a 64-wide decoder (12x fewer parameters), box prompts,
one mask per prompt, focal + Dice, 1000 iterations. Every run goes through the built-in Trainer
with --config-file plus the flags' overrides; a rerun into the same --out skips finished runs
and resumes unfinished ones.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from pathlib import Path
from typing import Dict, List, Optional

from studies import preamble  # noqa: F401  (before torch and sard: see its docstring)

import torch
from cli_flags import add_flag_table
from studies import flags
from studies.study import (
    TINY_SAM_CONFIG,
    Member,
    RunSpec,
    Schedule,
    build_trainer,
    check_same_run,
    read_results,
    spawn_pool,
    start_study,
    train_run,
    write_results,
    train_run_job,
)
from studies.study_data import ensure_synth, register_splits

from sard.data.synthetic import SynthConfig
from sard.reporting import (
    BOX_FLOOR_LABEL,
    markdown_table,
    measure_inference,
    plot_training_curves,
    read_metrics_json,
    render_predictions,
)
from sard.reporting.tables import BELOW_FLOOR_MARK, box_floor, floor_note
from sard.reporting.visuals import (
    limit_prompts,
    model_input_image,
    predicted_masks,
    structure_map_of,
    test_sample,
)
from sard.structure import render_structure_map

STAGES = 5
REPO = Path(__file__).resolve().parents[1]
SHIPPED_TEACHER = REPO / "weights" / "sam_p4_synth_teacher.safetensors"
# The flags' defaults: the shipped teacher's architecture and the student and regime of the study
# above the floor (the same keys as configs/tiny/sam_p4_teacher_to_sam_p4_d64.yaml; tested).
PAIR_DEFAULTS = {
    "teacher_family": "sam",
    "teacher_patch": 4,
    "teacher_embed_dim": 128,
    "teacher_depth": 4,
    "teacher_heads": 4,
    "student_family": "sam",
    "student_patch": 4,
    "student_decoder_dim": 64,
    "multimask": "never",
    "task_loss": "focal_dice",
}
SHIPPED_TEACHER_FLAGS = tuple(k for k in PAIR_DEFAULTS if k.startswith("teacher_"))
# A teacher this many mIoU points above the scratch student is "clearly better".
CLEARLY_BETTER = 5.0


# (name, type, default, help) of the synthetic data and the schedule.
DATA_AND_SCHEDULE_FLAGS = (
    ("image_size", int, 128, "square synthetic image size, px"),
    ("input_size", int, 0, "model input size, px (0: --image-size; larger: a finer feature grid)"),
    ("num_train", int, 64, "synthetic training images"),
    ("num_test", int, 16, "synthetic test images"),
    ("min_size", float, 8.0, "smallest fragment, px"),
    ("max_size", float, 32.0, "largest fragment, px"),
    ("teacher_iters", int, 2000, "teacher iterations (with --train-teacher)"),
    ("student_iters", int, 1000, "scratch and SARD alike"),
    ("batch", int, 2, "images per iteration"),
    ("prompts", int, 32, "box prompts per training image"),
    ("lr", float, 1e-3, "base learning rate"),
)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command line -> namespace; sizes checked (multiples of 16, positive counts)."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default="output/quickstart", help="output folder")
    p.add_argument("--data-dir", default="", help="dataset folder (default OUT/data/...)")
    p.add_argument("--config-file", default=TINY_SAM_CONFIG, help="base YAML of every run")
    add_flag_table(p, DATA_AND_SCHEDULE_FLAGS)
    flags.add_regime_flags(p, "training augmentation", jitter_default=(1.0, 1.0))
    p.add_argument("--teacher-family", choices=flags.FAMILIES)
    p.add_argument(
        "--teacher-weights",
        default=None,
        help="a trained teacher (model_final.pth or a shipped .safetensors): evaluated, not "
        "trained; its architecture flags must match (default: the shipped teacher, "
        f"{SHIPPED_TEACHER.relative_to(REPO)})",
    )
    p.add_argument(
        "--train-teacher",
        action="store_true",
        help="train the teacher from scratch with the teacher flags (--teacher-iters) instead "
        "of loading one",
    )
    p.add_argument(
        "--eval-period",
        type=int,
        default=0,
        help="also evaluate every N iterations (learning curves in metrics.json; 0: at the end)",
    )
    p.add_argument(
        "--teacher-only",
        action="store_true",
        help="only the teacher: evaluate it (with --train-teacher: train it first, how the "
        "shipped teacher is made), then stop",
    )
    # The teacher's width, depth and heads default to PAIR_DEFAULTS (the shipped teacher's).
    p.add_argument("--teacher-embed-dim", type=int)
    p.add_argument("--teacher-depth", type=int)
    p.add_argument("--teacher-heads", type=int)
    p.add_argument("--student-size", default="tiny", help="family size: tiny (ti, s, vit_b, ...)")
    flags.add_patch_flags(p)
    p.add_argument("--seed", type=int, default=0, help="data, teacher and students")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1 is robust on a " "shared machine; try 2 on an idle one)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=2,
        choices=(1, 2),
        help="2: train the scratch student in a second process beside the teacher",
    )
    p.add_argument("--vis-image", type=int, default=0, help="test image shown in the pictures")
    p.add_argument("--latency-prompts", type=int, default=16, help="box prompts per timed image")
    p.add_argument("--latency-reps", type=int, default=5)
    p.set_defaults(**PAIR_DEFAULTS)  # after every add_argument: they would override it
    args = p.parse_args(argv)
    flags.check_positive(
        p,
        args,
        (
            "num_train",
            "num_test",
            "teacher_iters",
            "student_iters",
            "batch",
            "prompts",
            "threads",
            "latency_reps",
        ),
    )
    args.input_size = args.input_size or args.image_size
    if args.input_size % 16:
        p.error(f"--input-size must be a multiple of 16 (the models' patch), got {args.input_size}")
    flags.check_regime_flags(p, args)
    _resolve_teacher(p, args)
    flags.check_files(p, args, ("teacher_weights",))
    flags.check_patches(p, args)
    for role in ("teacher", "student"):
        patch = getattr(args, f"{role}_patch")
        if args.input_size % patch:
            p.error(f"--input-size {args.input_size} is not a multiple of --{role}-patch {patch}")
    return args


def _resolve_teacher(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--train-teacher leaves ``teacher_weights`` empty (train); without it the teacher is
    --teacher-weights, else the shipped file, whose architecture the teacher flags must keep."""
    if args.train_teacher:
        if args.teacher_weights:
            p.error(
                "--train-teacher and --teacher-weights exclude each other: train a teacher, "
                "or load one"
            )
        args.teacher_weights = ""
        return
    if args.teacher_weights:
        return
    args.teacher_weights = str(SHIPPED_TEACHER)
    for name in SHIPPED_TEACHER_FLAGS:
        if getattr(args, name) != PAIR_DEFAULTS[name]:
            p.error(
                f"--{name.replace('_', '-')} {getattr(args, name)} does not match the shipped "
                f"teacher ({PAIR_DEFAULTS[name]}): add --train-teacher to train a teacher with "
                "these flags, or give --teacher-weights of one that has them"
            )


def stage(index: int, text: str) -> None:
    """One progress line per stage."""
    print(f"[{index}/{STAGES}] {text}", flush=True)


def teacher_member(args: argparse.Namespace) -> Member:
    """The teacher: the "tiny" size of --teacher-family widened and deepened (SAM: global
    attention in every other block, the rest windowed, as SAM), with --teacher-patch."""
    widen = (args.teacher_embed_dim, args.teacher_depth, args.teacher_heads)
    return flags.member(args.teacher_family, "tiny", args.teacher_patch, widen)


def student_member(args: argparse.Namespace) -> Member:
    """The student: --student-family at --student-size with --student-patch and
    --student-decoder-dim."""
    return flags.member(
        args.student_family,
        args.student_size,
        args.student_patch,
        decoder_dim=args.student_decoder_dim,
    )


def teacher_weights(args: argparse.Namespace, out: Path) -> str:
    """The teacher checkpoint the SARD student learns from: --teacher-weights (absolute) when
    given, else the one this quickstart trains in OUT/teacher."""
    if args.teacher_weights:
        return os.path.abspath(args.teacher_weights)
    return str(out / "teacher" / "model_final.pth")


def run_specs(args: argparse.Namespace, names: Dict[str, str], out: Path) -> Dict[str, RunSpec]:
    """Teacher, scratch student and SARD student; the students share schedule and seed."""
    common = dict(
        seed=args.seed,
        image_size=args.input_size,
        train_name=names["train"],
        test_name=names["test"],
        device=args.device,
        extra_opts=flags.regime_of(args).opts()
        + (["TEST.EVAL_PERIOD", str(args.eval_period)] if args.eval_period else []),
    )
    sched = dict(ims_per_batch=args.batch, base_lr=args.lr, max_prompts=args.prompts)
    teacher = teacher_member(args)
    student = student_member(args)
    students = Schedule(args.student_iters, **sched)
    # A given teacher is only evaluated (0 iterations, its weights loaded), as compare_methods.
    given = ["MODEL.WEIGHTS", os.path.abspath(args.teacher_weights)] if args.teacher_weights else []
    teacher_common = dict(common, extra_opts=common["extra_opts"] + given)
    t_iters = 0 if args.teacher_weights else args.teacher_iters
    return {
        "teacher": RunSpec(
            "none", student=teacher, schedule=Schedule(t_iters, **sched), **teacher_common
        ),
        "scratch": RunSpec("none", student=student, schedule=students, **common),
        "sard": RunSpec(
            "sard",
            student=student,
            schedule=students,
            teacher=teacher,
            teacher_weights=teacher_weights(args, out),
            **common,
        ),
    }


def prepare_data(args: argparse.Namespace, out: Path) -> Dict[str, str]:
    """Generate (or reuse) the synthetic set; returns ({split: name}, registration tuple)."""
    folder = Path(args.data_dir) if args.data_dir else out / "data" / f"synth_{args.image_size}px"
    config = SynthConfig(image_size=args.image_size, min_size=args.min_size, max_size=args.max_size)
    counts = {"train": args.num_train, "test": args.num_test}
    made = ensure_synth(str(folder), config, counts, seed=args.seed)
    print(
        f"      {'generated' if made else 'reusing'} {folder} "
        f"({args.num_train} train / {args.num_test} test, {args.image_size} px)",
        flush=True,
    )
    dataset = ("quickstart_synth", str(folder), ["train", "test"])
    train, test = register_splits(*dataset)
    return {"train": train, "test": test}, dataset


def train_stage(args, key: str, spec: RunSpec, out: Path, background=None):
    """Train one run here, or collect it from the background process; print its result."""
    if background is not None:
        record, trainer, done = background.result(), None, "trained in the second process"
    else:
        record, trainer = train_run(args.config_file, spec, str(out / key), key)
        if trainer is None:
            done = "already done, skipped"
        else:  # a given teacher is evaluated only (0 iterations)
            done = "trained" if spec.schedule.iters else "loaded and evaluated"
    m = record["metrics"]
    print(
        f"      {done}: test mIoU {m['mIoU']:.1f}, bIoU {m['bIoU']:.1f} "
        f"({record['wall_s']:.0f} s)",
        flush=True,
    )
    return record, trainer


def report(args, out: Path, specs, records, trainers) -> Dict:
    """Efficiency, pictures, table.md and results.json."""
    for key, spec in specs.items():
        if trainers.get(key) is None:
            trainers[key] = build_trainer(args.config_file, spec.opts(), str(out / key))
    cfg = trainers["sard"].cfg
    sample, record = test_sample(cfg, specs["sard"].test_name, args.vis_image)
    timed = limit_prompts(sample, args.latency_prompts)
    rows, summary = [], {}
    titles = {"teacher": "teacher", "scratch": "student (scratch)", "sard": "student + SARD"}
    for key, spec in specs.items():
        eff = measure_inference(
            trainers[key].model, timed, reps=args.latency_reps, device=args.device
        )
        m = records[key]["metrics"]
        summary[key] = {
            **records[key],
            "efficiency": eff.as_dict(),
            "model": spec.student.describe(),
        }
        rows.append(
            [
                titles[key],
                spec.student.describe(),
                f"{eff.params_m:.2f}",
                f"{eff.gflops:.2f}",
                f"{eff.latency_ms:.1f}",
                f"{m['mIoU']:.1f}",
                f"{m['bIoU']:.1f}",
                str(spec.schedule.iters),
                f"{records[key]['wall_s']:.0f}",
            ]
        )
    headers = [
        "model",
        "architecture",
        "params (M)",
        "GFLOPs/img",
        "latency (ms/img)",
        "mIoU",
        "bIoU",
        "iters",
        "train+eval (s)",
    ]
    floor = box_floor(list(records.values()))
    if floor:
        rows.append(
            [BOX_FLOOR_LABEL, "each GT's own box", "0", "0", "0"]
            + [f"{floor[m]:.1f}" for m in ("mIoU", "bIoU")]
            + ["—", "—"]
        )
        below = {
            titles[k]: [m for m in floor if records[k]["metrics"][m] < floor[m]] for k in specs
        }
        for key, spec in specs.items():  # mark the models' cells below the floor
            for col, metric in ((5, "mIoU"), (6, "bIoU")):
                if metric in below[titles[key]]:
                    rows[list(specs).index(key)][col] += f" {BELOW_FLOOR_MARK}"
        note = floor_note({k: v for k, v in below.items() if v}, floor)
    else:
        note = ""
    table = markdown_table(headers, rows, align="ll" + "r" * 7) + ("\n" + note if note else "")

    image = sample["image"].permute(1, 2, 0).numpy().clip(0, 255).astype("uint8")
    gt = sample["gt_masks"].numpy().astype(bool)
    # Predictions are drawn in the model input frame (the same frame as gt_masks).
    preds = {}
    for key in specs:
        full = predicted_masks(trainers[key].model, sample)
        preds[titles[key]] = _to_input_frame(full, gt.shape[-2:])
    render_predictions(image, gt, preds, out / "predictions.png")
    smap = structure_map_of(trainers["teacher"].model.student, sample, cfg)
    render_structure_map(model_input_image(sample), smap, out / "structure_map.png")
    # A loaded teacher (0 iterations) has no training log to draw.
    logs = {
        titles[k]: read_metrics_json(out / k / "metrics.json")
        for k, spec in specs.items()
        if spec.schedule.iters
    }
    plot_training_curves(logs, out / "training_curves.png")
    return {"table": table, "summary": summary, "image": record["file_name"], "box_floor": floor}


def _to_input_frame(masks, hw):
    """Masks at the original resolution -> the model input frame (nearest), for drawing."""
    import torch.nn.functional as F

    if masks.shape[-2:] == tuple(hw):
        return masks
    t = torch.from_numpy(masks[:, None].astype("float32"))
    return F.interpolate(t, size=tuple(hw), mode="nearest")[:, 0].numpy() > 0.5


def main(argv: Optional[List[str]] = None) -> Dict:
    """Run the five stages; returns what results.json holds."""
    start = time.perf_counter()
    args = parse_args(argv)
    out = start_study(args.threads, args.out)

    stage(1, "data: synthetic RockFrag")
    names, dataset = prepare_data(args, out)
    specs = run_specs(args, names, out)
    records, trainers = {}, {}
    origin = f"loaded from {args.teacher_weights}" if args.teacher_weights else "from scratch"
    labels = {
        "teacher": f"teacher {specs['teacher'].student.describe()} {origin}",
        "scratch": f"student {specs['scratch'].student.describe()} from scratch",
        "sard": "student distilled with SARD from the teacher",
    }
    if args.teacher_only:
        return _teacher_only(args, out, specs["teacher"], labels["teacher"], start)
    parallel = args.jobs > 1 and read_results(str(out / "scratch")) is None
    with contextlib.ExitStack() as stack:
        background = None
        if parallel:  # the scratch student needs no teacher: train it beside the teacher
            check_same_run(str(out / "scratch"), specs["scratch"].opts())  # fail here, early
            pool = stack.enter_context(spawn_pool(1))
            job = dict(
                config_file=args.config_file,
                spec=specs["scratch"],
                label="scratch",
                run_dir=str(out / "scratch"),
                threads=1,
                dataset=dataset,
            )
            background = pool.submit(train_run_job, job)
            print(
                "      the scratch student trains in a second process meanwhile (--jobs 2)",
                flush=True,
            )
        # This process runs the teacher, then the SARD student (it needs the teacher's
        # weights); the scratch student needs neither and trains beside both.
        for index, key in enumerate(("teacher", "sard", "scratch"), start=2):
            if key == "sard":
                _check_teacher_floor(records["teacher"])
            stage(index, f"{labels[key]}: {specs[key].schedule.iters} iterations")
            records[key], trainers[key] = train_stage(
                args, key, specs[key], out, background if key == "scratch" else None
            )
    _check_teacher_margin(records)

    stage(5, "report: efficiency, pictures, table")
    result = report(args, out, specs, records, trainers)
    wall = time.perf_counter() - start
    (out / "table.md").write_text(
        f"Quickstart on synthetic RockFrag ({args.image_size} px, {args.num_test} test images), "
        f"seed {args.seed}; latency: one image with {args.latency_prompts} box prompts on "
        f"{args.device} ({args.threads} thread(s)).\n\n" + result["table"]
    )
    payload = {
        "settings": vars(args),
        "runs": result["summary"],
        "teacher_clearly_better": _teacher_margin(records) >= CLEARLY_BETTER,
        "box_floor": result["box_floor"],
        "wall_s": wall,
    }
    write_results(out, payload)
    print("\n" + result["table"])
    print(
        f"wrote {out}/table.md, results.json, structure_map.png, predictions.png, "
        f"training_curves.png"
    )
    print(f"total wall time {wall:.0f} s ({wall / 60:.1f} min)")
    return payload


def _teacher_only(args, out: Path, spec: RunSpec, label: str, start: float) -> Dict:
    """--teacher-only: train and evaluate the teacher, check it against the box floor, write
    results.json (settings, the teacher's record, the floor) and stop."""
    stage(2, f"{label}: {spec.schedule.iters} iterations (--teacher-only: the last stage)")
    record, _ = train_stage(args, "teacher", spec, out)
    _check_teacher_floor(record)
    payload = {
        "settings": vars(args),
        "runs": {"teacher": {**record, "model": spec.student.describe()}},
        "box_floor": box_floor([record]),
        "wall_s": time.perf_counter() - start,
    }
    write_results(out, payload)
    print(f"wrote {out}/results.json; the teacher is {out}/teacher/model_final.pth")
    return payload


def _teacher_margin(records: Dict) -> float:
    return records["teacher"]["metrics"]["mIoU"] - records["scratch"]["metrics"]["mIoU"]


def _check_teacher_margin(records: Dict) -> None:
    """Distillation from a teacher no better than the student has nothing to transfer: say so."""
    margin = _teacher_margin(records)
    if margin < CLEARLY_BETTER:
        print(
            f"      WARNING: the teacher is only {margin:+.1f} mIoU above the scratch student "
            f"(want >= {CLEARLY_BETTER}); train it longer (--teacher-iters) or larger "
            "(--teacher-embed-dim, --teacher-depth) for distillation to mean anything.",
            flush=True,
        )
    else:
        print(f"      the teacher is {margin:+.1f} mIoU above the scratch student", flush=True)


def _check_teacher_floor(record: Dict) -> None:
    """A teacher no better than filling its prompt box has nothing to transfer: say so before
    distilling from it."""
    floor = box_floor([record])
    if not floor:
        return
    gaps = {m: record["metrics"][m] - v for m, v in floor.items()}
    text = " / ".join(f"{m} {g:+.1f} against {floor[m]:.1f}" for m, g in gaps.items())
    if min(gaps.values()) < 0:
        print(
            f"      WARNING: the teacher is below the prompt-box floor ({text}): it has "
            "learned nothing beyond its box prompts; see the README's regime notes.",
            flush=True,
        )
    else:
        print(f"      the teacher is above the prompt-box floor ({text})", flush=True)


if __name__ == "__main__":
    main()

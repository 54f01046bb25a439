"""The method comparison's plan: one teacher, then every (method, seed) student, run in this
process or in a pool of processes, plus the efficiency table and synthetic-to-real transfer.

``args`` is the namespace ``tools/compare_methods.py`` parses (the sizes, schedule, methods,
seeds, devices and output options it documents); ``dataset`` = (prefix, folder, [train, test])
as ``study_data.register_splits`` takes it.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import as_completed
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .efficiency import measure_inference
from .plots import plot_method_bars
from .study import (
    Member,
    RunSpec,
    Schedule,
    build_trainer,
    evaluate_run_on,
    spawn_pool,
    train_run_job,
    widened_member,
    with_patch_size,
)
from .study_data import (
    ensure_gravel,
    ensure_mnfinder,
    ensure_tiles,
    link_coco_split,
    register_splits,
)
from .tables import (
    BOX_FLOOR_LABEL,
    below_floor,
    box_floor,
    comparison_headers,
    comparison_rows,
    floor_note,
    markdown_table,
    summarise_runs,
)
from .visuals import limit_prompts, test_sample

METRICS = ("mIoU", "bIoU")
# Methods every other one is compared with, seed by seed: no distillation, a published
# baseline the paper compares with, and SARD's own control (the same losses with W uniform).
BASELINES = ("none", "cwd", "uniform")
# Where structure should matter most: boundaries of small objects and of crowded ones (3+
# touching neighbours).
BUCKET_METRICS = ("bIoU_small", "bIoU_nb3+")


def teacher_member(args) -> Member:
    """The teacher: at cpu scale the family's "tiny" size widened and deepened (SAM: global
    attention in every other block), at gpu scale a standard size; --teacher-patch applied."""
    if not args.teacher_embed_dim:
        member = Member(args.teacher_family, args.teacher_size)
    else:
        member = widened_member(
            args.teacher_family,
            args.teacher_size,
            args.teacher_embed_dim,
            args.teacher_depth,
            args.teacher_heads,
        )
    return with_patch_size(member, getattr(args, "teacher_patch", 16))


def student_member(args) -> Member:
    """The student of every method: --student-family at --student-size, --student-patch."""
    member = Member(getattr(args, "student_family", "efficient_sam"), args.student_size)
    return with_patch_size(member, getattr(args, "student_patch", 16))


def data_opts(args) -> List[str]:
    """Overrides every run of the study shares beyond its spec: --scale-jitter, --multimask,
    --task-loss."""
    jitter = tuple(getattr(args, "scale_jitter", None) or (1.0, 1.0))
    out = [] if jitter == (1.0, 1.0) else ["INPUT.SCALE_JITTER", str(jitter)]
    multimask = getattr(args, "multimask", "always")
    out += [] if multimask == "always" else ["MODEL.SARD.MULTIMASK_OUTPUT", multimask]
    task = getattr(args, "task_loss", "dice_bce")
    return out + ([] if task == "dice_bce" else ["MODEL.SARD.TASK_LOSS", task])


def make_spec(args, method: str, seed: int, names: List[str], teacher_weights: str) -> RunSpec:
    """Student run ``method``/``seed``: ``student_member``, the shared schedule."""
    student = student_member(args)
    schedule = Schedule(args.iters, args.batch, args.lr, args.prompts)
    return RunSpec(
        method,
        seed,
        student,
        schedule,
        args.image_size,
        names[0],
        names[1],
        teacher=teacher_member(args),
        teacher_weights=teacher_weights,
        device=args.device,
        extra_opts=data_opts(args),
    )


def teacher_spec(args, names: List[str], out: Optional[Path] = None) -> RunSpec:
    """Train the teacher (METHOD none; from --teacher-init's weights when given, i.e.
    fine-tune it, through their weights-only copy OUT/teacher_init.pth) or, with
    --teacher-weights, only evaluate it."""
    iters = 0 if args.teacher_weights else args.teacher_iters
    start = args.teacher_weights or getattr(args, "teacher_init", "")
    if getattr(args, "teacher_init", "") and out is not None:
        start = weights_only(args.teacher_init, str(out / "teacher_init.pth"))
    extra = ["MODEL.WEIGHTS", os.path.abspath(start)] if start else []
    schedule = Schedule(iters, args.batch, args.lr, args.prompts)
    return RunSpec(
        "none",
        args.teacher_seed,
        teacher_member(args),
        schedule,
        args.image_size,
        names[0],
        names[1],
        device=args.device,
        extra_opts=data_opts(args) + extra,
    )


def weights_only(path: str, dest: str) -> str:
    """Copy a checkpoint's weights alone (no iteration, optimizer or RNG state) to ``dest``, so
    training from it starts at iteration 0 rather than resuming it; returns ``dest``."""
    import torch

    if not os.path.isfile(dest):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        torch.save({"model": ckpt.get("model", ckpt)}, dest + ".tmp")
        os.replace(dest + ".tmp", dest)
    return dest


def teacher_weights_path(args, out: Path) -> str:
    """The teacher checkpoint the students learn from: --teacher-weights when given (absolute),
    else the one this study trains in OUT/teacher."""
    if args.teacher_weights:
        return os.path.abspath(args.teacher_weights)
    return str(out / "teacher" / "model_final.pth")


def run_all(args, out: Path, dataset) -> Tuple[Dict, List[Dict]]:
    """Teacher first (with the scratch runs alongside it when --jobs > 1), then the rest."""
    names = [f"{dataset[0]}_{s}" for s in dataset[2]]
    t_spec = teacher_spec(args, names, out)
    t_dir = out / "teacher"
    weights = teacher_weights_path(args, out)
    jobs = [(m, s) for m in args.methods for s in args.seeds]
    job = lambda spec, run_dir, label: dict(  # noqa: E731
        config_file=args.config_file,
        spec=spec,
        run_dir=str(run_dir),
        label=label,
        threads=args.threads,
        dataset=dataset,
    )
    teacher_job = job(t_spec, t_dir, "teacher")
    student_jobs = {
        (m, s): job(make_spec(args, m, s, names, weights), out / "runs" / f"{m}_seed{s}", m)
        for m, s in jobs
    }
    first = [k for k in student_jobs if k[0] == "none"]
    later = [k for k in student_jobs if k[0] != "none"]
    records: Dict[Tuple[str, int], Dict] = {}
    total = len(jobs) + 1
    done = [0]

    def finished(key, record) -> None:
        """Print one line per finished run, numbered."""
        done[0] += 1
        m = record["metrics"]
        print(
            f"  [{done[0]}/{total}] {key}: mIoU {m['mIoU']:.1f} bIoU {m['bIoU']:.1f} "
            f"({record['wall_s']:.0f} s)",
            flush=True,
        )

    if args.jobs == 1:
        teacher = train_run_job(teacher_job)
        finished("teacher", teacher)
        for key in first + later:
            records[key] = train_run_job(student_jobs[key])
            finished(key, records[key])
    else:
        with spawn_pool(args.jobs) as pool:
            t_future = pool.submit(train_run_job, teacher_job)
            futures = {pool.submit(train_run_job, student_jobs[k]): k for k in first}
            teacher = t_future.result()
            finished("teacher", teacher)
            futures.update({pool.submit(train_run_job, student_jobs[k]): k for k in later})
            for future in as_completed(futures):
                key = futures[future]
                records[key] = future.result()
                finished(key, records[key])
    return teacher, [records[k] for k in jobs]


def transfer_target(args, out: Path) -> Tuple[str, str]:
    """(name, folder holding test.json + test/) of the transfer set: --transfer-to's test split
    or --transfer-json/--transfer-images ("transfer"), cut into --transfer-tile px tiles at
    native resolution when that is set (then named e.g. "transfer_tile128")."""
    name = args.transfer_to or "transfer"
    folder = out / "data" / name
    if name == "gravel":
        ensure_gravel(args.gravel_source, str(folder))
    elif name == "mnfinder":
        ensure_mnfinder(str(folder))
    else:
        link_coco_split(str(folder), "test", args.transfer_json, args.transfer_images)
    tile = getattr(args, "transfer_tile", 0)
    if tile:
        name = f"{name}_tile{tile}"
        tiles = out / "data" / name
        ensure_tiles(str(folder), str(tiles), tile, ["test"])
        folder = tiles
    return name, str(folder)


def transfer(args, out: Path, dataset, teacher: Dict, runs: List[Dict]) -> str:
    """Evaluate the teacher and every student, as trained, on the transfer set's test split
    (``transfer_target``); writes OUT/transfer_<name>.md, .json and .png; returns the table."""
    name, folder = transfer_target(args, out)
    (test_name,) = register_splits(f"compare_{name}", folder, ["test"])
    names = [f"{dataset[0]}_{s}" for s in dataset[2]]
    size = args.transfer_image_size
    t_metrics = evaluate_run_on(
        args.config_file, teacher_spec(args, names), str(out / "teacher"), test_name, size
    )
    moved = []
    weights = teacher_weights_path(args, out)
    for run in runs:
        spec = make_spec(args, run["method"], run["seed"], names, weights)
        run_dir = str(out / "runs" / f"{run['method']}_seed{run['seed']}")
        metrics = evaluate_run_on(args.config_file, spec, run_dir, test_name, size)
        moved.append({**run, "metrics": metrics})
        print(
            f"  {name}: {run['method']} seed {run['seed']}: mIoU {metrics['mIoU']:.1f} "
            f"bIoU {metrics['bIoU']:.1f}",
            flush=True,
        )
    summary = summarise_runs(moved, METRICS)
    baselines = [b for b in BASELINES if b in summary]
    floor = box_floor([{"metrics": t_metrics}] + moved, METRICS)
    header = (
        f"Trained on {args.dataset}, evaluated unchanged on the {name} test split at "
        f"{size} px. Teacher: mIoU {t_metrics['mIoU']:.1f}, bIoU {t_metrics['bIoU']:.1f}; "
        "mean ± std over seeds.\n\n"
    )
    table = (
        header
        + markdown_table(
            comparison_headers(METRICS, baselines),
            comparison_rows(summary, METRICS, baselines, floor=floor),
        )
        + "\n"
        + floor_note(below_floor(summary, floor, METRICS), floor)
    )
    (out / f"transfer_{name}.md").write_text(table)
    with open(out / f"transfer_{name}.json", "w") as f:
        json.dump(
            {
                "teacher": t_metrics,
                "runs": moved,
                "summary": summary,
                "box_floor": floor,
                "image_size": size,
            },
            f,
            indent=2,
        )
    plot_method_bars(
        summary,
        out / f"transfer_{name}.png",
        metrics=METRICS,
        reference={m: t_metrics[m] for m in METRICS},
        floor=floor,
        title=f"trained on {args.dataset}, evaluated on {name}",
    )
    return table


def efficiency_table(
    args, out: Path, dataset, teacher: Dict, summary: Dict, floor: Optional[Dict] = None
) -> Tuple[str, Dict]:
    """Params, GFLOPs, latency of the teacher and of the (shared) student architecture, with
    each method's mIoU/bIoU; measured on the first test image with --latency-prompts prompts.
    ``floor`` (the prompt-box floor) adds its row: no parameters, no cost."""
    names = [f"{dataset[0]}_{s}" for s in dataset[2]]
    register_splits(*dataset)
    t_trainer = build_trainer(
        args.config_file, teacher_spec(args, names).opts(), str(out / "teacher")
    )
    method, seed = args.methods[0], args.seeds[0]
    s_spec = make_spec(args, method, seed, names, teacher_weights_path(args, out))
    s_trainer = build_trainer(
        args.config_file, s_spec.opts(), str(out / "runs" / f"{method}_seed{seed}")
    )
    sample, _ = test_sample(s_trainer.cfg, names[1], 0)
    sample = limit_prompts(sample, args.latency_prompts)
    t_eff = measure_inference(t_trainer.model, sample, reps=args.latency_reps, device=args.device)
    s_eff = measure_inference(s_trainer.model, sample, reps=args.latency_reps, device=args.device)
    rows = [
        [
            f"teacher {teacher_member(args).describe()}",
            f"{t_eff.params_m:.2f}",
            f"{t_eff.gflops:.2f}",
            f"{t_eff.latency_ms:.1f}",
            f"{teacher['metrics']['mIoU']:.1f}",
            f"{teacher['metrics']['bIoU']:.1f}",
        ]
    ]
    student = student_member(args).describe()
    for m, stats in summary.items():
        rows.append(
            [
                f"{student} + {m}",
                f"{s_eff.params_m:.2f}",
                f"{s_eff.gflops:.2f}",
                f"{s_eff.latency_ms:.1f}",
                f"{stats['mIoU']['mean']:.1f}",
                f"{stats['bIoU']['mean']:.1f}",
            ]
        )
    if floor:
        rows.append([BOX_FLOOR_LABEL, "0", "0", "0"] + [f"{floor[m]:.1f}" for m in METRICS])
    table = markdown_table(
        ["model", "params (M)", "GFLOPs/img", "latency (ms/img)", "mIoU", "bIoU"], rows
    )
    return table, {"teacher": t_eff.as_dict(), "student": s_eff.as_dict()}

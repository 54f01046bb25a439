"""The method comparison's plan: one teacher, then every (method, seed) student, run in this
process or in a pool of processes, plus the efficiency table and synthetic-to-real transfer.

``ComparisonSettings`` (and ``TransferSettings`` for the transfer set) hold what
``tools/compare_methods.py`` resolves from its flags; ``dataset`` = (prefix, folder,
[train, test]) as ``study_data.register_splits`` takes it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from concurrent.futures import as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from sard.reporting.efficiency import measure_inference
from sard.reporting.plots import plot_method_bars
from sard.reporting import tables
from sard.reporting.visuals import limit_prompts, test_sample

from . import flags
from .flags import RegimeFlags
from .study import (
    Member,
    RunSpec,
    Schedule,
    build_trainer,
    evaluate_run_on,
    spawn_pool,
    train_run_job,
)
from .study_data import (
    ensure_gravel,
    ensure_mnfinder,
    ensure_tiles,
    link_coco_split,
    register_splits,
)

METRICS = ("mIoU", "bIoU")
# Methods every other one is compared with, seed by seed (those of a study that ran): no
# distillation, the two published baselines the paper's claim names (SARD >= 3 bIoU over CWD and
# MGD), and SARD's own control (the same losses with W uniform).
BASELINES = ("none", "cwd", "mgd", "uniform")
# Where structure should matter most: boundaries of small objects and of crowded ones (3+
# touching neighbours).
BUCKET_METRICS = ("bIoU_small", "bIoU_nb3+")


@dataclass(frozen=True)
class ComparisonSettings:
    """Everything the comparison's runs share: the members, the students' schedule (the
    teacher's differs in its iterations only), the methods and seeds, where and how they run.

    ``teacher_weights``: a trained teacher, only evaluated; ``teacher_init``: weights the
    teacher is fine-tuned from for ``teacher_iters``; neither: trained from scratch.
    ``dataset`` names the training data in tables.
    """

    config_file: str
    teacher: Member
    student: Member
    schedule: Schedule
    teacher_iters: int
    image_size: int
    methods: Tuple[str, ...]
    seeds: Tuple[int, ...]
    dataset: str
    device: str = "cpu"
    teacher_seed: int = 0
    teacher_weights: str = ""
    teacher_init: str = ""
    regime: RegimeFlags = RegimeFlags()
    jobs: int = 1
    threads: int = 1
    latency_prompts: int = 16
    latency_reps: int = 5


@dataclass(frozen=True)
class TransferSettings:
    """The set every trained model is evaluated on unchanged: ``to`` ("gravel", converted from
    ``gravel_source``, or "mnfinder"), else a COCO file ``json_file`` with its ``images``
    folder; cut into ``tile`` px tiles at native resolution when ``tile`` > 0; fed to the
    models at ``image_size``."""

    to: str = ""
    json_file: str = ""
    images: str = ""
    tile: int = 0
    image_size: int = 256
    gravel_source: str = ""


def comparison_settings(args: argparse.Namespace) -> ComparisonSettings:
    """compare_methods' parsed flags (or the ``settings`` a study recorded in its results.json,
    as a namespace) as the comparison's plan takes them."""
    widen = (args.teacher_embed_dim, args.teacher_depth, args.teacher_heads)
    return ComparisonSettings(
        config_file=args.config_file,
        teacher=flags.member(
            args.teacher_family,
            args.teacher_size,
            args.teacher_patch,
            widen if args.teacher_embed_dim else (),
        ),
        student=flags.member(
            args.student_family,
            args.student_size,
            args.student_patch,
            decoder_dim=args.student_decoder_dim,
        ),
        schedule=Schedule(args.iters, args.batch, args.lr, args.prompts),
        teacher_iters=args.teacher_iters,
        image_size=args.image_size,
        methods=tuple(args.methods),
        seeds=tuple(args.seeds),
        dataset=args.dataset,
        device=args.device,
        teacher_seed=args.teacher_seed,
        teacher_weights=args.teacher_weights,
        teacher_init=args.teacher_init,
        regime=flags.regime_of(args),
        jobs=args.jobs,
        threads=args.threads,
        latency_prompts=args.latency_prompts,
        latency_reps=args.latency_reps,
    )


def make_spec(
    s: ComparisonSettings, method: str, seed: int, names: List[str], teacher_weights: str
) -> RunSpec:
    """Student run ``method``/``seed``: the shared student and schedule."""
    return RunSpec(
        method,
        seed,
        s.student,
        s.schedule,
        s.image_size,
        names[0],
        names[1],
        teacher=s.teacher,
        teacher_weights=teacher_weights,
        device=s.device,
        extra_opts=s.regime.opts(),
    )


def teacher_spec(s: ComparisonSettings, names: List[str], out: Optional[Path] = None) -> RunSpec:
    """Train the teacher (METHOD none; from ``teacher_init``'s weights when given, i.e.
    fine-tune it, through their weights-only copy OUT/teacher_init.pth) or, with
    ``teacher_weights``, only evaluate it."""
    iters = 0 if s.teacher_weights else s.teacher_iters
    start = s.teacher_weights or s.teacher_init
    if s.teacher_init and out is not None:
        start = weights_only(s.teacher_init, str(out / "teacher_init.pth"))
    extra = ["MODEL.WEIGHTS", os.path.abspath(start)] if start else []
    return RunSpec(
        "none",
        s.teacher_seed,
        s.teacher,
        dataclasses.replace(s.schedule, iters=iters),
        s.image_size,
        names[0],
        names[1],
        device=s.device,
        extra_opts=s.regime.opts() + extra,
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


def teacher_weights_path(s: ComparisonSettings, out: Path) -> str:
    """The teacher checkpoint the students learn from: ``teacher_weights`` when given
    (absolute), else the one this study trains in OUT/teacher."""
    if s.teacher_weights:
        return os.path.abspath(s.teacher_weights)
    return str(out / "teacher" / "model_final.pth")


def run_all(
    settings: ComparisonSettings,
    out: Path,
    dataset,
    on_progress: Optional[Callable[[Optional[Dict], List[Dict], List[str]], None]] = None,
) -> Tuple[Dict, List[Dict]]:
    """Teacher first (with the scratch runs alongside it when ``jobs`` > 1), then the rest.

    ``on_progress(teacher, finished, pending)`` is called after the teacher and after every
    run: the teacher's record (None until it is done), the finished runs' records in plan
    order, and the run folder names still to finish; a study writes its results.json there,
    so an interrupted call leaves its settings and finished runs behind.
    """
    names = [f"{dataset[0]}_{s}" for s in dataset[2]]
    t_spec = teacher_spec(settings, names, out)
    t_dir = out / "teacher"
    weights = teacher_weights_path(settings, out)
    jobs = [(m, s) for m in settings.methods for s in settings.seeds]
    job = lambda spec, run_dir, label: dict(  # noqa: E731
        config_file=settings.config_file,
        spec=spec,
        run_dir=str(run_dir),
        label=label,
        threads=settings.threads,
        dataset=dataset,
    )
    teacher_job = job(t_spec, t_dir, "teacher")
    student_jobs = {
        (m, s): job(make_spec(settings, m, s, names, weights), out / "runs" / f"{m}_seed{s}", m)
        for m, s in jobs
    }
    first = [k for k in student_jobs if k[0] == "none"]
    later = [k for k in student_jobs if k[0] != "none"]
    records: Dict[Tuple[str, int], Dict] = {}
    total = len(jobs) + 1
    done = [0]
    teacher: Optional[Dict] = None

    def finished(key, record) -> None:
        """Print one line per finished run, numbered; then ``on_progress``."""
        done[0] += 1
        m = record["metrics"]
        print(
            f"  [{done[0]}/{total}] {key}: mIoU {m['mIoU']:.1f} bIoU {m['bIoU']:.1f} "
            f"({record['wall_s']:.0f} s)",
            flush=True,
        )
        if on_progress is not None:
            pending = [Path(student_jobs[k]["run_dir"]).name for k in jobs if k not in records]
            on_progress(teacher, [records[k] for k in jobs if k in records], pending)

    if settings.jobs == 1:
        teacher = train_run_job(teacher_job)
        finished("teacher", teacher)
        for key in first + later:
            records[key] = train_run_job(student_jobs[key])
            finished(key, records[key])
    else:
        with spawn_pool(settings.jobs) as pool:
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


def comparison_table(
    summary: Dict, metrics: Sequence[str], baselines: Sequence[str], floor: Optional[Dict]
) -> str:
    """Markdown table of ``summary`` (``summarise_runs``) with paired differences to each of
    ``baselines`` present in it, the prompt-box ``floor`` row, and the note naming the
    methods below the floor."""
    present = [b for b in baselines if b in summary]
    return (
        tables.markdown_table(
            tables.comparison_headers(metrics, present),
            tables.comparison_rows(summary, metrics, present, floor=floor),
        )
        + "\n"
        + tables.floor_note(tables.below_floor(summary, floor, metrics), floor)
    )


def transfer_target(target: TransferSettings, out: Path) -> Tuple[str, str]:
    """(name, folder holding test.json + test/) of the transfer set: ``target.to``'s test split
    or ``target.json_file``/``images`` ("transfer"), cut into ``target.tile`` px tiles at
    native resolution when that is set (then named e.g. "transfer_tile128")."""
    name = target.to or "transfer"
    folder = out / "data" / name
    if name == "gravel":
        ensure_gravel(target.gravel_source, str(folder))
    elif name == "mnfinder":
        ensure_mnfinder(str(folder))
    else:
        link_coco_split(str(folder), "test", target.json_file, target.images)
    tile = target.tile
    if tile:
        name = f"{name}_tile{tile}"
        tiles = out / "data" / name
        ensure_tiles(str(folder), str(tiles), tile, ["test"])
        folder = tiles
    return name, str(folder)


def transfer(
    settings: ComparisonSettings,
    target: TransferSettings,
    out: Path,
    dataset,
    teacher: Dict,
    runs: List[Dict],
) -> str:
    """Evaluate the teacher and every student, as trained, on the transfer set's test split
    (``transfer_target``); writes OUT/transfer_<name>.md, .json and .png; returns the table."""
    name, folder = transfer_target(target, out)
    (test_name,) = register_splits(f"compare_{name}", folder, ["test"])
    names = [f"{dataset[0]}_{s}" for s in dataset[2]]
    size = target.image_size
    t_metrics = evaluate_run_on(
        settings.config_file, teacher_spec(settings, names), str(out / "teacher"), test_name, size
    )
    moved = []
    weights = teacher_weights_path(settings, out)
    for run in runs:
        spec = make_spec(settings, run["method"], run["seed"], names, weights)
        run_dir = str(out / "runs" / f"{run['method']}_seed{run['seed']}")
        metrics = evaluate_run_on(settings.config_file, spec, run_dir, test_name, size)
        moved.append({**run, "metrics": metrics})
        print(
            f"  {name}: {run['method']} seed {run['seed']}: mIoU {metrics['mIoU']:.1f} "
            f"bIoU {metrics['bIoU']:.1f}",
            flush=True,
        )
    summary = tables.summarise_runs(moved, METRICS)
    floor = tables.box_floor([{"metrics": t_metrics}] + moved, METRICS)
    header = (
        f"Trained on {settings.dataset}, evaluated unchanged on the {name} test split at "
        f"{size} px. Teacher: mIoU {t_metrics['mIoU']:.1f}, bIoU {t_metrics['bIoU']:.1f}; "
        "mean ± std over seeds.\n\n"
    )
    table = header + comparison_table(summary, METRICS, BASELINES, floor)
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
        title=f"trained on {settings.dataset}, evaluated on {name}",
    )
    return table


def efficiency_table(
    settings: ComparisonSettings,
    out: Path,
    dataset,
    teacher: Dict,
    summary: Dict,
    floor: Optional[Dict] = None,
) -> Tuple[str, Dict]:
    """Params, GFLOPs, latency of the teacher and of the (shared) student architecture, with
    each method's mIoU/bIoU; measured on the first test image with ``latency_prompts`` prompts.
    ``floor`` (the prompt-box floor) adds its row: no parameters, no cost."""
    names = [f"{dataset[0]}_{s}" for s in dataset[2]]
    register_splits(*dataset)
    t_trainer = build_trainer(
        settings.config_file, teacher_spec(settings, names).opts(), str(out / "teacher")
    )
    method, seed = settings.methods[0], settings.seeds[0]
    s_spec = make_spec(settings, method, seed, names, teacher_weights_path(settings, out))
    s_trainer = build_trainer(
        settings.config_file, s_spec.opts(), str(out / "runs" / f"{method}_seed{seed}")
    )
    sample, _ = test_sample(s_trainer.cfg, names[1], 0)
    sample = limit_prompts(sample, settings.latency_prompts)
    t_eff = measure_inference(
        t_trainer.model, sample, reps=settings.latency_reps, device=settings.device
    )
    s_eff = measure_inference(
        s_trainer.model, sample, reps=settings.latency_reps, device=settings.device
    )
    rows = [
        [
            f"teacher {settings.teacher.describe()}",
            f"{t_eff.params_m:.2f}",
            f"{t_eff.gflops:.2f}",
            f"{t_eff.latency_ms:.1f}",
            f"{teacher['metrics']['mIoU']:.1f}",
            f"{teacher['metrics']['bIoU']:.1f}",
        ]
    ]
    student = settings.student.describe()
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
        rows.append([tables.BOX_FLOOR_LABEL, "0", "0", "0"] + [f"{floor[m]:.1f}" for m in METRICS])
    table = tables.markdown_table(
        ["model", "params (M)", "GFLOPs/img", "latency (ms/img)", "mIoU", "bIoU"], rows
    )
    return table, {"teacher": t_eff.as_dict(), "student": s_eff.as_dict()}

#!/usr/bin/env python
"""How far do images alone get me? Four students, same teacher, same schedule and seeds.

    python tools/label_free_study.py --dataset gravel --gravel-source ../shared/data/gravel_fh \
        --out output/label_free_gravel
    python tools/label_free_study.py --dataset mnfinder --teacher-iters 1500 \
        --out output/label_free_mnfinder

Data (labelled tiles cut at native resolution, --tile; evaluation on the labelled test split):

* gravel: the 6 labelled photos of --gravel-source (train) and its test photo; unlabeled = the
  same 6 photos as tiles WITHOUT their masks, plus scikit-image's gravel.png cut likewise;
* mnfinder: its own train/test splits; unlabeled = its train images (as tiles) without masks.

Runs (one at a time, in this process; each a folder under OUT with results.json, skipped when
done, resumed when interrupted):

* teacher: the CPU-scale teacher of tools/compare_methods.py (EfficientSAM family widened),
  trained on the labelled tiles with --teacher-prompt prompts (point by default: its automatic
  masks come from single points), or given by --teacher-weights;
* for every seed, four EfficientSAM-tiny students trained with box prompts:
  ``scratch`` (METHOD none, labels), ``labels`` (SARD, labels), ``label_free`` (SARD with
  MODEL.SARD.PSEUDO_LABELS on the unlabeled folders only: no label reaches the student) and
  ``label_free+labels`` (both, --unlabeled-fraction of every epoch unlabeled).

Reports in OUT: table.md (the prompt-box floor, the teacher and the four students, mean ± std
over seeds, paired differences and the share of the labelled student's result recovered),
pseudo_labels.md (the teacher's pseudo-labels against the ground truth of the labelled train
tiles), results.json, bars.png and pseudo_labels.png. Pseudo-labels and teacher taps are cached
in OUT/cache, shared by every run.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from studies import preamble  # noqa: F401  (before torch and sard: see its docstring)

import numpy as np
from cli_flags import add_flag_table
from studies.flags import check_files, check_positive
from studies.study import (
    TINY_SAM_CONFIG,
    Member,
    RunSpec,
    Schedule,
    build_trainer,
    start_study,
    train_run,
    write_results,
    widened_member,
)

from sard.reporting.tables import BOX_FLOOR_LABEL, box_floor

STUDENTS = ("scratch", "labels", "label_free", "label_free+labels")
FLOOR = BOX_FLOOR_LABEL
TEACHER = ("efficient_sam", "tiny", 128, 4, 4)  # compare_methods' CPU teacher
# The pseudo-label generator's settings: (name, type, default, help), each a --flag and the key
# MODEL.SARD.PSEUDO_LABELS.<NAME> of every label-free run.
PSEUDO_LABEL_FLAGS = (
    ("points_per_side", int, 16, "pseudo-label point grid"),
    ("pred_iou_thresh", float, 0.5, "pseudo-label IoU filter"),
    ("stability_score_thresh", float, 0.8, "pseudo-label stability filter"),
    ("box_nms_thresh", float, 0.7, "pseudo-label box NMS"),
    ("min_area", int, 4, "pseudo-masks below this are dropped"),
    ("max_area_fraction", float, 0.5, "larger pseudo-masks are dropped"),
)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", required=True, choices=("gravel", "mnfinder"))
    p.add_argument("--out", required=True, help="output folder (data, runs, cache, tables)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--students", nargs="+", default=list(STUDENTS), help=f"of {STUDENTS}")
    p.add_argument("--iters", type=int, default=300, help="student iterations")
    p.add_argument("--teacher-iters", type=int, default=1500, help="teacher iterations")
    p.add_argument("--teacher-weights", default="", help="a trained teacher (model_final.pth)")
    p.add_argument("--teacher-prompt", default="point", choices=("point", "box", "box+point"))
    p.add_argument("--image-size", type=int, default=128, help="model input (px)")
    p.add_argument("--tile", type=int, default=128, help="tile side at native resolution (px)")
    p.add_argument("--batch", type=int, default=2, help="images per iteration")
    p.add_argument("--prompts", type=int, default=32, help="prompts per training image")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--unlabeled-fraction",
        type=float,
        default=0.5,
        help="label_free+labels: share of each epoch drawn from the unlabeled images",
    )
    add_flag_table(p, PSEUDO_LABEL_FLAGS)
    p.add_argument(
        "--gravel-source",
        default="",
        help="gravel: the folder holding train/ and test/ with X.jpg and X_mask.png",
    )
    p.add_argument(
        "--no-skimage-gravel",
        action="store_true",
        help="gravel: leave scikit-image's gravel.png out of the unlabeled images",
    )
    p.add_argument(
        "--quality-tiles",
        type=int,
        default=100,
        help="labelled train tiles (a seeded random sample) on which the pseudo-labels are "
        "compared with the ground truth (0 = all)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--config-file", default=TINY_SAM_CONFIG)
    args = p.parse_args(argv)
    unknown = set(args.students) - set(STUDENTS)
    if unknown:
        p.error(f"unknown student(s) {sorted(unknown)}; choose from {STUDENTS}")
    if not 0 < args.unlabeled_fraction < 1:
        p.error("--unlabeled-fraction must be in (0, 1)")
    check_positive(p, args, ("iters", "teacher_iters", "batch", "prompts", "tile", "image_size"))
    if args.dataset == "gravel" and not args.gravel_source:
        p.error(
            "--dataset gravel needs --gravel-source: the folder holding train/ and test/ with "
            "X.jpg and X_mask.png"
        )
    check_files(p, args, ("teacher_weights",))
    return args


# ---------------------------------------------------------------------- data
def write_image_tiles(image: np.ndarray, folder: Path, stem: str, tile: int) -> None:
    """Cut an (H, W, 3) uint8 image into ``tile`` px tiles (the grid of sard.data.tiling)."""
    from PIL import Image

    from sard.data.tiling import tile_starts

    folder.mkdir(parents=True, exist_ok=True)
    for top in tile_starts(image.shape[0], tile):
        for left in tile_starts(image.shape[1], tile):
            crop = image[top : top + tile, left : left + tile]
            Image.fromarray(crop).save(folder / f"{stem}__y{top}_x{left}.png")


def prepare_data(args, out: Path) -> Tuple[Tuple[str, str, List[str]], List[str]]:
    """Labelled tiles (prefix, folder, [train, test]) and the unlabeled folders."""
    from studies.study_data import ensure_gravel, ensure_mnfinder, ensure_tiles

    source = out / "data" / args.dataset
    if args.dataset == "gravel":
        ensure_gravel(args.gravel_source, str(source))
    else:
        ensure_mnfinder(str(source))
    tiles = out / "data" / f"{args.dataset}_tile{args.tile}"
    ensure_tiles(str(source), str(tiles), args.tile, ["train", "test"])
    # The labelled train tiles' own folder, read as images only: the same pixels, no masks.
    unlabeled = [str((tiles / "train").resolve())]
    if args.dataset == "gravel" and not args.no_skimage_gravel:
        folder = out / "data" / f"skimage_gravel_tile{args.tile}"
        if not folder.is_dir():
            from skimage import data as skdata

            gray = skdata.gravel()
            write_image_tiles(np.stack([gray] * 3, axis=-1), folder, "skimage_gravel", args.tile)
        unlabeled.append(str(folder.resolve()))
    return (f"lf_{args.dataset}", str(tiles), ["train", "test"]), unlabeled


# ---------------------------------------------------------------------- runs
def student_member() -> Member:
    return Member("efficient_sam", "tiny")


def teacher_member() -> Member:
    return widened_member(*TEACHER)


def pseudo_opts(args) -> List[str]:
    """MODEL.SARD.PSEUDO_LABELS: enabled, with the values of ``PSEUDO_LABEL_FLAGS``."""
    p = "MODEL.SARD.PSEUDO_LABELS."
    opts = [p + "ENABLED", "True"]
    for name, *_ in PSEUDO_LABEL_FLAGS:
        opts += [p + name.upper(), str(getattr(args, name))]
    return opts


def cache_opts(cache_dir: str) -> List[str]:
    """The teacher cache (taps and pseudo-labels) shared by every run of the study."""
    return ["MODEL.SARD.CACHE.ENABLED", "True", "MODEL.SARD.CACHE.DIR", cache_dir]


def teacher_spec(args, names: Sequence[str]) -> RunSpec:
    extra = ["INPUT.PROMPT.TYPE", args.teacher_prompt]
    iters = args.teacher_iters
    if args.teacher_weights:  # evaluated, not trained
        extra += ["MODEL.WEIGHTS", os.path.abspath(args.teacher_weights)]
        iters = 0
    schedule = Schedule(iters, args.batch, args.lr, args.prompts)
    return RunSpec(
        "none",
        0,
        teacher_member(),
        schedule,
        args.image_size,
        names[0],
        names[1],
        device=args.device,
        extra_opts=extra,
    )


def student_spec(
    args, student: str, seed: int, names, unlabeled, weights: str, cache_dir: str
) -> RunSpec:
    """The run of ``student`` (see STUDENTS) for ``seed``."""
    method = "none" if student == "scratch" else "sard"
    # Every SARD student reads the teacher's taps through the same (fp16) cache.
    extra: List[str] = [] if student == "scratch" else cache_opts(cache_dir)
    if student.startswith("label_free"):
        train = list(unlabeled) if student == "label_free" else [names[0], *unlabeled]
        extra += ["DATASETS.TRAIN", "(" + "".join(f"'{t}', " for t in train) + ")"]
        extra += pseudo_opts(args)
        if student == "label_free+labels":
            extra += ["MODEL.SARD.PSEUDO_LABELS.UNLABELED_FRACTION", str(args.unlabeled_fraction)]
    return RunSpec(
        method,
        seed,
        student_member(),
        Schedule(args.iters, args.batch, args.lr, args.prompts),
        args.image_size,
        names[0],
        names[1],
        teacher=teacher_member(),
        teacher_weights=weights,
        device=args.device,
        extra_opts=extra,
    )


def evaluate_with_box_prompts(config: str, spec: RunSpec, run_dir: str, test: str) -> Dict:
    """A finished run's final weights evaluated with box prompts (the teacher trains with
    points); written under run_dir/inference as the run's own evaluation."""
    trainer = build_trainer(config, spec.opts() + ["INPUT.PROMPT.TYPE", "box"], run_dir)
    return dict(next(iter(trainer.test()[test].values())))


# ---------------------------------------------------------------------- pseudo-label quality
def pseudo_label_quality(
    config: str,
    spec: RunSpec,
    run_dir: str,
    train: str,
    picture: Path,
    count: int = 0,
    shown: int = 4,
) -> Dict[str, float]:
    """The teacher's pseudo-labels of ``count`` labelled train tiles (a random sample with seed
    0; 0 = all), unflipped as the evaluation mapper prepares them, against their ground truth;
    draws the first ``shown`` tiles holding at least 3 objects."""
    from sard.data.masks import decode_many
    from sard.engine.builders import build_mapper, dataset_records
    from sard.distill.pseudo_label_quality import LabelQuality
    from sard.reporting.plots import _figure, _save, instance_overlay

    trainer = build_trainer(config, spec.opts() + ["SOLVER.MAX_ITER", "1"], run_dir)
    labeler = trainer.model.pseudo_labeler
    mapper = build_mapper(trainer.cfg, is_train=False)
    quality = LabelQuality()
    panels = []
    records = dataset_records([train])
    if 0 < count < len(records):
        chosen = np.random.default_rng(0).choice(len(records), size=count, replace=False)
        records = [records[i] for i in sorted(chosen)]
    for record in records:
        sample = mapper(dict(record))
        hw = tuple(sample["input_hw"])
        labels = labeler.labels_for(sample["image"], hw, None)
        pred = decode_many(labels.rles, *hw)
        gt = sample["gt_masks"].numpy()[:, : hw[0], : hw[1]]
        quality.add(pred, gt)
        if len(panels) < shown and len(gt) >= 3:
            image = sample["image"][:, : hw[0], : hw[1]].permute(1, 2, 0).numpy().astype(np.uint8)
            panels.append((image, gt, pred))
    if panels:
        figure = _figure(2.4 * len(panels), 5.2, 90)
        axes = figure.subplots(2, len(panels), squeeze=False)
        for k, (image, gt, pred) in enumerate(panels):
            for row, (masks, title) in enumerate(
                [(gt, f"ground truth ({len(gt)})"), (pred, f"pseudo-labels ({len(pred)})")]
            ):
                axes[row, k].imshow(instance_overlay(image, masks), interpolation="nearest")
                axes[row, k].set_title(title, fontsize=8)
                axes[row, k].set_axis_off()
        figure.tight_layout()
        _save(figure, picture)
    return quality.summary()


# ---------------------------------------------------------------------- tables
def recovered(summary: Dict, metric: str) -> str:
    """label_free's mean as a share of labels' mean, and of labels' gain over scratch."""
    if "label_free" not in summary or "labels" not in summary:
        return ""
    lf, lab = summary["label_free"][metric]["mean"], summary["labels"][metric]["mean"]
    text = f"{100.0 * lf / lab:.0f} % of the labelled student's {metric}" if lab > 0 else ""
    if "scratch" in summary:
        base = summary["scratch"][metric]["mean"]
        if lab - base > 0.5:
            text += f", {100.0 * (lf - base) / (lab - base):.0f} % of its gain over scratch"
    return text


def report(args, out: Path, floor: Dict, teacher: Dict, teacher_box: Dict, runs, quality) -> str:
    from sard.reporting import comparison_headers, comparison_rows, markdown_table
    from sard.reporting import plot_method_bars, summarise_runs

    metrics = ("mIoU", "bIoU")
    summary = summarise_runs(runs, metrics)
    baselines = [b for b in ("labels", "scratch") if b in summary]
    rows = comparison_rows(summary, metrics, baselines)
    blank = ["—"] * (len(rows[0]) - 4) if rows else []
    rows.insert(0, [FLOOR, "—", f"{floor['mIoU']:.1f}", f"{floor['bIoU']:.1f}", *blank])
    rows.insert(
        1,
        [
            f"teacher ({args.teacher_prompt}-trained), box prompts",
            "—",
            f"{teacher_box['mIoU']:.1f}",
            f"{teacher_box['bIoU']:.1f}",
            *blank,
        ],
    )
    below = [m for m in summary if summary[m]["mIoU"]["mean"] < floor["mIoU"]]
    trained = (
        f"given ({args.teacher_weights})"
        if args.teacher_weights
        else f"trained {args.teacher_iters} iterations on the labelled tiles"
    )
    header = (
        f"{args.dataset}, {args.tile} px tiles at {args.image_size} px; teacher "
        f"{teacher_member().describe()} {trained} with {args.teacher_prompt} prompts "
        f"({args.teacher_prompt} mIoU {teacher['metrics']['mIoU']:.1f}); students efficient_sam:tiny, {args.iters} "
        f"iterations x {args.batch} images x {args.prompts} box prompts, seeds "
        f"{' '.join(map(str, args.seeds))}; evaluated with box prompts on the labelled test "
        "tiles; mean ± std over seeds; Δ paired over seeds (± std, seeds won).\n\n"
    )
    table = markdown_table(comparison_headers(metrics, baselines), rows)
    notes = []
    for metric in metrics:
        text = recovered(summary, metric)
        if text:
            notes.append(f"- label_free reaches {text}.")
    if below:
        notes.append(f"- below the prompt-box floor (mIoU): {', '.join(below)}.")
    text = header + table + ("\n" + "\n".join(notes) + "\n" if notes else "")
    (out / "table.md").write_text(text)
    q = quality
    (out / "pseudo_labels.md").write_text(
        "The teacher's pseudo-labels of labelled train tiles against their ground truth "
        f"(points per side {args.points_per_side}, IoU > {args.pred_iou_thresh:g}, stability >= "
        f"{args.stability_score_thresh:g}, NMS {args.box_nms_thresh:g}, area "
        f"{args.min_area}-{args.max_area_fraction:g} of the tile):\n\n"
        + markdown_table(
            [
                "tiles",
                "objects/tile",
                "pseudo-masks/tile",
                "precision@0.5",
                "recall@0.5",
                "best-mask mIoU",
            ],
            [
                [
                    f"{q['images']:.0f}",
                    f"{q['objects_per_image']:.1f}",
                    f"{q['masks_per_image']:.1f}",
                    f"{q['precision']:.1f}",
                    f"{q['recall']:.1f}",
                    f"{q['best_mIoU']:.1f}",
                ]
            ],
        )
    )
    plot_method_bars(
        summary,
        out / "bars.png",
        metrics=metrics,
        reference={"mIoU": floor["mIoU"], "bIoU": floor["bIoU"]},
        title=f"{args.dataset}: mean ± std over seeds; dashed: the prompt-box floor",
    )
    return text


def main(argv: Optional[List[str]] = None) -> Dict:
    start = time.perf_counter()
    args = parse_args(argv)
    out = start_study(args.threads, args.out)
    from sard.data.paths import register_dataset_paths
    from studies.study_data import register_splits

    print(f"[1/4] data: {args.dataset}, {args.tile} px tiles", flush=True)
    dataset, unlabeled = prepare_data(args, out)
    names = register_splits(*dataset)
    register_dataset_paths("DATASETS.TRAIN", unlabeled, semantic=False, unlabeled_ok=True)
    cache_dir = str((out / "cache").resolve())
    config = args.config_file

    print("[2/4] teacher", flush=True)
    t_spec = teacher_spec(args, names)
    t_dir = str(out / "teacher")
    teacher, _ = train_run(config, t_spec, t_dir, "teacher")
    teacher_box = evaluate_with_box_prompts(config, t_spec, t_dir, names[1])
    weights = (
        os.path.abspath(args.teacher_weights)
        if args.teacher_weights
        else str((out / "teacher" / "model_final.pth").resolve())
    )
    # The evaluator reports the floor (each ground-truth box filled) beside every box-prompt run.
    floor = box_floor([{"metrics": teacher_box}])
    print(
        f"  teacher: {args.teacher_prompt} mIoU {teacher['metrics']['mIoU']:.1f}, box mIoU "
        f"{teacher_box['mIoU']:.1f} bIoU {teacher_box['bIoU']:.1f}; box floor mIoU "
        f"{floor['mIoU']:.1f} bIoU {floor['bIoU']:.1f}",
        flush=True,
    )

    print("[3/4] pseudo-labels of the labelled train tiles against their masks", flush=True)
    spec = student_spec(args, "label_free", args.seeds[0], names, unlabeled, weights, cache_dir)
    quality = pseudo_label_quality(
        config,
        spec,
        str(out / "pseudo_label_check"),
        names[0],
        out / "pseudo_labels.png",
        args.quality_tiles,
    )
    print(
        f"  {quality['masks_per_image']:.1f} pseudo-masks per tile for "
        f"{quality['objects_per_image']:.1f} objects: precision {quality['precision']:.1f}, "
        f"recall {quality['recall']:.1f}, best-mask mIoU {quality['best_mIoU']:.1f}",
        flush=True,
    )

    print(f"[4/4] students: {len(args.students)} x {len(args.seeds)} seeds", flush=True)
    runs = []
    jobs = [(s, seed) for s in args.students for seed in args.seeds]
    for k, (student, seed) in enumerate(jobs, 1):
        spec = student_spec(args, student, seed, names, unlabeled, weights, cache_dir)
        run_dir = str(out / "runs" / f"{student}_seed{seed}")
        record, _ = train_run(config, spec, run_dir, student)
        record["method"] = student
        runs.append(record)
        m = record["metrics"]
        print(
            f"  [{k}/{len(jobs)}] {student} seed {seed}: mIoU {m['mIoU']:.1f} bIoU "
            f"{m['bIoU']:.1f} ({record['wall_s']:.0f} s)",
            flush=True,
        )
    text = report(args, out, floor, teacher, teacher_box, runs, quality)
    payload = {
        "settings": vars(args),
        "floor": floor,
        "teacher": teacher,
        "teacher_box_prompts": teacher_box,
        "pseudo_label_quality": quality,
        "runs": runs,
        "wall_s": time.perf_counter() - start,
    }
    write_results(out, payload)
    print("\n" + text)
    print(f"wrote {out}/table.md, pseudo_labels.md, results.json, bars.png, pseudo_labels.png")
    return payload


if __name__ == "__main__":
    main()

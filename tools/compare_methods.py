#!/usr/bin/env python
"""Distillation methods side by side: same teacher, same student, same schedule and seeds.

    python tools/compare_methods.py --dataset synth --out output/compare_synth
    python tools/compare_methods.py --dataset synth --methods none cwd mgd sard --seeds 0 1 2 \
        --jobs 2 --out output/compare_synth
    python tools/compare_methods.py --dataset gravel --gravel-source ../shared/data/gravel_fh \
        --out output/compare_gravel
    python tools/compare_methods.py --dataset mnfinder --scale gpu --device cuda --out ...
    python tools/compare_methods.py --train-json train.json --train-images train/ \
        --test-json test.json --test-images test/ --tile 128 \
        --transfer-json other.json --transfer-images other/ --transfer-tile 128 --out ...

The teacher (a SAM-family model twice the student's width and depth, METHOD "none", seed
--teacher-seed) is trained once per output folder, or loaded with --teacher-weights. Then for
every (method, seed) an EfficientSAM-family student is trained with the same schedule: none
(scratch), kd, cwd, mgd, uniform, sard and SARD's W(i) ablations sard_E, sard_C, sard_D,
sard_EC (betas through config). Every run is a folder under OUT/runs; a run with results.json
is skipped and one with checkpoints resumes, so a crash loses nothing; OUT/results.json is
rewritten after every finished run (its "pending" lists the runs left), so a stopped call can
be reported as it stands. One call writes into OUT at a time: a second call on the same folder
is refused while the first runs (use another --out and study_report). At the end it writes
OUT/table.md, OUT/buckets.md (small and crowded objects), OUT/results.json, OUT/bars.png and
OUT/efficiency.md (params, GFLOPs, latency and mIoU of the teacher and the students) for the
runs of this call; tools/study_report.py reports every finished run of OUT (and of other
folders of the same setting) as one table. With
--transfer-to gravel (and --gravel-source) every trained model is also evaluated, unchanged, on
the real gravel test image (OUT/transfer_gravel.md/.json/.png): synthetic-to-real transfer
at no training cost.

Datasets: synth = synthetic RockFrag generated under OUT/data (train/test); gravel = the real
gravel photos (6 train, 1 test image) converted from --gravel-source; mnfinder = the mnfinder
package's microscopy (its own train/test splits; at cpu scale cut into 128 px tiles at native
resolution, --tile, so micronuclei of 6-30 px² are not resized away); or any COCO instance
dataset with --train-json/--train-images/--test-json/--test-images (linked, not copied, into
OUT/data/custom; --tile cuts large images into tiles at native resolution as for mnfinder).
--transfer-json/--transfer-images evaluate every trained model, unchanged, on another labelled
set (--transfer-tile cuts it into tiles the same way). --scale picks the default
sizes: cpu (tiny models, 128-256 px, a few hours on 2 cores for everything) or gpu
(EfficientSAM-S teacher, EfficientSAM-Ti student, larger images and schedules; not run here).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from studies import preamble  # noqa: F401  (before torch and sard: see its docstring)

from studies import flags
from studies.comparison import (
    TransferSettings,
    comparison_settings,
    efficiency_table,
    run_all,
    transfer,
)
from studies.report import label_and_setup, write_report
from studies.study import (
    METHOD_VARIANTS,
    TINY_SAM_CONFIG,
    start_study,
    write_results,
)
from studies.study_data import (
    ensure_gravel,
    ensure_mnfinder,
    ensure_synth,
    ensure_tiles,
    link_coco_split,
    register_splits,
)

from sard.data.synthetic import SynthConfig

ALL_METHODS = [
    "none",
    "kd",
    "cwd",
    "mgd",
    "uniform",
    "sard",
    "sard_E",
    "sard_C",
    "sard_D",
    "sard_EC",
]
# Default sizes per scale, one row per setting: (cpu, gpu); dataset-specific image sizes and
# tiles per dataset. Every value has a flag.
SCALE_NAMES = ("cpu", "gpu")
SCALE_TABLE: Dict[str, Tuple] = {
    "teacher": (("efficient_sam", "tiny", 128, 4, 4), ("efficient_sam", "s", 0, 0, 0)),
    "student": ("tiny", "ti"),
    "teacher_iters": (600, 6000),
    "iters": (300, 3000),
    "batch": (2, 8),
    "prompts": (32, 32),
    "lr": (1e-3, 2e-4),
    "num_train": (64, 800),
    "num_test": (16, 100),
    "device": ("cpu", "cuda"),
    "image_size": (
        {"synth": 128, "gravel": 256, "mnfinder": 128, "custom": 128},
        {"synth": 256, "gravel": 512, "mnfinder": 512, "custom": 512},
    ),
    "tile": (
        {"synth": 0, "gravel": 0, "mnfinder": 128, "custom": 0},
        {"synth": 0, "gravel": 0, "mnfinder": 0, "custom": 0},
    ),
}
# {scale: {setting: value}}
SCALES: Dict[str, Dict] = {
    name: {key: values[i] for key, values in SCALE_TABLE.items()}
    for i, name in enumerate(SCALE_NAMES)
}
# Fragment sizes of the synthetic set, as fractions of the image side (8-32 px at 128 px).
SYNTH_FRAGMENT = (1 / 16, 1 / 4)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command line -> namespace, unset sizes filled from --scale and --dataset."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", choices=("synth", "gravel", "mnfinder"))
    custom = p.add_argument_group(
        "any COCO dataset (instead of --dataset): instance masks as polygons or RLE"
    )
    for split in ("train", "test"):
        custom.add_argument(f"--{split}-json", default="", help=f"COCO file of the {split} split")
        custom.add_argument(f"--{split}-images", default="", help=f"image folder of --{split}-json")
    custom.add_argument(
        "--transfer-json", default="", help="another labelled set: every model evaluated on it"
    )
    custom.add_argument("--transfer-images", default="", help="image folder of --transfer-json")
    custom.add_argument(
        "--transfer-tile",
        type=int,
        default=0,
        help="cut the transfer set into tiles at native resolution (0: whole images resized to "
        "--transfer-image-size)",
    )
    p.add_argument("--out", required=True, help="output folder (runs, tables, figures)")
    p.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    p.add_argument("--methods", nargs="+", default=ALL_METHODS, help=f"of {list(METHOD_VARIANTS)}")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--iters", type=int, help="student iterations (every method)")
    p.add_argument("--teacher-iters", type=int)
    p.add_argument("--teacher-weights", default="", help="a trained teacher (model_final.pth)")
    p.add_argument(
        "--teacher-init",
        default="",
        help="train the teacher --teacher-iters from these weights (fine-tune, e.g. the shipped "
        "synthetic teacher on real data) instead of from scratch",
    )
    p.add_argument("--teacher-seed", type=int, default=0)
    p.add_argument(
        "--teacher-family",
        choices=flags.FAMILIES,
        help="cpu/gpu: efficient_sam (sam trains far slower from scratch)",
    )
    p.add_argument("--teacher-size", help="family size (cpu: tiny, widened; gpu: s)")
    p.add_argument("--teacher-embed-dim", type=int, help="teacher width override (cpu: 128)")
    p.add_argument("--teacher-depth", type=int, help="teacher depth override (cpu: 4)")
    p.add_argument("--teacher-heads", type=int, help="teacher heads override (cpu: 4)")
    p.add_argument("--student-size", help="student size: tiny (cpu), ti, s (EfficientSAM)")
    flags.add_patch_flags(p)
    flags.add_regime_flags(p, "training augmentation of every run")
    p.add_argument("--image-size", type=int)
    p.add_argument(
        "--tile",
        type=int,
        help="cut gravel/mnfinder/custom images into TILE px tiles at native resolution (0: whole "
        "images resized; cpu mnfinder default 128: micronuclei survive, steps stay cheap)",
    )
    p.add_argument("--batch", type=int)
    p.add_argument("--prompts", type=int, help="box prompts per training image")
    p.add_argument("--lr", type=float)
    p.add_argument("--num-train", type=int, help="synth: training images")
    p.add_argument("--num-test", type=int, help="synth: test images")
    p.add_argument("--data-seed", type=int, default=0, help="synth: generator seed")
    p.add_argument(
        "--fragment-px",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        help="synth: fragment size range in px (default: 1/16 to 1/4 of --image-size)",
    )
    p.add_argument(
        "--gravel-source",
        default="",
        help="gravel: the folder holding train/ and test/ with X.jpg and X_mask.png "
        "(needed by --dataset gravel and --transfer-to gravel)",
    )
    p.add_argument(
        "--transfer-to",
        choices=("gravel", "mnfinder"),
        help="also evaluate every trained run, unchanged, on this dataset's test split",
    )
    p.add_argument(
        "--transfer-image-size",
        type=int,
        help="input size for the transfer set (default: --image-size with --transfer-tile, "
        "else 256; EfficientSAM students take any size)",
    )
    p.add_argument("--device")
    p.add_argument("--jobs", type=int, default=1, help="runs trained in parallel processes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--latency-prompts", type=int, default=16)
    p.add_argument("--latency-reps", type=int, default=5)
    p.add_argument("--config-file", default=TINY_SAM_CONFIG)
    args = p.parse_args(argv)
    _check_data_flags(p, args)
    unknown = [m for m in args.methods if m not in METHOD_VARIANTS]
    if unknown:
        p.error(f"unknown method(s) {unknown}; choose from {list(METHOD_VARIANTS)}")
    flags.check_files(p, args, ("teacher_weights", "teacher_init"))
    if args.teacher_init and args.teacher_weights:
        p.error("--teacher-init fine-tunes a teacher, --teacher-weights uses one as is: not both")
    scale = SCALES[args.scale]
    t_family, t_size, t_dim, t_depth, t_heads = scale["teacher"]
    defaults = dict(
        iters=scale["iters"],
        teacher_iters=scale["teacher_iters"],
        batch=scale["batch"],
        prompts=scale["prompts"],
        lr=scale["lr"],
        num_train=scale["num_train"],
        num_test=scale["num_test"],
        device=scale["device"],
        student_size=scale["student"],
        image_size=scale["image_size"][args.dataset],
        tile=scale["tile"][args.dataset],
        teacher_embed_dim=t_dim,
        teacher_depth=t_depth,
        teacher_heads=t_heads,
        teacher_family=t_family,
        teacher_size=t_size,
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    flags.check_positive(p, args, ("iters", "teacher_iters", "batch", "prompts", "jobs", "threads"))
    if args.tile < 0:
        p.error("--tile must be 0 (no tiling) or positive")
    flags.check_patches(p, args)
    flags.check_regime_flags(p, args)
    if args.transfer_image_size is None:
        args.transfer_image_size = args.image_size if args.transfer_tile else 256
    if args.fragment_px and not 0 < args.fragment_px[0] <= args.fragment_px[1]:
        p.error("--fragment-px needs 0 < MIN <= MAX")
    if args.tile and args.dataset == "synth":
        p.error("--tile applies to gravel and mnfinder (synth is generated at --image-size)")
    return args


CUSTOM_FLAGS = ("train_json", "train_images", "test_json", "test_images")


def _check_data_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--dataset, or all four --train/--test flags (then args.dataset = "custom"); files exist;
    --transfer-json and --transfer-images together, and not with --transfer-to."""
    given = [f for f in CUSTOM_FLAGS if getattr(args, f)]
    if args.dataset and given:
        p.error(f"give --dataset or --train-json/--test-json..., not both (got {given})")
    if not args.dataset:
        missing = [f"--{f.replace('_', '-')}" for f in CUSTOM_FLAGS if not getattr(args, f)]
        if missing:
            p.error(f"give --dataset, or a COCO dataset with all of {missing} as well")
        args.dataset = "custom"
    for flag in CUSTOM_FLAGS + ("transfer_json", "transfer_images"):
        path = getattr(args, flag)
        is_file = flag.endswith("json")
        if path and not (os.path.isfile(path) if is_file else os.path.isdir(path)):
            kind = "file" if is_file else "folder"
            p.error(f"--{flag.replace('_', '-')} {path!r} is not an existing {kind}")
    if bool(args.transfer_json) != bool(args.transfer_images):
        p.error("--transfer-json and --transfer-images go together")
    if args.transfer_json and args.transfer_to:
        p.error("use --transfer-to or --transfer-json/--transfer-images, not both")
    if args.transfer_tile < 0:
        p.error("--transfer-tile must be 0 (no tiling) or positive")
    if "gravel" in (args.dataset, args.transfer_to) and not args.gravel_source:
        p.error(
            "gravel needs --gravel-source: the folder holding train/ and test/ with X.jpg and "
            "X_mask.png"
        )


def prepare_dataset(args: argparse.Namespace, out: Path) -> Tuple[str, str, List[str]]:
    """Make or convert the data under OUT/data; returns (prefix, folder, [train, test])."""
    folder = out / "data" / args.dataset
    if args.dataset == "synth":
        s = args.image_size
        low, high = args.fragment_px or (s * SYNTH_FRAGMENT[0], s * SYNTH_FRAGMENT[1])
        config = SynthConfig(image_size=s, min_size=low, max_size=high)
        ensure_synth(
            str(folder),
            config,
            {"train": args.num_train, "test": args.num_test},
            seed=args.data_seed,
        )
    elif args.dataset == "gravel":
        ensure_gravel(args.gravel_source, str(folder))
    elif args.dataset == "custom":
        link_coco_split(str(folder), "train", args.train_json, args.train_images)
        link_coco_split(str(folder), "test", args.test_json, args.test_images)
    else:
        ensure_mnfinder(str(folder))
    if args.tile:
        tiles = out / "data" / f"{args.dataset}_tile{args.tile}"
        ensure_tiles(str(folder), str(tiles), args.tile, ["train", "test"])
        folder = tiles
    return f"compare_{args.dataset}", str(folder), ["train", "test"]


def transfer_settings(args: argparse.Namespace) -> TransferSettings:
    """The parsed --transfer-* flags (and --gravel-source) as ``transfer`` takes them."""
    return TransferSettings(
        to=args.transfer_to or "",
        json_file=args.transfer_json,
        images=args.transfer_images,
        tile=args.transfer_tile,
        image_size=args.transfer_image_size,
        gravel_source=args.gravel_source,
    )


def main(argv: Optional[List[str]] = None) -> Dict:
    """Data, teacher, every (method, seed) student, tables and figures; returns results.json."""
    start = time.perf_counter()
    args = parse_args(argv)
    settings = comparison_settings(args)
    out = start_study(args.threads, args.out)
    tiles = f", {args.tile} px tiles" if args.tile else ""
    print(
        f"[1/3] data: {args.dataset} ({args.scale} scale, {args.image_size} px{tiles})", flush=True
    )
    dataset = prepare_dataset(args, out)
    register_splits(*dataset)
    print(
        f"[2/3] teacher {settings.teacher.describe()} + {len(args.methods)} method(s) x "
        f"{len(args.seeds)} seed(s), student {settings.student.describe()}, "
        f"{args.iters} iterations each, {args.jobs} job(s)",
        flush=True,
    )
    label, setup = label_and_setup(args)
    # label and setup: what tools/study_report.py checks before merging
    recorded = dict(label=label, setup=setup, settings=vars(args))

    def progress(teacher: Optional[Dict], finished: List[Dict], pending: List[str]) -> None:
        """results.json while the call runs: what study_report needs from a stopped study.
        A failed write (full disk) is said, not raised: the runs keep their own results."""
        try:
            write_results(
                out,
                dict(recorded, teacher=teacher, runs=finished, pending=pending),
            )
        except OSError as e:
            print(f"warning: {out}/results.json not updated ({e}); training goes on", flush=True)

    teacher, runs = run_all(settings, out, dataset, on_progress=progress)
    print("[3/3] report", flush=True)
    summary, floor, table = write_report(out, label, setup, teacher, runs)
    eff_table, eff = efficiency_table(settings, out, dataset, teacher, summary, floor)
    (out / "efficiency.md").write_text(
        f"Latency: one test image with {args.latency_prompts} box prompts, {args.device}, "
        f"{args.threads} thread(s); students share one architecture.\n\n" + eff_table
    )
    if args.transfer_to or args.transfer_json:
        target = args.transfer_to or args.transfer_json
        print(f"[3/3] transfer: every run evaluated on {target}", flush=True)
        table += "\n" + transfer(settings, transfer_settings(args), out, dataset, teacher, runs)
    payload = {
        **recorded,
        "teacher": teacher,
        "runs": runs,
        "summary": summary,
        "box_floor": floor,
        "efficiency": eff,
        "wall_s": time.perf_counter() - start,
    }
    write_results(out, payload)
    print("\n" + table + "\n" + eff_table)
    print(
        f"wrote {out}/table.md, efficiency.md, results.json, bars.png "
        f"({payload['wall_s']:.0f} s)"
    )
    return payload


if __name__ == "__main__":
    main()

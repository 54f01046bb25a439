#!/usr/bin/env python
"""Segment-everything speed, teacher against student, side by side in one run: seconds per
megapixel of a photo through the whole pipeline of tools/segment_everything.py (tiles, image
embedding, point-grid decoding, filters, NMS, RLE, tile merging).

    python tools/bench_segment_everything.py                   # quickstart pair, 128 px tiles
    python tools/bench_segment_everything.py --pair paper --photo 1024x1024 --points-per-side 32

Pairs: "quickstart" (the quickstart's teacher, EfficientSAM-family widened to embed 128, depth
4, 4 heads, against the tiny EfficientSAM student, 128 px input) and "paper" (SAM ViT-H against
EfficientSAM-Ti, 1024 px input: minutes per photo on a CPU), or --teacher/--student
FAMILY:SIZE[:key=value,...]. Weights are random: speed does not depend on them, except through
how many masks survive the filters, so both thresholds are 0 here (every mask goes through
NMS and RLE encoding: the slowest case). The photo is random noise of --photo H x W px, cut into
tiles of the model's input size with --tile-overlap px shared. Reported: the median of --reps
runs after one warm-up run, per model, and teacher / student.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from sard.export import SardAutomaticMaskGenerator, SardPredictor, TiledMaskGenerator  # noqa: E402
from sard.models import build_model  # noqa: E402

PAIRS = {
    "quickstart": (
        "efficient_sam:tiny:embed_dim=128,depth=4,num_heads=4",
        "efficient_sam:tiny",
        128,
    ),
    "paper": ("sam:vit_h", "efficient_sam:ti", 1024),
}


def parse_member(text: str) -> Tuple[str, str, Dict[str, int]]:
    """ "family:size[:k=v,...]" -> (family, size, integer overrides)."""
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise SystemExit(f"model {text!r}: expected FAMILY:SIZE or FAMILY:SIZE:key=value,...")
    overrides = {}
    if len(parts) == 3 and parts[2]:
        for item in parts[2].split(","):
            key, _, value = item.partition("=")
            if not value.lstrip("-").isdigit():
                raise SystemExit(f"model {text!r}: override {item!r} is not key=integer")
            overrides[key] = int(value)
    return parts[0], parts[1], overrides


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--pair", choices=sorted(PAIRS), default="quickstart", help="preset pair")
    p.add_argument("--teacher", help="FAMILY:SIZE[:key=value,...], replaces the pair's teacher")
    p.add_argument("--student", help="FAMILY:SIZE[:key=value,...], replaces the pair's student")
    p.add_argument("--image-size", type=int, help="model input size (default: the pair's)")
    p.add_argument("--photo", default="512x512", help="photo size HxW in px (default 512x512)")
    p.add_argument("--tile-overlap", type=int, default=32, help="px shared by tiles (default 32)")
    p.add_argument("--points-per-side", type=int, default=16, help="point grid per tile side")
    p.add_argument("--points-per-batch", type=int, default=64, help="points decoded at once")
    p.add_argument("--reps", type=int, default=3, help="timed runs per model (median)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    return p.parse_args(argv)


def seconds_per_run(member: str, image: np.ndarray, args: argparse.Namespace) -> Dict:
    """Build ``member``, run the tiled generator on ``image`` once to warm up, then ``reps``
    times; returns its name, parameter count and timings."""
    family, size, overrides = parse_member(member)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("sard.models.checkpoint").setLevel(logging.ERROR)
        model = build_model(family, size=size, image_size=args.image_size, **overrides)
    model = model.to(args.device).eval()
    generator = SardAutomaticMaskGenerator(
        SardPredictor(model),
        points_per_side=args.points_per_side,
        points_per_batch=args.points_per_batch,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        output_mode="coco_rle",
    )
    tiler = TiledMaskGenerator(generator, tile=args.image_size, overlap=args.tile_overlap)
    logging.getLogger("sard.export.tiled").setLevel(logging.ERROR)  # random weights: no objects
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    times, objects = [], 0
    for rep in range(args.reps + 1):
        sync()
        start = time.perf_counter()
        objects = len(tiler.generate(image))
        sync()
        if rep:  # the first run warms up
            times.append(time.perf_counter() - start)
    return {
        "name": member,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "seconds": statistics.median(times),
        "tiles": tiler.last_stats.windows,
        "masks": tiler.last_stats.generator_counts.get("masks", 0),
        "objects": objects,
    }


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    teacher, student, size = PAIRS[args.pair]
    teacher, student = args.teacher or teacher, args.student or student
    args.image_size = args.image_size or size
    torch.set_num_threads(args.threads)
    try:
        h, w = (int(v) for v in args.photo.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--photo {args.photo!r}: expected HxW, e.g. 512x512")
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    megapixels = h * w / 1e6
    where = args.device if args.device != "cpu" else f"cpu, {torch.get_num_threads()} thread(s)"
    print(
        f"segment everything: {h}x{w} photo ({megapixels:.3f} MP), {args.image_size} px tiles "
        f"sharing {args.tile_overlap} px, {args.points_per_side}^2 points per tile, {where}"
    )
    rows = [seconds_per_run(m, image, args) for m in (teacher, student)]
    header = f"{'model':<52}{'params (M)':>11}{'tiles':>7}{'masks':>8}{'s/photo':>9}{'s/MP':>9}"
    print(header + "\n" + "-" * len(header))
    for r in rows:
        print(
            f"{r['name']:<52}{r['params_m']:>11.2f}{r['tiles']:>7d}{r['masks']:>8d}"
            f"{r['seconds']:>9.2f}{r['seconds'] / megapixels:>9.2f}"
        )
    ratio = rows[0]["seconds"] / rows[1]["seconds"]
    print(f"{'teacher / student (s/MP)':<52}{'':>35}{ratio:>8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Segment every object of an image (or of every image in a folder) with a distilled student and
measure it: SAM's automatic mask generator on overlapping native-resolution tiles.

    python tools/segment_everything.py IMAGE_OR_FOLDER --config-file CFG [KEY VALUE ...] \\
        --points-per-side N --tile PX --tile-overlap PX [--mm-per-px S] --out DIR

Each tile (--tile px of the image, default the model's input size, so one image pixel is one
model pixel) is prompted with an N x N point grid; masks are filtered and deduplicated as
segment_anything's SamAutomaticMaskGenerator does (--pred-iou-thresh, --stability-score-thresh,
--box-nms-thresh, ...; its defaults suit SAM ViT-H, a small student needs lower thresholds);
masks cut by a tile side are dropped and objects found whole in two tiles kept once, so objects
up to (tile overlap - 2 x --edge-margin) px across are always found whole.

Writes, per image, into DIR: <stem>_results.json (COCO results), <stem>_objects.csv (one row per
object: area, equivalent diameter, ellipse axes, max Feret diameter, orientation; mm with
--mm-per-px), <stem>_summary.json (count, d10, d50, d80, d90, basis, unit), <stem>_psd.png
(cumulative size distribution) and <stem>_overlay.png.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout without installing

from cli_flags import MEASURE_FLAGS, add_flag_table, add_measure_flags, flag_values  # noqa: E402

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
# The automatic mask generator's parameters, one flag each: (name, help); type and default are
# AmgSettings' (sard.amg_settings). Its defaults suit SAM ViT-H; a small student needs lower
# thresholds.
GENERATOR_FLAGS = (
    ("points_per_side", "N: an N x N point grid per tile"),
    ("points_per_batch", "points decoded at once; lower it if memory runs out"),
    ("pred_iou_thresh", "keep masks whose predicted IoU exceeds this"),
    ("stability_score_thresh", "keep masks at least this stable"),
    ("stability_score_offset", "stability = IoU of the masks at logit thresholds +/-offset"),
    ("box_nms_thresh", "box IoU above which a mask is a duplicate"),
    ("crop_n_layers", "SAM's crop layers inside each tile"),
    ("crop_nms_thresh", "box IoU of duplicates between SAM crops"),
    ("min_mask_region_area", "fill holes and remove islands under this many px"),
)


def generator_parameters() -> list:
    """GENERATOR_FLAGS as add_flag_table rows (name, type, default, help)."""
    from sard.amg_settings import AmgSettings

    amg = AmgSettings()
    rows = []
    for name, text in GENERATOR_FLAGS:
        default = getattr(amg, name)
        rows.append((name, type(default), default, f"{text} (default {default:g})"))
    return rows


def argument_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("input", metavar="IMAGE_OR_FOLDER", help="an image, or a folder of images")
    p.add_argument(
        "--config-file", metavar="FILE", help="the student's config (required with a student)"
    )
    p.add_argument(
        "--segmenter",
        choices=("student", "felzenszwalb"),
        default="student",
        help="the student (default), or Felzenszwalb's learning-free segmentation as a floor",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--glob", default="*", help="with a folder: file names to take (default *)")
    g = p.add_argument_group("automatic mask generator (SamAutomaticMaskGenerator's parameters)")
    add_flag_table(g, generator_parameters())
    t = p.add_argument_group("tiling")
    t.add_argument(
        "--tile", type=int, default=0, help="tile side in image px (default: model input size)"
    )
    t.add_argument(
        "--tile-overlap", type=int, default=-1, help="px shared by tiles (default tile/4)"
    )
    t.add_argument("--edge-margin", type=int, default=2, help="px band of a tile side (default 2)")
    t.add_argument(
        "--dedup-overlap",
        type=float,
        default=0.5,
        help="copies from two tiles overlapping by more than this fraction of the smaller are one",
    )
    f = p.add_argument_group("--segmenter felzenszwalb (scikit-image's parameters)")
    f.add_argument("--fz-scale", type=float, default=100.0, help="larger: larger regions")
    f.add_argument("--fz-sigma", type=float, default=0.8, help="Gaussian smoothing before")
    f.add_argument("--fz-min-size", type=int, default=20, help="smallest region in px")
    add_measure_flags(p.add_argument_group("measurement"))
    p.add_argument(
        "--image-ids",
        metavar="COCO.json",
        help="take each image's id from this COCO file (by name)",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default MODEL.DEVICE)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides (MODEL.WEIGHTS)")
    return p


def list_images(path: str, pattern: str) -> list:
    """``path`` itself, or the image files of folder ``path`` matching ``pattern``, sorted."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise SystemExit(f"{path}: no such image or folder")
    names = sorted(
        n
        for n in os.listdir(path)
        if n.lower().endswith(IMAGE_EXTENSIONS) and fnmatch.fnmatch(n, pattern)
    )
    if not names:
        raise SystemExit(
            f"{path}: no image files matching {pattern!r} ({', '.join(IMAGE_EXTENSIONS)})"
        )
    return [os.path.join(path, n) for n in names]


def zero_hint(counts: dict, args: argparse.Namespace) -> str:
    """Which threshold removed every mask, from the generator's counts."""
    if not counts or not counts.get("masks"):
        return ""
    if not counts.get("iou_kept"):
        return (
            f" (all {counts['masks']} masks under --pred-iou-thresh {args.pred_iou_thresh}; "
            f"the highest predicted IoU was {counts['max_iou']:.3f})"
        )
    if not counts.get("stable_kept"):
        return f" (all {counts['iou_kept']} masks under --stability-score-thresh {args.stability_score_thresh})"
    return ""


def generator_settings(args: argparse.Namespace, counts: dict) -> dict:
    """What made the masks, for the summary."""
    if args.segmenter == "felzenszwalb":
        keys = ("fz_scale", "fz_sigma", "fz_min_size")
    else:
        keys = ("points_per_side", "pred_iou_thresh", "stability_score_thresh")
        keys += ("stability_score_offset", "box_nms_thresh", "crop_n_layers")
    return {"segmenter": args.segmenter, **{k: getattr(args, k) for k in keys}, "counts": counts}


WHOLE_IMAGE = 1 << 30  # a tile larger than any image: one window


def make_generator(args: argparse.Namespace):
    """(generator, tile px) for --segmenter: the student's automatic mask generator (tiles of
    its input size by default), or Felzenszwalb's segmentation (the whole image by default)."""
    from sard.export import SardAutomaticMaskGenerator, SardPredictor
    from sard.export.classical import FelzenszwalbMaskGenerator

    if args.segmenter == "felzenszwalb":
        generator = FelzenszwalbMaskGenerator(args.fz_scale, args.fz_sigma, args.fz_min_size)
        return generator, args.tile or WHOLE_IMAGE
    if not args.config_file:
        raise SystemExit("--config-file is required with --segmenter student (the default)")
    predictor = SardPredictor.from_config(args.config_file, None, args.opts, device=args.device)
    names = [name for name, _ in GENERATOR_FLAGS]
    generator = SardAutomaticMaskGenerator(
        predictor, **flag_values(args, names), output_mode="coco_rle"
    )
    return generator, args.tile or predictor.transform.target_length


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags of ``argv``, options and positionals in any order."""
    return argument_parser().parse_intermixed_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from tqdm import tqdm

    from sard.data import read_image
    from sard.export import TiledMaskGenerator
    from sard.export.everything import MeasureSettings, records_to_results, write_image_outputs

    try:
        settings = MeasureSettings(**flag_values(args, MEASURE_FLAGS))
    except ValueError as e:
        raise SystemExit(str(e))
    images = list_images(args.input, args.glob)
    coco = None
    if args.image_ids:
        with open(args.image_ids) as f:
            coco = json.load(f)
    try:
        generator, tile = make_generator(args)
        overlap = args.tile_overlap if args.tile_overlap >= 0 else tile // 4
        tiler = TiledMaskGenerator(
            generator, tile, overlap, args.edge_margin, args.dedup_overlap, output_mode="coco_rle"
        )
    except ValueError as e:
        raise SystemExit(f"{e} (see --help)")
    os.makedirs(args.out, exist_ok=True)
    bar = tqdm(images, desc="images", unit="img", disable=args.no_progress or len(images) == 1)
    for path in bar:
        stem = os.path.splitext(os.path.basename(path))[0]
        image = read_image(path)
        image_id = os.path.basename(path)
        if coco is not None:
            from sard.export.segment import find_coco_image

            try:
                image_id = find_coco_image(coco, path)["id"]
            except KeyError as e:
                raise SystemExit(f"{args.image_ids}: {e.args[0]}")

        def tiles(boxes):
            return tqdm(
                boxes, desc=f"{stem} tiles", unit="tile", leave=False, disable=args.no_progress
            )

        records = tiler.generate(image, progress=tiles)
        stats = tiler.last_stats
        extra = {
            "image_id": image_id,
            "file": path,
            "tile": tile,
            "tile_overlap": overlap,
            "tiling": {
                k: v for k, v in vars(stats).items() if k not in ("lost_boxes", "generator_counts")
            },
            "generator": generator_settings(args, stats.generator_counts),
        }
        results = records_to_results(records, image_id, image.shape[:2])
        summary = write_image_outputs(args.out, stem, image, results, settings, extra)
        d = ", ".join(
            f"{k} {summary[k]:.3g}" for k in ("d10", "d50", "d80", "d90") if summary[k] is not None
        )
        hint = zero_hint(stats.generator_counts, args) if not results else ""
        tqdm.write(
            f"{path}: {summary['count']} objects{hint}; by {settings.basis}, "
            f"{settings.size_measure} ({summary['unit']}): {d or '-'} -> {args.out}/{stem}_*"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Compare a predicted size distribution with the ground truth's.

    python tools/size_distribution.py --gt COCO.json --pred RESULTS.json [RESULTS.json ...] \\
        [--mm-per-px S] [--size-measure M] [--basis number|area] --out DIR

Every object of the ground-truth images and every predicted object (COCO results, e.g. the
<stem>_results.json files of tools/segment_everything.py, pooled) is measured with
scikit-image's regionprops (sard.measure). Images are those the results name (their image_id is
a ground-truth id or file name), or every ground-truth image with --all-gt-images.

Prints and writes DIR/size_distribution.json: count, d10, d50, d80, d90 of both sets, the
relative errors of d50 and d80, 100 (pred - gt) / gt in %, and the Kolmogorov-Smirnov distance
D = max |F_pred - F_gt| of the two cumulative curves; DIR/size_distribution.png shows both
curves. --min-area and --exclude-border apply to both sets alike.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout without installing


def argument_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--gt", required=True, metavar="COCO.json", help="ground-truth instances")
    p.add_argument("--pred", required=True, nargs="+", metavar="RESULTS.json", help="COCO results")
    p.add_argument("--out", default="size_distribution", metavar="DIR", help="output folder")
    p.add_argument(
        "--all-gt-images",
        action="store_true",
        help="every image of --gt, not only those with results",
    )
    p.add_argument("--mm-per-px", type=float, default=None, help="pixel size; sizes then in mm")
    p.add_argument(
        "--size-measure",
        default="equivalent_diameter",
        choices=("equivalent_diameter", "minor_axis", "major_axis", "feret_diameter_max"),
        help="the size of the distribution (default %(default)s)",
    )
    p.add_argument(
        "--basis",
        default="number",
        choices=("number", "area"),
        help="weight per object: 1 or its area",
    )
    p.add_argument("--min-area", type=int, default=0, help="leave out objects under this many px")
    p.add_argument(
        "--exclude-border", action="store_true", help="leave out objects touching the image border"
    )
    p.add_argument(
        "--labels",
        nargs=2,
        default=("ground truth", "prediction"),
        metavar=("GT", "PRED"),
        help="legend names of the two curves",
    )
    return p


def load_json(path: str, what: str):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise SystemExit(f"{what} {path}: no such file")
    except ValueError as e:
        raise SystemExit(f"{what} {path}: not JSON ({e})")


def match_images(gt: dict, results: list, all_images: bool, gt_path: str):
    """(ground-truth image entries to compare, {results image_id: ground-truth id}); a results
    id is a ground-truth id, else a file name, else a file stem."""
    images = gt.get("images", [])
    by_id = {str(im["id"]): im for im in images}
    by_name = {os.path.basename(str(im.get("file_name", ""))): im for im in images}
    by_stem = {os.path.splitext(k)[0]: im for k, im in by_name.items()}
    to_gt = {}
    for image_id in {r["image_id"] for r in results}:
        key = os.path.basename(str(image_id))
        entry = (
            by_id.get(str(image_id)) or by_name.get(key) or by_stem.get(os.path.splitext(key)[0])
        )
        if entry is None:
            raise SystemExit(
                f"{gt_path}: no image with id or file name {image_id!r} (named by the results); "
                "pass the ground truth of the images that were segmented"
            )
        to_gt[image_id] = entry["id"]
    if all_images:
        return images, to_gt
    if not to_gt:
        raise SystemExit(
            "the results hold no object; pass --all-gt-images to compare with every "
            "ground-truth image"
        )
    wanted = set(to_gt.values())
    return [im for im in images if im["id"] in wanted], to_gt


def main(argv=None) -> int:
    args = argument_parser().parse_args(argv)
    import numpy as np

    from sard.measure import distribution_summary, ks_distance, object_sizes, plot_cumulative
    from sard.measure.distribution import basis_weights

    gt = load_json(args.gt, "--gt")
    results = []
    for path in args.pred:
        loaded = load_json(path, "--pred")
        if not isinstance(loaded, list):
            raise SystemExit(f"--pred {path}: COCO results are a JSON list of objects")
        results += loaded
    images, to_gt = match_images(gt, results, args.all_gt_images, args.gt)
    gt_ids = {im["id"] for im in images}
    segs = {image_id: {"gt": [], "pred": []} for image_id in gt_ids}
    for a in gt.get("annotations", []):
        if a["image_id"] in gt_ids and not a.get("iscrowd", 0):
            segs[a["image_id"]]["gt"].append(a["segmentation"])
    for r in results:
        segs[to_gt[r["image_id"]]]["pred"].append(r["segmentation"])
    sets = {"gt": ([], []), "pred": ([], [])}
    for entry in images:
        hw = (int(entry["height"]), int(entry["width"]))
        for key in ("gt", "pred"):
            table = object_sizes(segs[entry["id"]][key], hw, args.mm_per_px)
            keep = table.columns["area"] >= args.min_area * (args.mm_per_px or 1.0) ** 2
            if args.exclude_border:
                keep &= ~table.columns["touches_border"]
            table = table.select(keep)
            sets[key][0].append(table.sizes(args.size_measure))
            sets[key][1].append(table.columns["area"])
    unit = "mm" if args.mm_per_px else "px"
    sizes = {k: np.concatenate(v[0]) for k, v in sets.items()}
    areas = {k: np.concatenate(v[1]) for k, v in sets.items()}
    summary = {k: distribution_summary(sizes[k], areas[k], args.basis) for k in sets}
    report = {
        "gt_file": args.gt,
        "pred_files": list(args.pred),
        "images": len(images),
        "size_measure": args.size_measure,
        "unit": unit,
        "basis": args.basis,
        "min_area_px": args.min_area,
        "exclude_border": args.exclude_border,
        "gt": summary["gt"],
        "pred": summary["pred"],
    }
    if len(sizes["gt"]) and len(sizes["pred"]):
        for p in ("d50", "d80"):
            report[f"{p}_error_pct"] = (
                100 * (summary["pred"][p] - summary["gt"][p]) / summary["gt"][p]
            )
        report["ks_distance"] = ks_distance(
            sizes["pred"],
            sizes["gt"],
            basis_weights(areas["pred"], args.basis),
            basis_weights(areas["gt"], args.basis),
        )
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "size_distribution.json"), "w") as f:
        json.dump(report, f, indent=2)
    plot_cumulative(
        {
            args.labels[0]: (sizes["gt"], basis_weights(areas["gt"], args.basis)),
            args.labels[1]: (sizes["pred"], basis_weights(areas["pred"], args.basis)),
        },
        os.path.join(args.out, "size_distribution.png"),
        xlabel=f"{args.size_measure.replace('_', ' ')} ({unit})",
        basis=args.basis,
        title=f"{len(images)} image(s)",
    )
    print(f"{args.size_measure} ({unit}), by {args.basis}, {len(images)} image(s)")
    print("set            count      d10      d50      d80      d90")
    for key, label in (("gt", args.labels[0]), ("pred", args.labels[1])):
        s = summary[key]
        cells = " ".join(
            f"{s[p]:8.3g}" if s[p] is not None else "       -" for p in ("d10", "d50", "d80", "d90")
        )
        print(f"{label[:14]:14s} {s['count']:5d} {cells}")
    if "ks_distance" in report:
        print(
            f"d50 error {report['d50_error_pct']:+.1f} %, d80 error {report['d80_error_pct']:+.1f} %, "
            f"KS distance {report['ks_distance']:.3f}"
        )
    print(f"wrote {args.out}/size_distribution.json and size_distribution.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
curves; "GT found" is the % of ground-truth objects some predicted mask covers with IoU >= 0.5
(recall: with partly labelled photos precision cannot be measured). --floor adds a third set (a learning-free segmentation, the trivial answer to beat),
compared the same way. --min-area and --exclude-border apply to every set alike.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout without installing

from cli_flags import add_measure_flags  # noqa: E402


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
    add_measure_flags(p)
    p.add_argument(
        "--floor",
        nargs="+",
        metavar="RESULTS.json",
        help="results of a floor (e.g. segment_everything --segmenter felzenszwalb) to show beside",
    )
    p.add_argument("--floor-label", default="floor", help="legend name of the floor's curve")
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


def read_results(paths, option: str) -> list:
    """The COCO results of every file in ``paths``, pooled."""
    results = []
    for path in paths:
        loaded = load_json(path, option)
        if not isinstance(loaded, list):
            raise SystemExit(f"{option} {path}: COCO results are a JSON list of objects")
        results += loaded
    return results


def main(argv=None) -> int:
    args = argument_parser().parse_args(argv)
    import numpy as np

    from sard.measure import distribution_summary, ks_distance, object_sizes, plot_cumulative
    from sard.measure.distribution import basis_weights
    from sard.measure.matching import matched_objects

    gt = load_json(args.gt, "--gt")
    predicted = {"pred": read_results(args.pred, "--pred")}
    if args.floor:
        predicted["floor"] = read_results(args.floor, "--floor")
    pooled = [r for results in predicted.values() for r in results]
    # Images: those of the prediction (or all); a floor is compared on the same images.
    images, _ = match_images(gt, predicted["pred"], args.all_gt_images, args.gt)
    _, to_gt = match_images(gt, pooled, True, args.gt)
    gt_ids = {im["id"] for im in images}
    keys = ["gt", *predicted]
    segs = {image_id: {k: [] for k in keys} for image_id in gt_ids}
    for a in gt.get("annotations", []):
        if a["image_id"] in gt_ids and not a.get("iscrowd", 0):
            segs[a["image_id"]]["gt"].append(a["segmentation"])
    for key, results in predicted.items():
        for r in results:
            if to_gt[r["image_id"]] in gt_ids:
                segs[to_gt[r["image_id"]]][key].append(r["segmentation"])
    sets = {k: ([], []) for k in keys}
    matched = {k: [0, 0] for k in predicted}
    for entry in images:
        hw = (int(entry["height"]), int(entry["width"]))
        for key in predicted:
            found, total = matched_objects(segs[entry["id"]]["gt"], segs[entry["id"]][key], hw)
            matched[key][0] += found
            matched[key][1] += total
        for key in keys:
            table = object_sizes(segs[entry["id"]][key], hw, args.mm_per_px)
            keep = table.columns["area"] >= args.min_area * (args.mm_per_px or 1.0) ** 2
            if args.exclude_border:
                keep &= ~table.columns["touches_border"]
            table = table.select(keep)
            sets[key][0].append(table.sizes(args.size_measure))
            sets[key][1].append(table.columns["area"])
    unit = "mm" if args.mm_per_px else "px"
    sizes = {k: np.concatenate(v[0]) for k, v in sets.items()}
    weights = {k: basis_weights(np.concatenate(v[1]), args.basis) for k, v in sets.items()}
    areas = {k: np.concatenate(v[1]) for k, v in sets.items()}
    summary = {k: distribution_summary(sizes[k], areas[k], args.basis) for k in keys}
    report = {
        "gt_file": args.gt,
        "pred_files": list(args.pred),
        "floor_files": list(args.floor or []),
        "images": len(images),
        "size_measure": args.size_measure,
        "unit": unit,
        "basis": args.basis,
        "min_area_px": args.min_area,
        "exclude_border": args.exclude_border,
        "gt": summary["gt"],
    }
    for key in predicted:
        entry = dict(summary[key])
        if len(sizes["gt"]) and len(sizes[key]):
            for p in ("d50", "d80"):
                entry[f"{p}_error_pct"] = (
                    100 * (summary[key][p] - summary["gt"][p]) / summary["gt"][p]
                )
            entry["ks_distance"] = ks_distance(sizes[key], sizes["gt"], weights[key], weights["gt"])
        entry["gt_found_pct"] = 100.0 * matched[key][0] / max(matched[key][1], 1)
        report[key] = entry
    # The prediction's comparison also at the top level (the figures a reader asks for first).
    report.update({k: v for k, v in report["pred"].items() if k.endswith(("_pct", "distance"))})
    report["gt_found_iou"] = 0.5
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "size_distribution.json"), "w") as f:
        json.dump(report, f, indent=2)
    labels = {"gt": args.labels[0], "pred": args.labels[1], "floor": args.floor_label}
    plot_cumulative(
        {labels[k]: (sizes[k], weights[k]) for k in keys},
        os.path.join(args.out, "size_distribution.png"),
        xlabel=f"{args.size_measure.replace('_', ' ')} ({unit})",
        basis=args.basis,
        title=f"{len(images)} image(s)",
    )
    print(f"{args.size_measure} ({unit}), by {args.basis}, {len(images)} image(s)")
    print(
        f"{'set':<24}{'count':>6}{'d10':>9}{'d50':>9}{'d80':>9}{'d90':>9}{'d50 err':>9}"
        f"{'d80 err':>9}{'KS':>7}{'GT found':>10}"
    )
    for key in keys:
        s = report[key]
        cells = "".join(
            f"{s[p]:9.3g}" if s[p] is not None else f"{'-':>9}"
            for p in ("d10", "d50", "d80", "d90")
        )
        errors = "".join(
            f"{s[p]:+8.1f}%" if p in s else f"{'':>9}" for p in ("d50_error_pct", "d80_error_pct")
        )
        ks = f"{s['ks_distance']:7.3f}" if "ks_distance" in s else f"{'':>7}"
        found = f"{s['gt_found_pct']:9.1f}%" if "gt_found_pct" in s else ""
        print(f"{labels[key][:24]:<24}{s['count']:6d}{cells}{errors}{ks}{found}")
    print(f"wrote {args.out}/size_distribution.json and size_distribution.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

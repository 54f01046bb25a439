#!/usr/bin/env python
"""How non-uniform is a trained teacher's W(i) on a test set, and does it favour boundaries?

    python tools/structure_weight_stats.py --run-dir output/compare_synth/teacher \
        --data-folder output/compare_synth/data/synth --prefix compare_synth \
        --weights output/quickstart_180/teacher/model_final.pth

--run-dir is a study run folder (its run.json holds the overrides the model was trained with,
e.g. the teacher of tools/compare_methods.py); the model's MODEL.STUDENT.TAP features on each
test image give W for SARD's default betas and for each ablation (E, C, D, E+C). Prints and
writes (OUT/weight_stats.json and .md; OUT defaults to RUN_DIR) the per-image means of the
statistics defined in ``sard.reporting.weight_stats``: effective fraction of cells carrying the
loss, the spread of N*W, and the W mass on cells holding an instance boundary relative to their
share of cells.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

# (label, beta_e, beta_c, beta_d): SARD's default and the ablations of tools/compare_methods.py.
VARIANTS = [
    ("sard (2,1,1)", 2.0, 1.0, 1.0),
    ("E only", 1.0, 0.0, 0.0),
    ("C only", 0.0, 1.0, 0.0),
    ("D only", 0.0, 0.0, 1.0),
    ("E+C (2,1,0)", 2.0, 1.0, 0.0),
]
_BOUNDARY_KEYS = ("boundary_cells", "boundary_share", "boundary_lift")
COLUMNS = [
    ("ess_ratio", "effective cells"),
    ("nw_p05", "N·W p5"),
    ("nw_p95", "N·W p95"),
    ("boundary_cells", "boundary cells"),
    ("boundary_share", "W on them"),
    ("boundary_lift", "lift"),
]


def _nanmean(values: List[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--run-dir", required=True, help="a study run folder with run.json")
    p.add_argument("--data-folder", required=True, help="folder with train.json, test.json")
    p.add_argument("--prefix", required=True, help="dataset name prefix the run was trained on")
    p.add_argument("--weights", default="", help="checkpoint (default: the run's own)")
    p.add_argument("--images", type=int, default=16, help="test images to average over")
    p.add_argument("--config-file", default="", help="default: the study's tiny SAM config")
    p.add_argument("--out", default="", help="folder for weight_stats.json/.md (default RUN_DIR)")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Dict:
    import torch

    from sard.reporting.study import TINY_SAM_CONFIG, build_trainer
    from sard.reporting.study_data import register_splits
    from sard.reporting.tables import markdown_table
    from sard.reporting.visuals import test_sample
    from sard.reporting.weight_stats import weight_statistics
    from sard.structure import compute_structure_map

    args = parse_args(argv)
    run_json = os.path.join(args.run_dir, "run.json")
    if not os.path.isfile(run_json):
        raise SystemExit(f"{run_json} not found: --run-dir must be a study run folder")
    if args.weights and not os.path.isfile(args.weights):
        raise SystemExit(f"--weights {args.weights!r} does not exist")
    with open(run_json) as f:
        pairs = [p for p in json.load(f)["opts"] if p[0] != "MODEL.WEIGHTS"]
    opts = [x for pair in pairs for x in pair]
    if args.weights:
        opts += ["MODEL.WEIGHTS", os.path.abspath(args.weights)]
    names = register_splits(args.prefix, args.data_folder, ["train", "test"])
    trainer = build_trainer(args.config_file or TINY_SAM_CONFIG, opts, args.run_dir)
    cfg, model = trainer.cfg, trainer.model.student.eval()
    s = cfg.MODEL.SARD
    totals: Dict[str, Dict[str, List[float]]] = {v[0]: {} for v in VARIANTS}
    for index in range(args.images):
        try:
            sample, _ = test_sample(cfg, names[1], index)
        except IndexError:
            break
        with torch.no_grad():
            feats = model.extract_features(sample["image"].float()[None])[cfg.MODEL.STUDENT.TAP]
        # E, C, D do not depend on the betas: compute them once, weigh them per variant.
        terms = compute_structure_map(feats.float(), radius=s.RADIUS, sigma=s.SIGMA)
        for label, be, bc, bd in VARIANTS:
            weight = terms.reweighted(be, bc, bd)[0, 0]
            stats = weight_statistics(weight, sample["gt_masks"])
            if stats["boundary_cells"] == 0:  # no instance: the boundary columns skip the image
                stats.update({k: float("nan") for k in _BOUNDARY_KEYS})
            for key, value in stats.items():
                totals[label].setdefault(key, []).append(value)
    first = totals[VARIANTS[0][0]]
    if not first:
        raise SystemExit(f"{names[1]} has no test images")
    # Images without an instance have no boundary lift (NaN): average over the others.
    means = {label: {k: _nanmean(v) for k, v in stats.items()} for label, stats in totals.items()}
    images = len(first["ess_ratio"])
    grid = (int(first["grid_h"][0]), int(first["grid_w"][0]))
    with_instances = sum(not math.isnan(v) for v in first["boundary_lift"])
    rows = [[label] + [f"{means[label][k]:.2f}" for k, _ in COLUMNS] for label, *_ in VARIANTS]
    table = markdown_table(["W"] + [c for _, c in COLUMNS], rows)
    header = (
        f"{images} test image(s) of {names[1]}; feature grid {grid[0]}x{grid[1]} "
        f"(radius {s.RADIUS}, sigma {s.SIGMA}); instances touching a cell: "
        f"{means[VARIANTS[0][0]]['instances_per_cell']:.1f} on average. Boundary columns: means over the "
        f"{with_instances} image(s) holding an instance; lift = W on boundary cells / their "
        "fraction, per image. Uniform W: effective cells 1, N·W 1, lift 1."
    )
    print(header + "\n\n" + table)
    payload = {"images": images, "grid": list(grid), "means": means, "header": header}
    out = args.out or args.run_dir
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "weight_stats.json"), "w") as f:
        json.dump(payload, f, indent=2)
    with open(os.path.join(out, "weight_stats.md"), "w") as f:
        f.write(header + "\n\n" + table + "\n")
    return payload


if __name__ == "__main__":
    main()

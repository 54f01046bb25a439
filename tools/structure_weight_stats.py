#!/usr/bin/env python
"""How non-uniform is a trained teacher's W(i) on a test set, does it favour boundaries, and
does it pile up on the image edge?

    python tools/structure_weight_stats.py --run-dir output/compare_synth/teacher \
        --data-folder output/compare_synth/data/synth --prefix compare_synth \
        --weights output/quickstart_180/teacher/model_final.pth
    python tools/structure_weight_stats.py --model sam:vit_h --input-size 1024 \
        --data-folder DATA --prefix x --images 2 --out output/border_sam_h   # random weights

--run-dir is a study run folder (its run.json holds the overrides the model was trained with,
e.g. the teacher of tools/compare_methods.py); the model's MODEL.STUDENT.TAP features on each
test image give W for SARD's default betas and for each ablation (E, C, D, E+C). Without a run,
--model FAMILY:SIZE at --input-size is built with random weights (seed --seed): what W looks
like from the architecture alone. Prints and writes (OUT/weight_stats.json and .md; OUT
defaults to RUN_DIR) the per-image means of the statistics defined in
``sard.reporting.weight_stats``: effective fraction of cells carrying the loss, the spread of
N*W, the W mass on cells holding an instance boundary relative to their share of cells (lift),
and W's mass on the outer ring of cells relative to the ring's share (border share; per term
for the full map). Padded test images (SAM's longest_pad) are measured on their valid cells.
--neck-padding and --zero-pos-embed switch off one suspect of the encoder at a time
(``tools/studies/encoder_probes.py``) to find what puts W on the edge.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from typing import Dict, List, Optional

from studies import preamble  # noqa: F401  (checkout on sys.path, flush: see its docstring)

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
    ("border_share", "border share"),
]
# Border share of each term alone (the full map's row only: terms do not depend on betas).
TERM_COLUMNS = [("border_E", "E"), ("border_C", "C"), ("border_D", "D")]


def _nanmean(values: List[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--run-dir", default="", help="a study run folder with run.json")
    p.add_argument(
        "--model",
        default="",
        help="FAMILY:SIZE built with random weights instead of a run (e.g. sam:vit_h)",
    )
    p.add_argument("--input-size", type=int, default=1024, help="--model's input size, px")
    p.add_argument("--seed", type=int, default=0, help="--model's random initialisation")
    p.add_argument("--data-folder", required=True, help="folder with train.json, test.json")
    p.add_argument("--prefix", required=True, help="dataset name prefix the run was trained on")
    p.add_argument("--weights", default="", help="checkpoint (default: the run's own)")
    p.add_argument("--images", type=int, default=16, help="test images to average over")
    p.add_argument("--config-file", default="", help="default: the study's tiny SAM config")
    p.add_argument("--out", default="", help="folder for weight_stats.json/.md (default RUN_DIR)")
    p.add_argument(
        "--neck-padding",
        default="zeros",
        choices=("zeros", "replicate", "reflect"),
        help="probe: pad the encoder neck's 3x3 conv this way (the model's own is zeros)",
    )
    p.add_argument(
        "--zero-pos-embed", action="store_true", help="probe: remove absolute position embeddings"
    )
    p.add_argument(
        "--border-cells",
        type=int,
        help="W's outer rings copied from inner cells (default: the run's MODEL.SARD.BORDER_CELLS)",
    )
    args = p.parse_args(argv)
    if bool(args.run_dir) == bool(args.model):
        p.error("give either --run-dir (a trained run) or --model FAMILY:SIZE (random weights)")
    if args.model and args.model.count(":") != 1:
        p.error(f"--model must be FAMILY:SIZE, e.g. sam:vit_h, got {args.model!r}")
    if args.model and not args.out:
        p.error("--model needs --out (there is no run folder to write into)")
    return args


def load_model(args: argparse.Namespace, test_name: str):
    """(cfg, model): a study run's student (its trained weights, or --weights), or --model with
    random weights at --input-size; cfg drives the test mapper and W's settings."""
    import torch

    from sard.config import load_config
    from sard.models import build_model
    from studies.study import TINY_SAM_CONFIG, build_trainer

    config_file = args.config_file or TINY_SAM_CONFIG
    if args.model:
        family, size = args.model.split(":")
        s = args.input_size
        opts = ["MODEL.STUDENT.FAMILY", family, "MODEL.STUDENT.SIZE", size]
        opts += ["INPUT.IMAGE_SIZE", f"({s}, {s})", "DATASETS.TEST", f"('{test_name}',)"]
        cfg = load_config(config_file, opts)
        torch.manual_seed(args.seed)
        return cfg, build_model(family, size=size, image_size=s).eval()
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
    trainer = build_trainer(config_file, opts, args.run_dir)
    return trainer.cfg, trainer.model.student.eval()


def main(argv: Optional[List[str]] = None) -> Dict:
    import torch
    from studies.encoder_probes import probe_encoder
    from studies.study_data import register_splits
    from tqdm import tqdm

    from sard.models.base import encode
    from sard.reporting.tables import markdown_table
    from sard.reporting.visuals import test_sample
    from sard.reporting.weight_stats import SIDES, weight_statistics
    from sard.structure import compute_structure_map, valid_cells

    args = parse_args(argv)
    names = register_splits(args.prefix, args.data_folder, ["train", "test"])
    cfg, model = load_model(args, names[1])
    probes = probe_encoder(model, args.neck_padding, args.zero_pos_embed)
    s = cfg.MODEL.SARD
    border = s.BORDER_CELLS if args.border_cells is None else args.border_cells
    if border:
        probes.append(f"W's {border} outer ring(s) copied from inner cells")
    totals: Dict[str, Dict[str, List[float]]] = {v[0]: {} for v in VARIANTS}
    for index in tqdm(range(args.images), desc="W(i) statistics", leave=False):
        try:
            sample, _ = test_sample(cfg, names[1], index)
        except IndexError:
            break
        image = sample["image"].float()[None]
        with torch.no_grad():
            feats = encode(model, image, [tuple(sample["input_hw"])])[cfg.MODEL.STUDENT.TAP]
        # A padded image is measured on its valid cells, as the distiller computes W.
        valid = valid_cells([sample["input_hw"]], image.shape[-2:], feats.shape[-2:])
        # E, C, D do not depend on the betas: compute them once, weigh them per variant.
        terms = compute_structure_map(
            feats.float(), radius=s.RADIUS, sigma=s.SIGMA, valid_mask=valid, border_cells=border
        )
        for label, be, bc, bd in VARIANTS:
            weight = terms.reweighted(be, bc, bd)[0, 0]
            full = label == VARIANTS[0][0]
            per_term = {k: getattr(terms, k)[0, 0] for k in ("E", "C", "D")} if full else None
            stats = weight_statistics(weight, sample["gt_masks"], valid[0, 0], per_term)
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
    full = means[VARIANTS[0][0]]
    terms_line = ", ".join(f"{name} {full[key]:.2f}" for key, name in TERM_COLUMNS)
    sides_line = ", ".join(f"{side} {full[f'border_{side}']:.2f}" for side in SIDES)
    source = ""
    if args.model:
        source = f"{args.model} at {args.input_size} px, random weights (seed {args.seed}): "
    header = (
        f"{source}{images} test image(s) of {names[1]}; feature grid {grid[0]}x{grid[1]} "
        f"(radius {s.RADIUS}, sigma {s.SIGMA}); instances touching a cell: "
        f"{full['instances_per_cell']:.1f} on average. Boundary columns: means over the "
        f"{with_instances} image(s) holding an instance; lift = W on boundary cells / their "
        "fraction, per image; border share = W on the outer ring of cells / the ring's share "
        f"(each term alone: {terms_line}; W per side: {sides_line}). Uniform W: effective "
        "cells 1, N·W 1, lift 1, border "
        "share 1." + (f" Probes: {'; '.join(probes)}." if probes else "")
    )
    print(header + "\n\n" + table)
    payload = {
        "images": images,
        "grid": list(grid),
        "means": means,
        "header": header,
        "model": args.model or args.run_dir,
        "probes": probes,
    }
    out = args.out or args.run_dir
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "weight_stats.json"), "w") as f:
        json.dump(payload, f, indent=2)
    with open(os.path.join(out, "weight_stats.md"), "w") as f:
        f.write(header + "\n\n" + table + "\n")
    return payload


if __name__ == "__main__":
    main()

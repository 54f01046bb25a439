"""What a box-prompted model must beat on a labelled COCO set: the prompt box filled, and the
ellipse inscribed in it (see ``sard.evaluation.prompt_floors``), scored per instance with the
evaluator's IoU and boundary IoU at native resolution, as mean mIoU / bIoU over instances.

    python tools/prompt_floors.py --json datasets/gravel_fh/test.json [--json OTHER.json ...]

Prints one markdown table (a row per floor and set); --out also writes it as JSON. Images are
not read: the masks come from the annotations.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sard.user_errors import run_tool  # noqa: E402


def floors_of(json_file: str, dilation_ratio: float, progress: bool) -> Dict[str, Dict[str, float]]:
    """{floor: {"mIoU", "bIoU", "instances"}} of the instances of one COCO file (percent)."""
    import numpy as np
    from tqdm import tqdm

    from sard.data.coco import load_coco_instances
    from sard.data.masks import decode_many
    from sard.evaluation.prompt_floors import FLOORS, prompt_floor_scores

    root = os.path.dirname(os.path.abspath(json_file))
    records = load_coco_instances(json_file, root, check_files=False, allow_outside_root=True)
    ious: Dict[str, List[np.ndarray]] = {f: [] for f in FLOORS}
    bious: Dict[str, List[np.ndarray]] = {f: [] for f in FLOORS}
    for record in tqdm(records, desc=os.path.basename(json_file), disable=not progress):
        segs = [a["segmentation"] for a in record.get("annotations", [])]
        if not segs:
            continue
        gt = decode_many(segs, record["height"], record["width"])
        gt = gt[gt.reshape(len(gt), -1).any(1)]  # the evaluator skips empty masks too
        for name, scores in prompt_floor_scores(gt, dilation_ratio).items():
            ious[name].append(scores.iou)
            bious[name].append(scores.boundary_iou)
    out = {}
    for name in FLOORS:
        iou = np.concatenate(ious[name]) if ious[name] else np.zeros(0)
        biou = np.concatenate(bious[name]) if bious[name] else np.zeros(0)
        out[name] = {
            "mIoU": 100.0 * float(iou.mean()) if iou.size else float("nan"),
            "bIoU": 100.0 * float(biou.mean()) if biou.size else float("nan"),
            "instances": int(iou.size),
        }
    return out


def argument_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--json", action="append", required=True, help="a COCO instances file (repeatable)"
    )
    p.add_argument(
        "--dilation-ratio",
        type=float,
        default=0.02,
        help="boundary width d as a share of the image diagonal (the evaluator's, default 0.02)",
    )
    p.add_argument("--out", default="", help="also write the floors to this JSON file")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return p


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The flags of ``argv`` (default: the command line), checked as far as they can be
    without reading files; ``tests/readme_commands.py`` checks README commands with it."""
    p = argument_parser()
    args = p.parse_args(argv)
    if not 0 < args.dilation_ratio < 1:
        p.error(f"--dilation-ratio must be in (0, 1), got {args.dilation_ratio}")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    for path in args.json:
        if not os.path.isfile(path):
            argument_parser().error(f"--json {path}: no such file")
    from sard.reporting.tables import BOX_FLOOR_LABEL

    results = {
        path: floors_of(path, args.dilation_ratio, not args.no_progress) for path in args.json
    }
    print("| set | trivial answer | instances | mIoU | bIoU |")
    print("|---|---|---:|---:|---:|")
    for path, floors in results.items():
        for name, row in floors.items():
            label = BOX_FLOOR_LABEL if name == "box" else "ellipse in the box"
            print(
                f"| {path} | {label} | {row['instances']} | {row['mIoU']:.1f} | {row['bIoU']:.1f} |"
            )
    if args.out:
        from sard.atomic_files import atomic_write_json

        atomic_write_json(args.out, results, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))

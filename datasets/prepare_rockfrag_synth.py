#!/usr/bin/env python
"""Generate the synthetic RockFrag dataset (images, COCO train/val/test JSON, preview.png).

    python datasets/prepare_rockfrag_synth.py --out datasets/rockfrag_synth \
        --num-train 40 --num-val 10 --num-test 10 --image-size 256 --seed 0

Deterministic from --seed; prints instances per image, median area and the tiny fraction per
split (also stored in each JSON's info.statistics).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))  # cli_values and cli_flags, shared with the tools

from cli_flags import flag_values, print_split_stats  # noqa: E402
from cli_values import float_range, int_range  # noqa: E402

from sard.data.register import datasets_root  # noqa: E402
from sard.data.synthetic import SynthConfig  # noqa: E402
from sard.data.synthetic_dataset import generate_rockfrag_synth  # noqa: E402
from sard.user_errors import UserError, run_tool  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    defaults = SynthConfig()
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--out",
        default=os.path.join(datasets_root(), "rockfrag_synth"),
        help="output folder (default $DETECTRON2_DATASETS/rockfrag_synth)",
    )
    p.add_argument("--num-train", type=int_range(0), default=40)
    p.add_argument("--num-val", type=int_range(0), default=10)
    p.add_argument("--num-test", type=int_range(0), default=10)
    p.add_argument(
        "--image-size", type=int_range(32), default=defaults.image_size, help="square side, px"
    )
    p.add_argument("--seed", type=int_range(0), default=0)
    p.add_argument(
        "--density",
        type=float_range(0, 1, lo_open=True),
        default=defaults.density,
        help="fraction of packing cells holding a fragment (the rest are voids of fines)",
    )
    p.add_argument(
        "--min-size",
        type=float_range(0, lo_open=True),
        default=None,
        help="smallest fragment diameter in px (default max(3, S/64))",
    )
    p.add_argument(
        "--max-size",
        type=float_range(0, lo_open=True),
        default=None,
        help="largest fragment diameter in px (default S/6)",
    )
    p.add_argument(
        "--size-exponent",
        type=float_range(),
        default=defaults.size_exponent,
        help="a in p(d) ~ d^-a; larger gives more tiny fragments",
    )
    p.add_argument(
        "--min-area",
        type=int_range(0),
        default=defaults.min_area,
        help="fragments under this many px are drawn as fines, not annotated",
    )
    p.add_argument("--no-preview", action="store_true", help="skip preview.png")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    sizes = ("image_size", "density", "min_size", "max_size", "size_exponent", "min_area")
    config = SynthConfig(**flag_values(args, sizes))
    try:
        config.validate()
    except ValueError as err:
        raise UserError(f"invalid options: {err}") from None
    start = time.time()
    results = generate_rockfrag_synth(
        args.out,
        num_images={"train": args.num_train, "val": args.num_val, "test": args.num_test},
        config=config,
        seed=args.seed,
        preview=not args.no_preview,
    )
    print_split_stats(results, args.out, f" in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))

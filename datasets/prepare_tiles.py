#!/usr/bin/env python
"""Cut a COCO instance dataset into square tiles at native resolution.

    python datasets/prepare_tiles.py --src $DETECTRON2_DATASETS/mnfinder \
        --out $DETECTRON2_DATASETS/mnfinder_tile128 --tile 128 --splits train test

For images far larger than the model input (microscopy, remote sensing, conveyor line scans):
each image is covered by TILE x TILE windows (the last one per row/column flush with the edge,
no padding), every instance is clipped to each window it touches, and pieces under --min-area
pixels are dropped. SRC holds <split>.json and <split>/ (the layout every prepare_*.py writes);
OUT gets the same layout, ready for `register_rockfrag`. See `sard.data.tiling`.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))  # cli_values and cli_flags, shared with the tools

from cli_flags import converter_parser, print_split_stats  # noqa: E402
from cli_values import int_range  # noqa: E402

from sard.data.tiling import tile_coco_split  # noqa: E402
from sard.user_errors import run_tool  # noqa: E402


def argument_parser() -> argparse.ArgumentParser:
    """The tool's flags."""
    p = converter_parser(
        __doc__,
        src="folder with <split>.json and <split>/",
        out="folder for the tiles and their COCO files",
    )
    p.add_argument("--tile", type=int_range(1), default=128, help="tile side in pixels")
    p.add_argument(
        "--min-area", type=int_range(1), default=4, help="smallest kept instance piece, px"
    )
    p.add_argument("--splits", nargs="+", default=["train", "val", "test"])
    return p


def main(argv=None) -> int:
    args = argument_parser().parse_args(argv)
    missing = [s for s in args.splits if not os.path.isfile(os.path.join(args.src, f"{s}.json"))]
    if missing:
        argument_parser().error(f"{args.src} has no {', '.join(s + '.json' for s in missing)}")

    def tile(split: str):
        return tile_coco_split(
            os.path.join(args.src, f"{split}.json"),
            os.path.join(args.src, split),
            args.out,
            split,
            args.tile,
            min_area=args.min_area,
        )

    print_split_stats(((split, tile(split)) for split in args.splits), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))

#!/usr/bin/env python
"""Convert integer label images (0 = background, k = instance k) to COCO instance JSON.

Each split folder holds X.<jpg|png|tif> next to X<suffix>.<png|tif> (suffix "_mask" by
default). For the real gravel data shipped with the project:

    python datasets/prepare_label_images.py --src ../shared/data/gravel_fh \
        --out $DETECTRON2_DATASETS/gravel_fh --splits train test --category grain

writes <out>/{train,test}/ (images copied) and <out>/{train,test}.json, which register as
gravel_fh_{train,test} on `import sard.data`.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))  # cli_values and cli_flags, shared with the tools

from cli_flags import converter_parser, print_split_stats  # noqa: E402
from cli_values import int_range  # noqa: E402

from sard.data.converters import find_label_pairs, labels_to_coco  # noqa: E402
from sard.data.register import datasets_root  # noqa: E402
from sard.user_errors import run_tool  # noqa: E402


def argument_parser() -> argparse.ArgumentParser:
    """The tool's flags."""
    p = converter_parser(
        __doc__,
        src="folder with one sub-folder per split",
        out="output folder (default $DETECTRON2_DATASETS/<src name>)",
        out_required=False,
    )
    p.add_argument("--splits", nargs="+", default=["train", "test"])
    p.add_argument("--mask-suffix", default="_mask", help="label file = image stem + suffix")
    p.add_argument("--category", default="grain", help="name of the single category")
    p.add_argument(
        "--min-area", type=int_range(1), default=1, help="skip instances under this many px"
    )
    return p


def main(argv=None) -> int:
    args = argument_parser().parse_args(argv)
    out = args.out or os.path.join(datasets_root(), os.path.basename(os.path.normpath(args.src)))

    def convert(split: str):
        return labels_to_coco(
            find_label_pairs(os.path.join(args.src, split), args.mask_suffix),
            out,
            split,
            category_name=args.category,
            min_area=args.min_area,
            description=f"converted from label images in {args.src}",
        )

    print_split_stats(((split, convert(split)) for split in args.splits), out)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))

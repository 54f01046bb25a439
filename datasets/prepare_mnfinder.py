#!/usr/bin/env python
"""Convert the mnfinder package's microscopy data (nuclei, micronuclei) to COCO.

    pip install --no-deps mnfinder          # data only; never imported (it needs TensorFlow)
    python datasets/prepare_mnfinder.py --out $DETECTRON2_DATASETS/mnfinder

Keeps mnfinder's own split (training-data -> train, validation-data -> val, test-data -> test);
categories "nucleus" and "micronucleus"; images written as 8-bit RGB PNG.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))  # cli_flags, shared with the tools

from cli_flags import print_split_stats  # noqa: E402

from sard.data.mnfinder_data import find_mnfinder_package, mnfinder_to_coco  # noqa: E402
from sard.data.register import datasets_root  # noqa: E402
from sard.user_errors import UserError, run_tool  # noqa: E402


def argument_parser() -> argparse.ArgumentParser:
    """The tool's flags."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default=os.path.join(datasets_root(), "mnfinder"))
    p.add_argument(
        "--package-dir",
        default=None,
        help="mnfinder package folder (default: found with importlib, not imported)",
    )
    p.add_argument("--splits", nargs="+", default=["train", "val", "test"])
    return p


def main(argv=None) -> int:
    args = argument_parser().parse_args(argv)
    package_dir = args.package_dir or find_mnfinder_package()
    if package_dir is None:
        raise UserError("mnfinder is not installed; run: pip install --no-deps mnfinder")
    results = mnfinder_to_coco(args.out, package_dir=package_dir, splits=args.splits)
    print_split_stats(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))

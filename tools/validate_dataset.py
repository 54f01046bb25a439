#!/usr/bin/env python
"""Check a COCO instance dataset up front and print a summary.

    python tools/validate_dataset.py rockfrag_synth_train
    python tools/validate_dataset.py path/to/train.json [--image-root path/to/images]

Prints images, instances, classes, an object-size histogram, objects per image and every
problem found (fatal ones and counted warnings). Exit status 1 if there is a fatal problem, 2
(with one line naming the problem) if the dataset cannot be found.

Image file_names must be relative paths inside the image folder; --allow-outside-root accepts
absolute paths and ../ (the loader takes the same opt-in: register_rockfrag(...,
allow_outside_root=True)).
"""

from __future__ import annotations

import argparse
import sys

from sard.data.validate import format_report, resolve_dataset, validate_coco_dataset
from sard.user_errors import run_tool


def argument_parser() -> argparse.ArgumentParser:
    """The tool's flags."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("dataset", help="registered dataset name or path to a COCO JSON")
    p.add_argument(
        "--image-root",
        default=None,
        help="image folder (default: from the registration, or <json stem>/ or the JSON's folder)",
    )
    p.add_argument(
        "--no-read-images",
        action="store_true",
        help="only check that image files exist, do not decode them",
    )
    p.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="accept image file_names outside the image folder (absolute paths, ../)",
    )
    return p


def main(argv=None) -> int:
    args = argument_parser().parse_args(argv)
    json_file, image_root = resolve_dataset(args.dataset, args.image_root)
    report = validate_coco_dataset(
        json_file,
        image_root,
        read_images=not args.no_read_images,
        allow_outside_root=args.allow_outside_root,
    )
    print(f"images from: {image_root}")
    print(format_report(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(run_tool(main))

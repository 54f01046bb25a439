#!/usr/bin/env python
"""Check a COCO instance dataset up front and print a summary.

    python tools/validate_dataset.py rockfrag_synth_train
    python tools/validate_dataset.py path/to/train.json [--image-root path/to/images]

Prints images, instances, classes, an object-size histogram, objects per image and every
problem found (fatal ones and counted warnings). Exit status 1 if there is a fatal problem.
"""

from __future__ import annotations

import argparse
import sys

from sard.data.validate import format_report, resolve_dataset, validate_coco_dataset


def main(argv=None) -> int:
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
    args = p.parse_args(argv)
    try:
        json_file, image_root = resolve_dataset(args.dataset, args.image_root)
    except KeyError as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2
    report = validate_coco_dataset(json_file, image_root, read_images=not args.no_read_images)
    print(f"images from: {image_root}")
    print(format_report(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

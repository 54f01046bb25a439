#!/usr/bin/env python
"""Convert GeoJSON polygon annotations (pixel coordinates) plus their images to COCO.

Each image X.<ext> has X.geojson next to it: a FeatureCollection of Polygon / MultiPolygon
features in pixel coordinates (x right, y down; --negate-y for exports with y up), as grain
annotation tools write them. Holes are honoured; self-intersecting polygons are repaired
(shapely's make_valid) and counted; other geometry types are skipped (counted). A file that
declares a "crs" (longitude/latitude or map coordinates) is refused unless --pixel-coordinates
says its coordinates are pixels anyway. Nothing is written when a file is refused.

    python datasets/prepare_geojson.py --src my_grains/train --out $DETECTRON2_DATASETS/my_grains \
        --split train [--category-property class]
"""

from __future__ import annotations

import argparse
import os
import sys
from glob import glob

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))  # cli_flags, shared with the tools

from cli_flags import converter_parser, print_split_stats  # noqa: E402

from sard.data.converters import IMAGE_EXTENSIONS, geojson_to_coco  # noqa: E402
from sard.data.problems import DatasetError  # noqa: E402
from sard.user_errors import run_tool  # noqa: E402


def find_pairs(folder: str):
    """(geojson, image) pairs: X.geojson with X.<image ext> in the same folder."""
    pairs, missing = [], []
    for geojson in sorted(glob(os.path.join(folder, "*.geojson"))):
        stem = os.path.splitext(geojson)[0]
        images = [stem + e for e in IMAGE_EXTENSIONS if os.path.isfile(stem + e)]
        (pairs.append((geojson, images[0])) if images else missing.append(geojson))
    if missing:
        raise DatasetError(f"no image next to {missing[:5]} (extensions {IMAGE_EXTENSIONS})")
    if not pairs:
        raise DatasetError(f"{folder}: no *.geojson files found")
    return pairs


def argument_parser() -> argparse.ArgumentParser:
    """The tool's flags."""
    p = converter_parser(
        __doc__,
        src="folder with X.geojson + X.<image> pairs",
        out="dataset folder to write <split>.json and <split>/ in",
    )
    p.add_argument("--split", default="train")
    p.add_argument(
        "--category-property",
        default=None,
        help="feature property holding the class name (default: one class)",
    )
    p.add_argument("--default-category", default="grain")
    p.add_argument("--negate-y", action="store_true", help="y coordinates grow upwards")
    p.add_argument(
        "--pixel-coordinates",
        action="store_true",
        help="read the coordinates as pixels even if the file declares a crs",
    )
    return p


def main(argv=None) -> int:
    args = argument_parser().parse_args(argv)
    if not os.path.isdir(args.src):
        raise FileNotFoundError(f"--src: folder not found: {args.src}")
    stats = geojson_to_coco(
        find_pairs(args.src),
        args.out,
        args.split,
        category_property=args.category_property,
        default_category=args.default_category,
        negate_y=args.negate_y,
        pixel_coordinates=args.pixel_coordinates,
    )
    print_split_stats({args.split: stats}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))

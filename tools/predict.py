#!/usr/bin/env python
"""Segment every object of an image with a distilled promptable student (SAM / EfficientSAM).

    python tools/predict.py IMAGE --config-file CFG MODEL.WEIGHTS ckpt.pth \\
        [--prompts-json COCO.json | --grid N] [--prompt box|point] [--out DIR]

Prompts: with --prompts-json, one prompt per annotation of IMAGE in that COCO file (its box, or
with --prompt point its most interior pixel); with --grid N, an N x N grid of foreground points
(duplicates of one object are then merged by mask-IoU suppression, --nms-iou). Each prompt gives
the best of the student's three masks by predicted IoU, or its single mask when the config's
MODEL.SARD.MULTIMASK_OUTPUT trained that one (see sard/multimask.py).

Writes DIR/<image stem>_overlay.png (masks tinted and outlined, prompts in white) and
DIR/<image stem>_results.json (COCO results: image_id, category_id, segmentation as compressed
RLE, bbox, area, score = predicted IoU).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout without installing

from cli_values import float_range, int_range  # noqa: E402
from sard.user_errors import UserError, run_tool  # noqa: E402

DEFAULT_GRID = 16


def argument_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("image", metavar="IMAGE", help="image file to segment (any format PIL reads)")
    p.add_argument(
        "--config-file",
        required=True,
        metavar="FILE",
        help="the SARD config the student was trained with",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--prompts-json",
        metavar="COCO.json",
        help="COCO instances file; the annotations of IMAGE (matched by file name, or --image-id) "
        "become the prompts",
    )
    source.add_argument(
        "--grid",
        type=int_range(1),
        metavar="N",
        help="prompt with an N x N grid of foreground points instead (default when no "
        f"--prompts-json: {DEFAULT_GRID})",
    )
    p.add_argument(
        "--prompt",
        choices=("box", "point"),
        default="box",
        help="with --prompts-json: prompt with each annotation's box or with one interior point "
        "(default %(default)s); --grid always uses points",
    )
    p.add_argument(
        "--image-id",
        default=None,
        help="image id in the COCO file (default: the image whose file_name matches IMAGE) and "
        "the image_id written to the results (default 0 with --grid)",
    )
    p.add_argument(
        "--out", default="predictions", metavar="DIR", help="output folder (default %(default)s)"
    )
    p.add_argument(
        "--chunk-size",
        type=int_range(1),
        default=64,
        help="prompts decoded at once; lower it if memory runs out (default %(default)s)",
    )
    p.add_argument(
        "--min-score",
        type=float_range(),
        default=0.0,
        help="drop masks whose predicted IoU is below this (default %(default)s)",
    )
    p.add_argument(
        "--nms-iou",
        type=float_range(0, 1),
        default=0.7,
        help="with --grid: drop a mask overlapping a better-scored one by more than this mask IoU "
        "(default %(default)s)",
    )
    p.add_argument(
        "--device", default=None, help="cpu or cuda (default MODEL.DEVICE of the config)"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument(
        "opts",
        nargs="*",
        metavar="KEY VALUE",
        help="config overrides; MODEL.WEIGHTS path/to/model_final.pth is required",
    )
    return p


def read_prompts_json(path: str) -> dict:
    """The COCO file of --prompts-json; errors name the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--prompts-json: {path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            coco = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"--prompts-json: {path} is not valid JSON ({err})") from None
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        raise UserError(f"--prompts-json: {path} is not a COCO file (no 'images' list)")
    return coco


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags of ``argv``, options and positionals in any order."""
    args = argument_parser().parse_intermixed_args(argv)
    if args.image_id is not None and args.image_id.lstrip("-").isdigit():
        args.image_id = int(args.image_id)  # COCO ids are integers; other ids stay strings
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from PIL import Image
    from tqdm import tqdm

    from sard.data import read_image
    from sard.export import SardPredictor
    from sard.export.overlay import render_overlay
    from sard.export.segment import (
        coco_results,
        find_coco_image,
        grid_prompts,
        prompt_chunks,
        prompts_from_coco,
        segment_chunk,
        suppress_duplicates,
    )

    image = read_image(args.image)
    hw = image.shape[:2]
    if args.prompts_json:
        coco = read_prompts_json(args.prompts_json)
        entry = find_coco_image(coco, args.image, args.image_id)
        if (entry.get("height"), entry.get("width")) not in ((None, None), hw):
            raise UserError(
                f"{args.prompts_json}: image {entry['id']} is {entry.get('width')}x"
                f"{entry.get('height')} but {args.image} is {hw[1]}x{hw[0]}"
            )
        prompts = prompts_from_coco(coco, entry, args.prompt, hw)
    else:
        image_id = args.image_id if args.image_id is not None else 0
        prompts = grid_prompts(DEFAULT_GRID if args.grid is None else args.grid, hw, image_id)
    predictor = SardPredictor.from_config(
        args.config_file, None, args.opts, device=args.device, chunk_size=args.chunk_size
    )
    predictor.set_image(image)
    results = []
    chunks = list(prompt_chunks(prompts, args.chunk_size))
    for sl in tqdm(chunks, desc="prompt chunks", unit="chunk", disable=args.no_progress):
        # Full-size masks live one chunk at a time; results keep them as RLE.
        masks, scores = segment_chunk(predictor, prompts, sl)
        results += coco_results(prompts.image_id, prompts.category_ids[sl], masks, scores)
    results = [r for r in results if r["score"] >= args.min_score]
    if not args.prompts_json:
        results = suppress_duplicates(results, args.nms_iou)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.splitext(os.path.basename(args.image))[0]
    json_path = os.path.join(args.out, f"{stem}_results.json")
    with open(json_path, "w") as f:
        json.dump(results, f)
    picture = render_overlay(
        image, [r["segmentation"] for r in results], boxes=prompts.boxes, points=prompts.points
    )
    png_path = os.path.join(args.out, f"{stem}_overlay.png")
    Image.fromarray(picture).save(png_path)
    print(f"{len(prompts)} prompts -> {len(results)} masks; wrote {png_path} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))

#!/usr/bin/env python
"""Write Cityscapes *_gtFine_labelTrainIds.png (19 train ids, 255 ignore) from *_labelIds.png.

    python datasets/prepare_cityscapes_sem_seg.py --root $DETECTRON2_DATASETS/cityscapes

Same result as cityscapesscripts' createTrainIdLabelImgs for the semantic labels, without
needing that package. Existing files are overwritten.
"""

from __future__ import annotations

import argparse
import os
import sys
from glob import glob

from PIL import Image
from tqdm import tqdm

from sard.data.image_io import read_label_image
from sard.data.register import datasets_root
from sard.data.semantic import cityscapes_ids_to_train_ids
from sard.user_errors import UserError, run_tool


def argument_parser() -> argparse.ArgumentParser:
    """The tool's flags."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--root", default=os.path.join(datasets_root(), "cityscapes"))
    return p


def main(argv=None) -> int:
    args = argument_parser().parse_args(argv)
    files = sorted(glob(os.path.join(args.root, "gtFine", "*", "*", "*_gtFine_labelIds.png")))
    if not files:
        raise UserError(
            f"no gtFine/*/*/*_gtFine_labelIds.png under {args.root}; set --root to the "
            "cityscapes folder"
        )
    for path in tqdm(files, desc="cityscapes trainIds", unit="img"):
        train_ids = cityscapes_ids_to_train_ids(read_label_image(path))
        Image.fromarray(train_ids).save(path.replace("_labelIds.png", "_labelTrainIds.png"))
    print(f"wrote {len(files)} *_labelTrainIds.png under {args.root}/gtFine")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))

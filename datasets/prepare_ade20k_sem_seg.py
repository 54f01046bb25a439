#!/usr/bin/env python
"""Write ADEChallengeData2016/annotations_detectron2/ (train ids 0..149, 255 = "other").

    python datasets/prepare_ade20k_sem_seg.py --root $DETECTRON2_DATASETS/ADEChallengeData2016

Reads annotations/{training,validation}/*.png (0 = other, 1..150) and subtracts one.
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
from sard.data.semantic import ade20k_to_train_ids
from sard.user_errors import UserError, run_tool


def argument_parser() -> argparse.ArgumentParser:
    """The tool's flags."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--root", default=os.path.join(datasets_root(), "ADEChallengeData2016"))
    return p


def main(argv=None) -> int:
    args = argument_parser().parse_args(argv)
    total = 0
    for split in ("training", "validation"):
        files = sorted(glob(os.path.join(args.root, "annotations", split, "*.png")))
        out_dir = os.path.join(args.root, "annotations_detectron2", split)
        os.makedirs(out_dir, exist_ok=True)
        for path in tqdm(files, desc=f"ade20k {split}", unit="img"):
            labels = ade20k_to_train_ids(read_label_image(path))
            Image.fromarray(labels).save(os.path.join(out_dir, os.path.basename(path)))
        total += len(files)
    if total == 0:
        raise UserError(
            f"no annotations/{{training,validation}}/*.png under {args.root}; set --root to the "
            "ADEChallengeData2016 folder"
        )
    print(f"wrote {total} label maps under {args.root}/annotations_detectron2")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))

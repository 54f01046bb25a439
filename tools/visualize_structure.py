#!/usr/bin/env python
"""Draw W(i), E, C and D of a config's teacher over images (one PNG per image).

    python tools/visualize_structure.py --config-file CFG --input IMG [IMG ...] [KEY VALUE ...]

The teacher (MODEL.TEACHER.*, with its WEIGHTS) runs on each image resized as the student's
mapper would; W(i) is computed from its MODEL.TEACHER.TAP features with MODEL.SARD's betas, radius
and sigma, exactly as in training, and drawn over the model-input image.
"""

from __future__ import annotations

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from sard.user_errors import run_tool  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config-file", required=True, help="a SARD config (its teacher is used)")
    p.add_argument("--input", nargs="+", required=True, help="image files (any format PIL reads)")
    p.add_argument("--out", default="output/structure", help="folder for the PNGs")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p.parse_args(argv)


def main(argv=None) -> list:
    import torch

    from sard.config import load_config, validate_config
    from sard.config.sard_config import resize_mode, structure_map_kwargs
    from sard.data import read_image
    from sard.data.transforms import make_plan
    from sard.distill.build import build_member, member_image_size
    from sard.structure import compute_structure_map, render_structure_map

    args = parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    validate_config(cfg)
    teacher = build_member(cfg, cfg.MODEL.TEACHER, "teacher").eval()
    size = member_image_size(cfg, cfg.MODEL.TEACHER.FAMILY)
    out_hw = (size, size) if isinstance(size, int) else tuple(size)
    s = cfg.MODEL.SARD
    os.makedirs(args.out, exist_ok=True)
    written = []
    for path in args.input:
        image = read_image(path)
        canvas = make_plan(image.shape[:2], out_hw, resize_mode(cfg)).apply_image(image)
        x = torch.from_numpy(canvas).permute(2, 0, 1).float()[None]
        with torch.no_grad():
            if hasattr(teacher, "extract_features"):
                feats = teacher.extract_features(x)
            else:
                feats = teacher.forward_semantic(x).features
        smap = compute_structure_map(feats[cfg.MODEL.TEACHER.TAP], **structure_map_kwargs(s))
        name = os.path.splitext(os.path.basename(path))[0] + "_structure.png"
        written.append(str(render_structure_map(canvas, smap, os.path.join(args.out, name))))
        print(f"{path} -> {written[-1]}")
    return written


if __name__ == "__main__":
    sys.exit(run_tool(main))

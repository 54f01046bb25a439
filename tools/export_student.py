#!/usr/bin/env python
"""Export a distilled student alone to TorchScript or ONNX and verify it against PyTorch.

    python tools/export_student.py --config-file CFG MODEL.WEIGHTS ckpt.pth \\
        --format onnx --out DIR

MODEL.WEIGHTS is a SARD training checkpoint (OUTPUT_DIR/model_final.pth: its student.* weights
are taken; the teacher is never built) or a bare student state dict. Promptable students (SAM,
EfficientSAM) give two graphs, image_encoder and mask_decoder, with dynamic batch and prompt
counts; Mask2Former / ViT students give one graph, semantic (images -> per-class scores).
DIR also receives manifest.json: input/output names and shapes, resize mode, image size,
mean/std handling and the prompt label convention.

Every file is run on random inputs (the traced sizes and other batch / prompt counts) and
compared with the PyTorch student; the maximum absolute difference is printed. The exit status
is 1 when a difference exceeds --tolerance x max(1, max|torch output|), or when the files do
not hold exactly the student's parameters.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout without installing

from cli_values import float_range, int_range  # noqa: E402
from sard.user_errors import run_tool  # noqa: E402

DEFAULT_TOLERANCE = 1e-4  # sard.export.DEFAULT_TOLERANCE; repeated so --help needs no torch


def argument_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--config-file",
        required=True,
        metavar="FILE",
        help="the SARD config the student was trained with",
    )
    p.add_argument(
        "--format",
        choices=("torchscript", "onnx"),
        default="onnx",
        help="torchscript: traced .pt files (torch.jit.load); onnx: .onnx files (ONNX Runtime)",
    )
    p.add_argument(
        "--out", required=True, metavar="DIR", help="folder for the graphs and manifest.json"
    )
    p.add_argument(
        "--tolerance",
        type=float_range(0),
        default=DEFAULT_TOLERANCE,
        help="allowed max |export - torch| relative to max(1, max|torch|) (default %(default)g)",
    )
    p.add_argument(
        "--opset", type=int_range(9), default=17, help="ONNX opset version (default %(default)s)"
    )
    p.add_argument(
        "--seed", type=int_range(0), default=0, help="seed of the random verification inputs"
    )
    p.add_argument(
        "opts",
        nargs="*",
        metavar="KEY VALUE",
        help="config overrides, e.g. MODEL.WEIGHTS output/model_final.pth "
        "INPUT.IMAGE_SIZE '(1024, 1024)'",
    )
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags of ``argv``, options and positionals in any order."""
    return argument_parser().parse_intermixed_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from sard.export import export_student, load_student
    from sard.export.loading import config_resize_mode

    cfg, student = load_student(args.config_file, args.opts)
    report = export_student(
        student,
        args.out,
        args.format,
        resize_mode=config_resize_mode(cfg),
        tolerance=args.tolerance,
        opset=args.opset,
        seed=args.seed,
        multimask=cfg.MODEL.SARD.MULTIMASK_OUTPUT,
    )
    print("\n".join(report.lines()))
    print(f"manifest: {report.manifest}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(run_tool(main))

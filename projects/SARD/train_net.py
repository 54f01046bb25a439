#!/usr/bin/env python
"""SARD training with detectron2's DefaultTrainer.

Usage (from the repository root): ``python projects/SARD/train_net.py --config-file CFG``, or
``python tools/train_net.py --engine detectron2 --config-file CFG``. Same YAML, same effective
config (``sard.engine.setup.setup_config``) and same training as the built-in engine.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # repository root, for `sard`
sys.path.insert(0, HERE)  # for `sard_project`

from sard.config import detectron2_import_error  # noqa: E402

# Imports detectron2 once, without its torch.jit deprecation noise; a broken install is one line.
if detectron2_import_error():
    sys.exit(f"error: {detectron2_import_error()}")

from detectron2.engine import default_argument_parser, default_setup, launch  # noqa: E402
from detectron2.utils import comm  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

from sard.engine.launch import launch_command_line  # noqa: E402
from sard.engine.setup import setup_config  # noqa: E402
from sard.engine.subnormals import flush_subnormal_floats  # noqa: E402
from sard_project import add_sard_config  # noqa: E402,F401  (registers the meta-architecture)
from sard_project.trainer import (  # noqa: E402
    SardDetectionCheckpointer,
    Trainer,
    build_inference_model,
)


def setup(args):
    """The effective config of the built-in engine, on detectron2's defaults; logging for
    detectron2 and ``sard.*`` (console and OUTPUT_DIR/log.txt); config.yaml saved."""
    cfg = setup_config(
        args.config_file, args.opts, use_detectron2=True, training=not args.eval_only
    )
    cfg.defrost()
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False  # prompts come from masks, not boxes
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="sard")
    return cfg


def main(args):
    # Before any torch work, so every worker thread inherits it; the trainer checks and logs.
    flush_subnormal_floats(check=False)
    cfg = setup(args)
    if args.eval_only:
        model = build_inference_model(cfg)  # the student alone: evaluation never runs a teacher
        SardDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def launch_detectron2(args):
    launch_command_line(launch, main, args)


def parse_args(argv: list[str] | None = None):
    """detectron2's command line (``default_argument_parser``); ``tools/train_net.py`` takes the
    same flags, plus --engine."""
    return default_argument_parser().parse_args(argv)


def run(argv=None) -> None:
    launch_detectron2(parse_args(argv))


if __name__ == "__main__":
    from sard.user_errors import run_tool

    sys.exit(run_tool(run))  # expected errors (bad key, missing file, divergence): one line

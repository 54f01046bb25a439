#!/usr/bin/env python
"""SARD training with detectron2's DefaultTrainer.

Usage (from the repository root): ``python projects/SARD/train_net.py --config-file CFG``, or
``python tools/train_net.py --engine detectron2 --config-file CFG``. Same YAML as the built-in
engine.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # repository root, for `sard`
sys.path.insert(0, HERE)  # for `sard_project`

from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.data import build_detection_test_loader, build_detection_train_loader  # noqa: E402
from detectron2.engine import (
    DefaultTrainer,
    default_argument_parser,
    default_setup,
    launch,
)  # noqa: E402

from sard.config import validate_config  # noqa: E402
from sard.engine.builders import build_evaluator, build_mapper  # noqa: E402
from sard.engine.solver import build_lr_scheduler, build_optimizer  # noqa: E402
from sard_project import add_sard_config  # noqa: E402,F401  (registers the meta-architecture)


class Trainer(DefaultTrainer):
    """DefaultTrainer with SARD's mapper, evaluator, AdamW (trainable parameters) and schedule."""

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=build_mapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(
            cfg, dataset_name, mapper=build_mapper(cfg, is_train=False)
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_optimizer(cls, cfg, model):
        # The FrozenTeacher exposes no parameters, so the teacher never enters the optimizer.
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)


def setup(args):
    cfg = get_cfg()
    add_sard_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    validate_config(cfg)
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False  # prompts come from masks, not boxes
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        res = Trainer.test(cfg, model)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def launch_detectron2(args):
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    launch_detectron2(default_argument_parser().parse_args())

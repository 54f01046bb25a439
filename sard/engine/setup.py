"""Command line -> effective config and logging, the same for both engines.

``setup_config`` is what ``tools/train_net.py`` (built-in engine) and
``projects/SARD/train_net.py`` (detectron2) call: defaults (detectron2's own with
``use_detectron2``), the YAML with its ``_BASE_`` chain, ``KEY VALUE`` overrides (also
``MODEL.{TEACHER,STUDENT}.ARCH.*``), dataset paths registered and checked, every value validated,
then the training contract applied (``sard.config.contract``) and the result frozen.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Sequence

from fvcore.common.config import CfgNode

from sard import distributed as comm
from sard.config import load_config, validate_config
from sard.config.contract import effective_config

from .builders import is_promptable, training_records

logger = logging.getLogger(__name__)


def register_config_datasets(cfg: CfgNode, *, training: bool = True) -> None:
    """Register the path entries of DATASETS.TEST, and of DATASETS.TRAIN when training
    (``sard.data.paths``)."""
    from sard.data.paths import register_dataset_paths

    semantic = not is_promptable(cfg)
    if training:
        # Folders of images are unlabeled datasets: trainable with pseudo-labels only.
        register_dataset_paths(
            "DATASETS.TRAIN",
            cfg.DATASETS.TRAIN,
            semantic=semantic,
            unlabeled_ok=bool(cfg.MODEL.SARD.PSEUDO_LABELS.ENABLED),
        )
    register_dataset_paths("DATASETS.TEST", cfg.DATASETS.TEST, semantic=semantic)


def train_set_size(cfg: CfgNode) -> int:
    """Samples of one training epoch (``training_records``), loaded only when the contract needs
    them (MAX_EPOCHS > 0)."""
    if float(cfg.SOLVER.MAX_EPOCHS) <= 0 or not cfg.DATASETS.TRAIN:
        return 0
    return len(training_records(cfg))


def resolve_config(cfg: CfgNode, *, training: bool = True) -> CfgNode:
    """Register dataset paths, validate, apply the contract: the frozen effective config.

    ``training`` False (evaluation only): the training set is neither needed nor read.
    """
    check_config(cfg, training=training)
    return effective_config(cfg, train_set_size(cfg) if training else None)


def check_config(cfg: CfgNode, *, training: bool = True) -> None:
    """Every check both engines make before building anything: values and weights paths, then
    the dataset path entries (registered, which checks they exist and are usable)."""
    validate_config(cfg, training=training)  # weights first: the cheapest, clearest stop
    register_config_datasets(cfg, training=training)


def setup_config(
    config_file: str,
    opts: Sequence[str] = (),
    *,
    use_detectron2: bool = False,
    training: bool = True,
) -> CfgNode:
    """The effective, frozen config of a command line (see the module docstring)."""
    cfg = load_config(config_file, list(opts), use_detectron2=use_detectron2)
    return resolve_config(cfg, training=training)


def log_format() -> str:
    return f"[%(asctime)s r{comm.get_rank()}] %(name)s %(levelname)s: %(message)s"


def configure_logging(cfg: CfgNode) -> None:
    """``sard.*`` (and everything else) at INFO on stdout, and into OUTPUT_DIR/log.txt on the
    main process; the config is saved as OUTPUT_DIR/config.yaml. Used by the built-in engine;
    the detectron2 engine attaches detectron2's own handlers to the ``sard`` logger instead."""
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    handlers = [logging.StreamHandler(sys.stdout)]
    if comm.is_main_process():
        handlers.append(logging.FileHandler(os.path.join(cfg.OUTPUT_DIR, "log.txt")))
        with open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:
            f.write(cfg.dump())
    logging.basicConfig(level=logging.INFO, format=log_format(), handlers=handlers, force=True)

#!/usr/bin/env python
"""Train or evaluate a SARD distiller.

    python tools/train_net.py --config-file CFG [KEY VALUE ...]

Takes detectron2's command line. ``--engine auto`` (default) uses the detectron2 project in
``projects/SARD`` when detectron2 is importable, else SARD's built-in trainer; both read the same
YAML. On a CPU-only machine ``--num-gpus N`` starts N processes that train with DDP over gloo.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout without installing


def argument_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config-file", default="", metavar="FILE", help="path to the YAML config")
    p.add_argument(
        "--resume", action="store_true", help="continue from OUTPUT_DIR's last checkpoint"
    )
    p.add_argument("--eval-only", action="store_true", help="evaluate MODEL.WEIGHTS and exit")
    p.add_argument(
        "--num-gpus", type=int, default=1, help="processes per machine (GPUs, or CPU workers)"
    )
    p.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    p.add_argument("--machine-rank", type=int, default=0, help="rank of this machine")
    p.add_argument("--dist-url", default="auto", help="tcp://HOST:PORT for multi-machine runs")
    p.add_argument(
        "--engine",
        choices=("auto", "detectron2", "sard"),
        default="auto",
        help="training engine: detectron2's DefaultTrainer or SARD's built-in one",
    )
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p


def setup(args: argparse.Namespace):
    """Effective frozen config (``sard.engine.setup``); OUTPUT_DIR with config.yaml and log.txt;
    logging configured."""
    from sard.engine.setup import configure_logging, setup_config

    cfg = setup_config(args.config_file, args.opts, training=not args.eval_only)
    configure_logging(cfg)
    return cfg


def main(args: argparse.Namespace):
    """One process's work: evaluate MODEL.WEIGHTS, or train. Returns the metrics."""
    from sard.engine.subnormals import flush_subnormal_floats
    from sard.engine.trainer import Trainer, evaluate_weights

    # Before any torch work, so every worker thread inherits it; the trainer checks and logs.
    flush_subnormal_floats(check=False)
    cfg = setup(args)
    if args.eval_only:
        results = evaluate_weights(cfg)
    else:
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        results = trainer.train()
    if results:
        logging.getLogger("sard").info("results: %s", results)
    return results


def check_before_handover(args: argparse.Namespace) -> None:
    """The config checks both engines make (values, weights paths, dataset paths), made before
    the detectron2 script takes over, so a bad command line fails here in one line whichever
    engine runs it."""
    from sard.config import load_config
    from sard.engine.setup import check_config

    cfg = load_config(args.config_file, list(args.opts), use_detectron2=True)
    check_config(cfg, training=not args.eval_only)


def resolve_engine(choice: str) -> str:
    from sard.config import detectron2_available

    if choice == "auto":
        return "detectron2" if detectron2_available() else "sard"
    if choice == "detectron2" and not detectron2_available():
        from sard.config import detectron2_import_error

        sys.exit(f"--engine detectron2: {detectron2_import_error()} (see projects/SARD/README.md)")
    return choice


def _is_engine_arg(argv, i: int) -> bool:
    a = argv[i]
    return a == "--engine" or a.startswith("--engine=") or (i > 0 and argv[i - 1] == "--engine")


def run(argv=None) -> int:
    """Parse, pick the engine, launch; expected errors end as one line (``sard.user_errors``)."""
    args = argument_parser().parse_args(argv)
    if resolve_engine(args.engine) == "detectron2":
        check_before_handover(args)
        # Hand over to the detectron2 project's own script (same flags, minus --engine), so
        # detectron2's launcher spawns processes from a normally importable __main__.
        script = os.path.join(REPO, "projects", "SARD", "train_net.py")
        given = list(sys.argv[1:] if argv is None else argv)
        command = [sys.executable, script]
        command += [a for i, a in enumerate(given) if not _is_engine_arg(given, i)]
        if argv is None:  # the command line: this process becomes the detectron2 script
            os.execv(sys.executable, command)
        # Called from Python: the caller's process must survive, so the script is a child.
        return subprocess.call(command)
    from sard.engine.launch import launch, launch_command_line

    launch_command_line(launch, main, args)


if __name__ == "__main__":
    from sard.user_errors import run_tool

    sys.exit(run_tool(run))

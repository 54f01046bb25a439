#!/usr/bin/env python
"""CPU training-step time with subnormal floats kept (IEEE) against flushed to zero.

Both engines flush subnormal float32 values (|x| < 1.18e-38) to zero on CPU
(``sard.engine.subnormals.flush_subnormal_floats``). This tool measures what that buys for a
given model and checkpoint: one trainer and data stream per mode, both from the same weights,
timed in alternating rounds (median seconds per step of each), so the ratio is meaningful on
a noisy machine. It runs on one thread (see main).
It also counts the subnormal values in the parameters, their gradients and the optimizer's
state after the timed steps; where all three are 0 they live in the activations of the forward
and backward passes (e.g. sigmoids and softmaxes of very negative logits), which are not kept.

A randomly initialised model has almost no subnormals, so the ratio is about 1; the slowdown
appears once a model has trained (pass its checkpoint as MODEL.WEIGHTS; the optimizer starts
fresh, as with MODEL.WEIGHTS in training):

    python tools/bench_subnormals.py --config-file configs/tiny/sam_tiny_to_efficientsam_tiny.yaml \\
        MODEL.WEIGHTS output/teacher/model_0000999.pth DATASETS.TRAIN "('data/train.json',)"
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from typing import Dict, Iterable, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench_train import time_iters  # noqa: E402
from cli_values import int_range  # noqa: E402
from sard.user_errors import run_tool  # noqa: E402


def argument_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config-file", required=True, help="YAML of the run to time")
    p.add_argument("--iters", type=int_range(1), default=4, help="timed steps per round and mode")
    p.add_argument("--rounds", type=int_range(1), default=3, help="alternating rounds per mode")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p


def count_subnormal(tensors: Iterable) -> int:
    """Number of float32 entries whose exponent bits are all 0 and mantissa is not: the
    subnormals (0 < |x| < 2^-126). Read from the bit pattern, because with flushing on the
    CPU also treats subnormal *inputs* as 0, so a float comparison would see none. Other
    dtypes and non-tensors are skipped."""
    import torch

    total = 0
    for t in tensors:
        if torch.is_tensor(t) and t.dtype == torch.float32:
            magnitude = t.detach().contiguous().view(torch.int32) & 0x7FFFFFFF
            total += int(((magnitude > 0) & (magnitude < 0x00800000)).sum())
    return total


def where_subnormals_live(model, optimizer) -> Dict[str, int]:
    """Subnormal counts in the trainable parameters, their gradients and the optimizer state."""
    params = [p for p in model.parameters() if p.requires_grad]
    state = [v for s in optimizer.state.values() for v in s.values()]
    return {
        "parameters": count_subnormal(params),
        "gradients": count_subnormal(p.grad for p in params),
        "optimizer state": count_subnormal(state),
    }


def main(argv: List[str] | None = None) -> None:
    import torch

    from sard.engine import Trainer
    from sard.engine.builders import build_mapper
    from sard.engine.data import TrainStream
    from sard.engine.setup import setup_config

    args = argument_parser().parse_args(argv)
    # One thread: the mode is switched per round, and a switch reaches the calling thread only
    # (torch's worker threads keep the mode they were started with: sard.engine.subnormals).
    torch.set_num_threads(1)
    # setup_config as train_net: checked keys, dataset paths registered, effective config.
    cfg = setup_config(args.config_file, list(args.opts) + ["SOLVER.LOG_PERIOD", "1000000"])
    if not cfg.DATASETS.TRAIN:
        raise SystemExit("error: DATASETS.TRAIN is empty: name the training set to time")
    # One trainer per mode, both from the same weights: flushing rewrites the values it meets
    # (an optimizer state flushed once has no subnormals left to slow the other mode down).
    trainers = {flush: Trainer(cfg) for flush in (False, True)}
    streams = {}
    batch = int(cfg.SOLVER.IMS_PER_BATCH)
    for flush, trainer in trainers.items():
        trainer.resume_or_load(resume=False)  # MODEL.WEIGHTS, when given; a fresh optimizer
        trainer.model.train()
        mapper = build_mapper(trainer.cfg, True)
        streams[flush] = iter(TrainStream(trainer.records, mapper, batch, seed=0))

    def timed_steps(flush: bool, steps: int) -> List[float]:
        torch.set_flush_denormal(flush)
        return time_iters(trainers[flush], streams[flush], steps, sync=lambda: None)  # CPU

    for flush in trainers:
        timed_steps(flush, 1)  # warm-up: allocations and first-call costs
    kept: List[float] = []
    flushed: List[float] = []
    for _ in range(args.rounds):
        kept += timed_steps(False, args.iters)
        flushed += timed_steps(True, args.iters)
    counts = where_subnormals_live(trainers[False].model, trainers[False].optimizer)
    torch.set_flush_denormal(True)  # leave the process as the engines do

    k, f = statistics.median(kept), statistics.median(flushed)
    weights = cfg.MODEL.WEIGHTS or "random initialisation"
    print(
        f"\n{args.config_file} from {weights}; {args.rounds} x {args.iters} steps per mode, "
        "one thread"
    )
    print(f"{'subnormals':<22}{'s/step':>10}")
    print(f"{'kept (IEEE)':<22}{k:>10.3f}")
    print(f"{'flushed to zero':<22}{f:>10.3f}")
    print(f"kept / flushed: {k / f:.2f}x")
    print("subnormal values in the kept-mode trainer after its steps:")
    for name, n in counts.items():
        print(f"  {name:<18}{n:>12,}")


if __name__ == "__main__":
    sys.exit(run_tool(main))

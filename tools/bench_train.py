#!/usr/bin/env python
"""Training-step speed of SARD against the baselines, and the teacher cache cold vs warm.

All runs share one synthetic dataset, one teacher/student pair and one batch size, and are timed
in the same process (rounds interleaved, median seconds per iteration), so the ratios are
meaningful on a noisy machine. Printed: iterations/s per method, SARD / uniform, and SARD with
the teacher cache on its first pass over the data (cold: teacher runs, results stored) against
its second (warm: teacher skipped).

    python tools/bench_train.py                      # CPU defaults, a few minutes
    python tools/bench_train.py --device cuda --image-size 1024 --teacher-size vit_b
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from cli_values import int_range  # noqa: E402
from sard.user_errors import run_tool  # noqa: E402

TINY = os.path.join(REPO, "configs", "tiny", "sam_tiny_to_efficientsam_tiny.yaml")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--image-size", type=int_range(32), default=128)
    p.add_argument("--batch", type=int_range(1), default=2)
    p.add_argument(
        "--iters", type=int_range(1), default=6, help="timed iterations per method and round"
    )
    p.add_argument("--rounds", type=int_range(1), default=2, help="interleaved rounds per method")
    p.add_argument(
        "--teacher-size", default="tiny", help="SAM size of the teacher (tiny, vit_b, ...)"
    )
    p.add_argument("--teacher-embed-dim", type=int_range(4), default=192, help="tiny teacher width")
    p.add_argument("--teacher-depth", type=int_range(1), default=6, help="tiny teacher depth")
    p.add_argument("--student-size", default="tiny", help="EfficientSAM size of the student")
    p.add_argument("--methods", nargs="+", default=["none", "uniform", "cwd", "sard"])
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def make_data(root: str, image_size: int, num_images: int) -> None:
    from sard.data import register_rockfrag
    from sard.data.synthetic import SynthConfig
    from sard.data.synthetic_dataset import generate_rockfrag_synth

    generate_rockfrag_synth(
        root,
        num_images={"train": num_images},
        config=SynthConfig(image_size=image_size),
        seed=0,
        preview=False,
        progress=False,
    )
    register_rockfrag("bench_train", os.path.join(root, "train.json"), os.path.join(root, "train"))


def build_trainer(args, method: str, out: str, cache: bool):
    from sard.config import load_config
    from sard.engine import Trainer

    overrides = {
        "MODEL.SARD.METHOD": method,
        "MODEL.DEVICE": args.device,
        "OUTPUT_DIR": out,
        "INPUT.IMAGE_SIZE": f"({args.image_size}, {args.image_size})",
        "INPUT.RANDOM_FLIP": "none",  # identical inputs every epoch, so the cache can hit
        "DATASETS.TRAIN": "('bench_train',)",
        "DATASETS.TEST": "()",
        "SOLVER.IMS_PER_BATCH": str(args.batch),
        "SOLVER.MAX_ITER": "1000000",
        "SOLVER.CHECKPOINT_PERIOD": "1000000",
        "SOLVER.LOG_PERIOD": "1000000",
        "MODEL.SARD.CACHE.ENABLED": str(cache),
        "MODEL.TEACHER.SIZE": args.teacher_size,
        "MODEL.STUDENT.SIZE": args.student_size,
    }
    if args.teacher_size == "tiny":
        overrides.update(
            {
                "MODEL.TEACHER.ARCH.EMBED_DIM": str(args.teacher_embed_dim),
                "MODEL.TEACHER.ARCH.DEPTH": str(args.teacher_depth),
                "MODEL.TEACHER.ARCH.NUM_HEADS": "4",
                "MODEL.TEACHER.ARCH.GLOBAL_ATTN_INDEXES": str([args.teacher_depth - 1]),
            }
        )
    opts = [item for pair in overrides.items() for item in pair]
    cfg = load_config(TINY, opts)
    trainer = Trainer(cfg)
    trainer.model.train()
    return trainer


def time_iters(trainer, stream_iter, n: int, sync) -> list:
    times = []
    for _ in range(n):
        batch = next(stream_iter)
        sync()
        t0 = time.perf_counter()
        trainer.run_step(trainer.model, batch, 0)
        sync()
        times.append(time.perf_counter() - t0)
    return times


def main(argv=None) -> None:
    import torch

    from sard.engine.builders import build_mapper
    from sard.engine.data import TrainStream
    from sard.engine.subnormals import flush_subnormal_floats

    # Before any torch work, so every worker thread inherits it (the Trainer checks).
    flush_subnormal_floats(check=False)

    args = parse_args(argv)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    epoch_images = args.batch * args.iters
    with tempfile.TemporaryDirectory() as tmp:
        make_data(os.path.join(tmp, "data"), args.image_size, epoch_images)
        trainers, streams = {}, {}
        for m in args.methods:
            trainers[m] = build_trainer(args, m, os.path.join(tmp, m), cache=False)
        trainers["sard+cache"] = build_trainer(args, "sard", os.path.join(tmp, "c"), cache=True)
        for name, tr in trainers.items():
            mapper = build_mapper(tr.cfg, is_train=True)
            stream = TrainStream(tr.records, mapper, args.batch, seed=0)
            streams[name] = iter(stream)
            time_iters(tr, streams[name], 1, sync)  # warm-up (allocations, first-call costs)
        # The warm-up filled one batch of the cache: restart it so the first epoch is all cold.
        trainers["sard+cache"].model.cache._memory.clear()
        results = {name: [] for name in args.methods}
        for _ in range(args.rounds):
            for m in args.methods:
                results[m] += time_iters(trainers[m], streams[m], args.iters, sync)
        cache_tr = trainers["sard+cache"]
        cache_stream = iter(
            TrainStream(cache_tr.records, build_mapper(cache_tr.cfg, True), args.batch, seed=0)
        )
        cold = time_iters(cache_tr, cache_stream, args.iters, sync)  # epoch 1: every image new
        warm = time_iters(cache_tr, cache_stream, args.iters, sync)  # epoch 2: every image cached
        hits, misses = cache_tr.model.cache.hits, cache_tr.model.cache.misses

    med = {k: statistics.median(v) for k, v in results.items()}
    print(
        f"\nimage {args.image_size}, batch {args.batch}, teacher sam:{args.teacher_size}, "
        f"student efficient_sam:{args.student_size}, device {args.device}, "
        f"{args.rounds}x{args.iters} iters"
    )
    print(f"{'run':<22}{'s/iter':>10}{'iter/s':>10}{'vs none':>10}")
    for k, v in med.items():
        base = med.get("none", v)
        print(f"{k:<22}{v:>10.3f}{1 / v:>10.2f}{v / base:>9.2f}x")
    c, w = statistics.median(cold), statistics.median(warm)
    print(f"{'sard, cache cold':<22}{c:>10.3f}{1 / c:>10.2f}")
    print(f"{'sard, cache warm':<22}{w:>10.3f}{1 / w:>10.2f}")
    if "sard" in med and "uniform" in med:
        print(
            f"\nSARD / uniform feature distillation: {med['sard'] / med['uniform']:.3f}x"
            " (goal <= 1.1x)"
        )
    print(f"cache cold / warm: {c / w:.2f}x  (hits {hits}, misses {misses})")
    if "none" in med:
        share = (med["sard"] - med["none"]) if "sard" in med else float("nan")
        print(
            f"warm SARD step vs scratch step: {w / med['none']:.2f}x; teacher + head share of a "
            f"cold step: {share / med['sard']:.0%}"
            if "sard" in med
            else ""
        )


if __name__ == "__main__":
    sys.exit(run_tool(main))

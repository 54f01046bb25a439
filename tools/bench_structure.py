"""How far W(i) is from the memory-bound limit: `compute_structure_map` vs `features.sum()`.

Times both in the same run, interleaved rep by rep (so a busy machine slows both alike), after
warm-up, and prints the median milliseconds and the ratio to the single pass, for several
density radii (the cost should not grow with r) and for both implementations of the channel
moments ("chunked", the CPU default; "dense", the default on GPUs), so one run shows which
one suits the device.

    .venv/bin/python tools/bench_structure.py                     # (8, 256, 64, 64) fp32 on CPU
    .venv/bin/python tools/bench_structure.py --device cuda --dtype bfloat16
    .venv/bin/python tools/bench_structure.py --paths dense --radii 7
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cli_values import int_range  # noqa: E402
from sard.structure import compute_structure_map  # noqa: E402
from sard.structure.moments import MOMENTS_PATHS, forced_moments_path  # noqa: E402
from sard.user_errors import run_tool  # noqa: E402

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    """A function that runs a callable once and returns its wall time in milliseconds."""

    def run(fn: Callable[[], object]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - start) * 1e3

    return run


def argument_parser() -> argparse.ArgumentParser:
    """The tool's flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int_range(1), default=8)
    parser.add_argument("--channels", type=int_range(1), default=256)
    parser.add_argument("--size", type=int_range(2), default=64, help="feature map height = width")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument(
        "--reps", type=int_range(1), default=7, help="timed repetitions (median shown)"
    )
    parser.add_argument("--warmup", type=int_range(0), default=2)
    parser.add_argument("--radii", type=int_range(0), nargs="+", default=[3, 7, 15])
    parser.add_argument(
        "--paths",
        nargs="+",
        choices=MOMENTS_PATHS,
        default=list(MOMENTS_PATHS),
        help="implementations of the channel moments to time",
    )
    parser.add_argument("--threads", type=int_range(1), default=None, help="torch.set_num_threads")
    return parser


def main(argv=None) -> None:
    args = argument_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    shape = (args.batch, args.channels, args.size, args.size)
    features = torch.randn(shape, generator=generator).to(device=device, dtype=DTYPES[args.dtype])
    candidates: dict[str, Callable[[], object]] = {"features.sum()": lambda: features.sum()}
    for path in args.paths:
        for r in args.radii:

            def structure_map(r: int = r, path: str = path) -> object:
                with forced_moments_path(path):
                    return compute_structure_map(features, radius=r)

            candidates[f"W(i) {path}, r={r}"] = structure_map

    timer = _timer(device)
    for _ in range(args.warmup):
        for fn in candidates.values():
            timer(fn)
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(args.reps):
        for name, fn in candidates.items():
            times[name].append(timer(fn))

    base = statistics.median(times["features.sum()"])
    print(
        f"shape {shape} {args.dtype} on {device}, torch threads {torch.get_num_threads()}, "
        f"median of {args.reps} reps"
    )
    width = max(len(name) for name in times)
    print(f"{'what':<{width}} {'ms':>10} {'x one pass':>11}")
    for name, values in times.items():
        ms = statistics.median(values)
        print(f"{name:<{width}} {ms:>10.2f} {ms / base:>11.1f}")


if __name__ == "__main__":
    sys.exit(run_tool(main))

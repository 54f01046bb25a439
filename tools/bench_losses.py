"""Benchmark: one training step (forward + backward) of SARD's distillation head, structure-
weighted (W computed from the teacher features) versus uniform, side by side in one run.

    .venv/bin/python tools/bench_losses.py                     # (8, 256, 64, 64), CPU or CUDA
    .venv/bin/python tools/bench_losses.py --student           # + an EfficientSAM-Ti forward
    .venv/bin/python tools/bench_losses.py --batch 2 --repeats 3 --amp

Prints median times and the SARD / uniform ratio (goal: <= 1.3x), the SARD step with W given
(as when the teacher cache holds W), W alone, and, with ``--student``, the head step next to a
student forward at the matching image size. W is computed with the device's default moments
path (chunked on CPU, dense elsewhere); the other path is timed too, in its own rows, so one run
shows what the choice is worth on the device.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cli_flags import add_timing_flags  # noqa: E402
from cli_values import int_range  # noqa: E402
from sard.losses import SARDDistillationHead  # noqa: E402
from sard.structure.moments import MOMENTS_PATHS, forced_moments_path, moments_path  # noqa: E402
from sard.user_errors import UserError, run_tool  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--batch", type=int_range(1), default=8, help="images per step")
    p.add_argument(
        "--channels", type=int_range(1), default=256, help="student and teacher channels"
    )
    p.add_argument(
        "--size", type=int_range(2), default=64, help="feature map side (64 = SAM at 1024)"
    )
    p.add_argument("--dim", type=int_range(1), default=256, help="D, projection channels")
    add_timing_flags(p, repeats=5, warmup=2, what="steps per method")
    p.add_argument("--device", default="auto", help="'auto' (cuda if present), 'cpu', 'cuda'")
    p.add_argument("--amp", action="store_true", help="bf16 autocast")
    p.add_argument(
        "--threads", type=int_range(0), default=0, help="torch CPU threads (0 = default)"
    )
    p.add_argument("--student", action="store_true", help="also time an EfficientSAM-Ti forward")
    p.add_argument("--student-size", default="ti", help="EfficientSAM size for --student")
    p.add_argument(
        "--image-size", type=int_range(16), default=1024, help="student input side for --student"
    )
    return p.parse_args(argv)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    fns: Dict[str, Callable[[], None]], repeats: int, warmup: int, device: torch.device
) -> Dict[str, List[float]]:
    """Run each fn ``warmup`` times, then ``repeats`` rounds of all fns; seconds per call.

    The order rotates every round so that no fn always runs right after the same other one
    (on a GPU, the step after a long student forward ran measurably slower).
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    names = list(fns)
    times: Dict[str, List[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            sync(device)
            start = time.perf_counter()
            fns[name]()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def head_step(
    head: SARDDistillationHead,
    student: torch.Tensor,
    teacher: torch.Tensor,
    amp,
    weight: Optional[torch.Tensor] = None,
) -> Callable[[], None]:
    def step() -> None:
        head.zero_grad(set_to_none=True)
        student.grad = None
        with amp():
            out = head(student, teacher, weight=weight)
        (out["loss_fc"] + out["loss_da"]).backward()

    return step


def with_moments_path(fn: Callable[[], None], path: str) -> Callable[[], None]:
    """``fn`` with W's channel moments forced onto ``path``."""

    def run() -> None:
        with forced_moments_path(path):
            fn()

    return run


def student_forward(
    args: argparse.Namespace, device: torch.device, amp
) -> Optional[Callable[[], None]]:
    """A training-mode EfficientSAM feature forward, or None (with a message) if unavailable."""
    try:
        from sard.models import build_model

        model = build_model(
            "efficient_sam", size=args.student_size, image_size=args.image_size, weights=""
        )
    except Exception as err:  # any failure means "no student to compare with", not a crash
        print(
            f"[student] skipped: build_model('efficient_sam', size={args.student_size!r}) "
            f"failed: {err}"
        )
        return None
    if not hasattr(model, "extract_features"):
        print("[student] skipped: the efficient_sam model has no extract_features()")
        return None
    model = model.to(device).train()
    images = torch.rand(args.batch, 3, args.image_size, args.image_size, device=device) * 255

    def forward() -> None:
        with amp():
            feats = model.extract_features(images)
        del feats

    return forward


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.amp else nullcontext

    try:
        from sard.structure import compute_structure_map  # noqa: F401
    except ImportError as err:
        raise UserError(f"sard.structure.compute_structure_map is needed for the SARD head: {err}")

    torch.manual_seed(0)
    shape = (args.batch, args.channels, args.size, args.size)
    sard = SARDDistillationHead(args.channels, args.channels, dim=args.dim).to(device)
    uniform = SARDDistillationHead(args.channels, args.channels, dim=args.dim, weighting="uniform")
    uniform = uniform.to(device)
    uniform.load_state_dict(sard.state_dict())
    student = torch.randn(shape, device=device, requires_grad=True)
    teacher = torch.randn(shape, device=device)

    def weight_only() -> None:
        sard.weight_map(teacher)

    fns: Dict[str, Callable[[], None]] = {
        "uniform head step": head_step(uniform, student, teacher, amp),
        "SARD head step (W computed)": head_step(sard, student, teacher, amp),
        "SARD head step (W given, e.g. cached)": head_step(
            sard, student, teacher, amp, weight=sard.weight_map(teacher)
        ),
        "W alone (structure map)": weight_only,
    }
    default_path = moments_path(device)
    for path in MOMENTS_PATHS:
        if path != default_path:
            fns[f"SARD head step (W computed, {path} moments)"] = with_moments_path(
                fns["SARD head step (W computed)"], path
            )
            fns[f"W alone ({path} moments)"] = with_moments_path(weight_only, path)
    student_fn = student_forward(args, device, amp) if args.student else None
    if student_fn is not None:
        fns[f"student forward (EfficientSAM-{args.student_size}, {args.image_size}px)"] = student_fn

    print(
        f"device={device} threads={torch.get_num_threads()} amp={'bf16' if args.amp else 'off'} "
        f"features={shape} D={args.dim} repeats={args.repeats} (medians); "
        f"W's moments path: {default_path} unless the row says otherwise"
    )
    times = time_interleaved(fns, args.repeats, args.warmup, device)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    base = med["uniform head step"]
    width = max(len(n) for n in med)
    print(f"{'what':<{width}}  {'ms':>10}  {'x uniform':>9}")
    for name, t in med.items():
        print(f"{name:<{width}}  {1000 * t:>10.1f}  {t / base:>9.2f}")
    ratio = med["SARD head step (W computed)"] / base
    verdict = "meets" if ratio <= 1.3 else "misses"
    print(f"SARD / uniform head step: {ratio:.2f}x ({verdict} the <= 1.3x goal)")
    if student_fn is not None:
        s = med[list(med)[-1]]
        print(
            f"head step / student forward: SARD {med['SARD head step (W computed)'] / s:.2f}x, "
            f"uniform {base / s:.2f}x"
        )


if __name__ == "__main__":
    sys.exit(run_tool(main))

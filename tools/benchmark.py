"""Teacher versus student, side by side in one run: parameters, GFLOPs and latency.

    .venv/bin/python tools/benchmark.py     # SAM-H vs EfficientSAM-Ti, M2F Swin-L vs R50
    .venv/bin/python tools/benchmark.py --pair sam --image-size 1024 --device cuda
    .venv/bin/python tools/benchmark.py --pair m2f --semantic-size 512x1024
    .venv/bin/python tools/benchmark.py --teacher sam:vit_b --student efficient_sam:s

What runs: promptable models (SAM, EfficientSAM) embed the image and decode ``--prompts`` box
prompts per image; semantic models run ``forward_semantic``. GFLOPs are counted once with
``torch.utils.flop_counter`` (2 x multiply-adds, attention counted through its math kernel),
per image. Latency is the median of ``--reps`` timed runs after ``--warmup`` runs, per batch;
throughput = batch / latency. Ratios are teacher / student (params, GFLOPs) and student speed-up.
Defaults are small so a CPU finishes in minutes; the paper's sizes are 1024 (SAM) and 512x1024
(Mask2Former). Weights are random: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from cli_values import int_range  # noqa: E402
from sard.models import Prompts, build_model, model_builder  # noqa: E402
from sard.reporting.efficiency import count_gflops, time_ms  # noqa: E402
from sard.user_errors import run_tool  # noqa: E402

PAIRS = {
    "sam": (("sam", "vit_h"), ("efficient_sam", "ti")),
    "m2f": (("mask2former", "swin_l"), ("mask2former", "r50")),
    "m2f_swint": (("mask2former", "swin_l"), ("mask2former", "swin_t")),
    "vit": (("vit_semantic", "vit_l"), ("vit_semantic", "vit_ti")),
}


@dataclass
class Measure:
    """Figures of one model: params (M), GFLOPs per image, latency (ms per batch)."""

    name: str
    params_m: float
    gflops: float
    latency_ms: float
    batch: int

    @property
    def images_per_s(self) -> float:
        return 1000.0 * self.batch / self.latency_ms


def is_semantic_family(family: str) -> bool:
    """Semantic builders take image_size as (H, W); promptable ones as an int."""
    default = inspect.signature(model_builder(family)).parameters["image_size"].default
    return isinstance(default, (tuple, list))


def make_step(model: nn.Module, args: argparse.Namespace, semantic: bool) -> Callable[[], object]:
    """A closure running one batch through ``model`` on random inputs."""
    device = torch.device(args.device)
    if semantic:
        h, w = args.semantic_hw
        images = torch.rand(args.batch, 3, h, w, device=device) * 255
        return lambda: model.forward_semantic(images)
    s = model.image_size
    images = torch.rand(args.batch, 3, s, s, device=device) * 255
    corners = torch.tensor([[0.2, 0.2], [0.7, 0.8]], device=device) * s
    points = corners.expand(args.batch, args.prompts, 2, 2).contiguous()
    labels = torch.tensor([2, 3], device=device).expand(args.batch, args.prompts, 2).contiguous()
    prompts = Prompts(points, labels)
    return lambda: model.predict_masks(model.extract_features(images), prompts)


def measure(family: str, size: str, args: argparse.Namespace) -> Optional[Measure]:
    """Build family:size at the requested input size and measure it; None (and a line) if absent."""
    name = f"{family}:{size}"
    try:
        model_builder(family)
    except KeyError as err:
        print(f"skip {name}: {err}")
        return None
    semantic = is_semantic_family(family)
    image_size = tuple(args.semantic_hw) if semantic else args.image_size
    try:
        model = build_model(family, size=size, image_size=image_size)
    except Exception as err:  # a size this version does not know, a missing dependency...
        print(f"skip {name}: could not build it ({type(err).__name__}: {err})")
        return None
    model = model.to(args.device).eval()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    step = make_step(model, args, semantic)
    device_type = torch.device(args.device).type
    with torch.inference_mode(), torch.autocast(device_type, torch.bfloat16, enabled=args.amp):
        gflops = count_gflops(step, args.batch)
        latency = time_ms(step, args.device, args.warmup, args.reps)
    del model
    return Measure(name, params, gflops, latency, args.batch)


def print_table(title: str, teacher: Measure, student: Measure) -> None:
    """Teacher and student rows, then the ratios measured in this run."""
    print(f"\n{title}")
    header = f"{'model':<24}{'params (M)':>12}{'GFLOPs/img':>12}{'ms/batch':>11}{'img/s':>9}"
    print(header + "\n" + "-" * len(header))
    for m in (teacher, student):
        print(
            f"{m.name:<24}{m.params_m:>12.2f}{m.gflops:>12.1f}{m.latency_ms:>11.1f}"
            f"{m.images_per_s:>9.2f}"
        )
    print(
        f"{'teacher / student':<24}{teacher.params_m / student.params_m:>11.1f}x"
        f"{teacher.gflops / student.gflops:>11.1f}x"
        f"{teacher.latency_ms / student.latency_ms:>10.1f}x"
        f"{'(speed-up)':>10}"
    )


def describe_device(device: str) -> str:
    """GPU name, or the CPU thread count."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{torch.get_num_threads()} threads"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pair",
        action="append",
        choices=sorted(PAIRS),
        help="preset pair(s); default: all presets unless --teacher is given",
    )
    parser.add_argument("--teacher", help="FAMILY:SIZE, e.g. sam:vit_b (with --student)")
    parser.add_argument("--student", help="FAMILY:SIZE, e.g. efficient_sam:s (with --teacher)")
    parser.add_argument(
        "--image-size",
        type=int_range(16),
        default=256,
        help="promptable input size S (S x S); the real figure is 1024",
    )
    parser.add_argument(
        "--semantic-size", default="256x512", help="semantic input HxW; the real figure is 512x1024"
    )
    parser.add_argument("--batch", type=int_range(1), default=1)
    parser.add_argument("--prompts", type=int_range(1), default=1, help="box prompts per image")
    parser.add_argument("--reps", type=int_range(1), default=3)
    parser.add_argument("--warmup", type=int_range(0), default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast (GPU)")
    args = parser.parse_args(argv)
    if bool(args.teacher) != bool(args.student):
        parser.error("--teacher and --student go together")
    try:
        args.semantic_hw = tuple(int(v) for v in args.semantic_size.lower().split("x"))
        assert len(args.semantic_hw) == 2 and min(args.semantic_hw) >= 16
    except (ValueError, AssertionError):
        parser.error(
            f"--semantic-size must look like 512x1024 (both >= 16), got {args.semantic_size!r}"
        )
    if args.pair is None:
        args.pair = [] if args.teacher else sorted(PAIRS, reverse=True)
    return args


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message=".*random")  # benchmarks use random weights
    logging.getLogger("sard").setLevel(logging.ERROR)
    jobs: List[Tuple[str, Tuple[str, str], Tuple[str, str]]] = [
        (pair, *PAIRS[pair]) for pair in args.pair
    ]
    if args.teacher:
        jobs.append(
            ("custom", tuple(args.teacher.split(":", 1)), tuple(args.student.split(":", 1)))
        )
    print(
        f"device {args.device} ({describe_device(args.device)}), "
        f"batch {args.batch}, promptable {args.image_size}x{args.image_size} with {args.prompts} "
        f"prompt(s), semantic {args.semantic_hw[0]}x{args.semantic_hw[1]}, "
        f"{args.warmup} warm-up + {args.reps} timed runs{', bf16 autocast' if args.amp else ''}, "
        f"torch {torch.__version__}"
    )
    for label, teacher_spec, student_spec in jobs:
        teacher = measure(*teacher_spec, args)
        student = measure(*student_spec, args) if teacher else None
        if teacher and student:
            print_table(
                f"[{label}] teacher {teacher.name} vs student {student.name}", teacher, student
            )


if __name__ == "__main__":
    sys.exit(run_tool(main))

#!/usr/bin/env python
"""Latency of the bare PyTorch student vs its TorchScript and ONNX Runtime exports.

    python tools/bench_export.py [--config-file CFG] [KEY VALUE ...] [--image-size 64]
        [--prompts 16] [--repeats 10] [--threads 1]

Exports the student of CFG (random weights unless MODEL.WEIGHTS is given: speed does not depend
on them) to both formats, then times each graph on the same inputs, the three back ends taking
turns within every repeat so that load on a shared machine hits them alike. Prints the median
milliseconds per call and the ratio to PyTorch (1.00 = no overhead), and the parameter counts
(the exports must hold exactly the student's parameters). PyTorch runs the student's own API:
``extract_features`` and ``predict_masks(multimask=True)`` (which computes all four mask
outputs, as the exported decoder does), or ``forward_semantic``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout without installing

from cli_flags import add_timing_flags  # noqa: E402
from cli_values import int_range  # noqa: E402
from sard.user_errors import run_tool  # noqa: E402

DEFAULT_CONFIG = os.path.join(REPO, "configs", "tiny", "sam_tiny_to_efficientsam_tiny.yaml")


def argument_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config-file", default=DEFAULT_CONFIG, metavar="FILE", help="SARD config")
    p.add_argument(
        "--image-size", type=int_range(16), default=64, help="square input side (default 64)"
    )
    p.add_argument("--batch", type=int_range(1), default=1, help="images per call (default 1)")
    p.add_argument(
        "--prompts", type=int_range(1), default=16, help="box prompts per image (default 16)"
    )
    add_timing_flags(p, repeats=10, warmup=2, what="calls per back end")
    p.add_argument("--threads", type=int_range(1), default=1, help="CPU threads for every back end")
    p.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides")
    return p


def _inputs(student, args, generator):
    """{graph: (torch baseline fn, graph inputs)} at the benchmark sizes."""
    import torch

    from sard.export.graphs import random_images, random_prompts
    from sard.models import Prompts

    s = args.image_size
    images = random_images(args.batch, (s, s), generator)
    if not hasattr(student, "predict_masks"):
        return {"semantic": (lambda x: student.forward_semantic(x).sem_logits, (images,))}
    with torch.no_grad():
        embedding = student.extract_features(images)["image_embedding"]
    points, labels = random_prompts(args.batch, args.prompts, 2, s, generator, box=True)
    dec_inputs = (embedding, points, labels)
    if student.family == "sam":
        grid = embedding.shape[-1]
        dec_inputs += (torch.zeros(1, 1, 1, 4 * grid, 4 * grid), torch.zeros(1))
    return {
        "image_encoder": (lambda x: student.extract_features(x)["image_embedding"], (images,)),
        "mask_decoder": (
            lambda e, p, lab, *_: student.predict_masks(
                {"image_embedding": e}, Prompts(p, lab), multimask=True
            ).mask_logits,
            dec_inputs,
        ),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags of ``argv``, options and positionals in any order."""
    return argument_parser().parse_intermixed_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from sard.export import export_student, load_runner, load_student

    torch.set_num_threads(args.threads)
    size = f"({args.image_size}, {args.image_size})"
    _, student = load_student(
        args.config_file, ["INPUT.IMAGE_SIZE", size, *args.opts], require_weights=False
    )
    student = student.eval()
    cases = _inputs(student, args, torch.Generator().manual_seed(0))
    runners = {}
    with tempfile.TemporaryDirectory() as tmp:
        reports = {}
        for fmt in ("torchscript", "onnx"):
            reports[fmt] = export_student(student, os.path.join(tmp, fmt), fmt)
            for graph, path in reports[fmt].files.items():
                runners[(fmt, graph)] = load_runner(path, threads=args.threads)
        times = {key: [] for key in [("pytorch", g) for g in cases] + list(runners)}
        for i in range(args.warmup + args.repeats):
            for graph, (baseline, inputs) in cases.items():
                for backend in ("pytorch", "torchscript", "onnx"):
                    fn = baseline if backend == "pytorch" else runners[(backend, graph)]
                    start = time.perf_counter()
                    with torch.no_grad():
                        fn(*inputs)
                    if i >= args.warmup:
                        times[(backend, graph)].append(time.perf_counter() - start)
    name = student.family
    print(
        f"{name} student, input {args.image_size}x{args.image_size}, batch {args.batch}, "
        f"{args.prompts} prompts, {args.threads} thread(s), median of {args.repeats}"
    )
    print(
        f"{'graph':15s} {'pytorch ms':>11s} {'torchscript ms':>15s} {'ratio':>6s} "
        f"{'onnxruntime ms':>15s} {'ratio':>6s}"
    )
    totals = dict.fromkeys(("pytorch", "torchscript", "onnx"), 0.0)
    for graph in cases:
        ms = {b: 1e3 * statistics.median(times[(b, graph)]) for b in totals}
        for b in totals:
            totals[b] += ms[b]
        print(
            f"{graph:15s} {ms['pytorch']:11.2f} {ms['torchscript']:15.2f} "
            f"{ms['torchscript'] / ms['pytorch']:6.2f} {ms['onnx']:15.2f} "
            f"{ms['onnx'] / ms['pytorch']:6.2f}"
        )
    if len(cases) > 1:
        print(
            f"{'total':15s} {totals['pytorch']:11.2f} {totals['torchscript']:15.2f} "
            f"{totals['torchscript'] / totals['pytorch']:6.2f} {totals['onnx']:15.2f} "
            f"{totals['onnx'] / totals['pytorch']:6.2f}"
        )
    for fmt, report in reports.items():
        print(f"{fmt:12s} {report.parameters.summary()}; max|diff| {report.max_abs_diff:.2e}")
    return 0 if all(r.ok for r in reports.values()) else 1


if __name__ == "__main__":
    sys.exit(run_tool(main))

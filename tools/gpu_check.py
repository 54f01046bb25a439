#!/usr/bin/env python
"""The prepared GPU check: one command, one markdown report, at most about 8 minutes on a GPU.

    python tools/gpu_check.py                          # on a lent GPU: --device cuda
    python tools/gpu_check.py --device cpu --quick     # tiny sizes, what the test suite runs

Steps, each in its own process with its own time limit (a step that fails or times out is
reported and the others still run):

1. the structure tests (``tests/structure/test_structure*.py``), which also run on CUDA when it is there;
2. ``tools/bench_structure.py``, ``tools/bench_losses.py`` and ``tools/bench_train.py`` on the
   device (their tables are copied into the report, with the SARD / uniform step ratio);
3. the paper config ``configs/sam_h_to_efficientsam.yaml`` with random SAM-H weights written in
   the official layout, at 1024 px with bf16 autocast, for 20 iterations on generated images:
   seconds per iteration with the teacher cache cold (first epoch) and warm (later epochs), and
   peak GPU memory. With ``--quick`` the tiny SAM pair at 64 px stands in for it.

The report goes to ``OUT/report.md`` (default ``output/gpu_check``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from cli_values import int_range  # noqa: E402
from sard.user_errors import run_tool  # noqa: E402

PAPER = os.path.join("configs", "sam_h_to_efficientsam.yaml")
TINY = os.path.join("configs", "tiny", "sam_tiny_to_efficientsam_tiny.yaml")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda", help="cuda (a lent GPU) or cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes (the test suite's run)")
    p.add_argument("--out", default=os.path.join("output", "gpu_check"), help="report folder")
    p.add_argument(
        "--iters", type=int_range(2), default=20, help="iterations of the paper config run"
    )
    return p.parse_args(argv)


# Per step: the script and its arguments at full size (a GPU) and with --quick (tiny, CPU).
BENCHMARKS = {
    "bench_structure": ("tools/bench_structure.py", "",
                        "--batch 1 --channels 8 --size 16 --reps 1 --warmup 0 --radii 3"),
    "bench_losses": ("tools/bench_losses.py", "--amp",
                     "--batch 1 --channels 16 --size 8 --dim 16 --repeats 1 --warmup 0"),
    "bench_train": ("tools/bench_train.py",
                    "--image-size 1024 --teacher-size vit_b --student-size ti --batch 4",
                    "--image-size 64 --iters 1 --rounds 1 --methods none sard "
                    "--teacher-embed-dim 32 --teacher-depth 1"),
}  # fmt: skip


def benchmark_commands(device: str, quick: bool) -> List[tuple]:
    """(name, argv, time limit in s) of the test and benchmark steps."""
    py = sys.executable
    folder = os.path.join("tests", "structure")
    tests = [os.path.join(folder, f) for f in sorted(os.listdir(os.path.join(REPO, folder)))]
    tests = [t for t in tests if re.match(r"tests/structure/test_structure.*\.py$", t)]
    pytest_args = [tests[0], "-x", "-k", "distribution"] if quick else tests
    steps = [("structure tests", [py, "-m", "pytest", "-q", *pytest_args], 300 if quick else 120)]
    for name, (script, full, tiny) in BENCHMARKS.items():
        args = (tiny if quick else full).split()
        limit = 300 if quick else (120 if name == "bench_train" else 60)
        steps.append((name, [py, script, "--device", device, *args], limit))
    return steps


def run_command(name: str, argv: List[str], limit: int) -> Dict:
    """Run one step; its status, wall time and output (the tail when long)."""
    start = time.perf_counter()
    try:
        res = subprocess.run(
            argv, cwd=REPO, capture_output=True, text=True, timeout=limit, env=dict(os.environ)
        )
        status = "ok" if res.returncode == 0 else f"failed (exit {res.returncode})"
        output = res.stdout + res.stderr
    except subprocess.TimeoutExpired as err:
        status = f"timed out after {limit} s"
        output = (
            (err.stdout or b"").decode(errors="replace")
            if isinstance(err.stdout, bytes)
            else (err.stdout or "")
        )
    return {
        "name": name,
        "command": " ".join(a if a != sys.executable else "python" for a in argv),
        "status": status,
        "seconds": time.perf_counter() - start,
        "output": output[-6000:],
    }


def sard_uniform_ratio(output: str) -> Optional[float]:
    match = re.search(r"SARD / uniform head step: ([0-9.]+)x", output)
    return float(match.group(1)) if match else None


def paper_config_run(device: str, quick: bool, iters: int, out: str) -> Dict:
    """Train the paper config (or, with quick, the tiny pair) on generated images; time it."""
    import torch

    from sard.data.synthetic import SynthConfig
    from sard.data.synthetic_dataset import generate_rockfrag_synth
    from sard.engine.setup import setup_config
    from sard.engine.trainer import Trainer
    from sard.models.official_layout import save_random_official_weights

    size, config, teacher = (64, TINY, "tiny") if quick else (1024, PAPER, "vit_h")
    batch, images = 2, 4  # 2 iterations per epoch: the first epoch fills the teacher cache
    data = os.path.join(out, "data")
    if not os.path.isfile(os.path.join(data, "train.json")):
        generate_rockfrag_synth(
            data,
            num_images={"train": images},
            config=SynthConfig(image_size=size, min_size=max(4, size // 40), max_size=size // 8),
            seed=0,
            preview=False,
            progress=False,
        )
    weights = os.path.join(out, f"sam_{teacher}_official_layout.pth")
    if not os.path.isfile(weights):
        save_random_official_weights("sam", teacher, weights)
    opts = [
        "MODEL.TEACHER.WEIGHTS", weights,
        "MODEL.DEVICE", device,
        "INPUT.IMAGE_SIZE", f"({size}, {size})",
        "INPUT.RANDOM_FLIP", "none",  # one cache entry per image: warm means warm
        "DATASETS.TRAIN", f"('{data}/train.json',)",
        "DATASETS.TEST", "()",
        "SOLVER.MAX_EPOCHS", "0",
        "SOLVER.MAX_ITER", str(iters),
        "SOLVER.IMS_PER_BATCH", str(batch),
        "SOLVER.CHECKPOINT_PERIOD", "1000000",
        "SOLVER.AMP.ENABLED", "True",
        "SOLVER.AMP.DTYPE", "bfloat16",
        "MODEL.SARD.CACHE.ENABLED", "True",
        "MODEL.SARD.CACHE.DIR", "",
        "DATALOADER.NUM_WORKERS", "0",
        "OUTPUT_DIR", os.path.join(out, "paper_run"),
    ]  # fmt: skip
    cfg = setup_config(config, opts)
    trainer = Trainer(cfg)
    cuda = trainer.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times, cold = [], []
    step = trainer.run_step

    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def timed_step(net, batch_inputs, it):
        misses = trainer.model.cache.misses
        sync()
        start = time.perf_counter()
        losses = step(net, batch_inputs, it)
        sync()
        times.append(time.perf_counter() - start)
        cold.append(trainer.model.cache.misses > misses)
        return losses

    trainer.run_step = timed_step
    trainer.train()
    cold_t = [t for t, c in zip(times, cold) if c]
    warm_t = [t for t, c in zip(times, cold) if not c][1:]  # the first warm one may still compile
    return {
        "config": config,
        "image_size": size,
        "iterations": len(times),
        "batch": batch,
        "s_per_iter_cold": statistics.median(cold_t) if cold_t else None,
        "s_per_iter_warm": statistics.median(warm_t) if warm_t else None,
        "peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "cache": {"hits": trainer.model.cache.hits, "misses": trainer.model.cache.misses},
    }


def _fmt(v, spec=".3f") -> str:
    return "n/a" if v is None else format(v, spec)


def write_report(path: str, args, steps: List[Dict], paper: Dict) -> str:
    import torch

    device = (
        torch.cuda.get_device_name(0)
        if args.device.startswith("cuda") and torch.cuda.is_available()
        else platform.processor() or "CPU"
    )
    ratio = next(
        (sard_uniform_ratio(s["output"]) for s in steps if s["name"] == "bench_losses"), None
    )
    lines = [
        f"# GPU check ({'quick, ' if args.quick else ''}device {args.device}: {device})",
        "",
        f"torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        "| step | status | seconds |",
        "| :--- | :--- | ---: |",
        *(f"| {s['name']} | {s['status']} | {s['seconds']:.0f} |" for s in steps),
        f"| paper config run | {paper.get('status', 'ok')} | {paper.get('seconds', 0):.0f} |",
        "",
        "## Summary",
        "",
        f"- SARD / uniform head step (bench_losses): {_fmt(ratio, '.2f')}x (goal <= 1.3x)",
    ]
    if "error" in paper:
        lines.append(f"- paper config run failed: {paper['error']}")
    else:
        lines += [
            f"- paper config run: {paper['config']} at {paper['image_size']} px, bf16 autocast, "
            f"batch {paper['batch']}, {paper['iterations']} iterations",
            f"- s/iteration, teacher cache cold: {_fmt(paper['s_per_iter_cold'])}; warm: "
            f"{_fmt(paper['s_per_iter_warm'])}"
            + (
                f" (cold / warm {paper['s_per_iter_cold'] / paper['s_per_iter_warm']:.2f}x)"
                if paper["s_per_iter_cold"] and paper["s_per_iter_warm"]
                else ""
            ),
            f"- peak GPU memory: {_fmt(paper['peak_gpu_memory_gib'], '.2f')} GiB",
            f"- teacher cache: {paper['cache']['misses']} misses, {paper['cache']['hits']} hits",
        ]
    for s in steps:
        lines += [
            "",
            f"## {s['name']}",
            "",
            f"`{s['command']}`",
            "",
            "```",
            s["output"].strip(),
            "```",
        ]
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    with open(os.path.splitext(path)[0] + ".json", "w") as f:
        json.dump({"steps": steps, "paper": paper, "sard_uniform": ratio}, f, indent=1)
    return text


def main(argv=None) -> int:
    from sard.engine.subnormals import flush_subnormal_floats

    # Before any torch work, so every worker thread inherits it (the Trainer checks).
    flush_subnormal_floats(check=False)
    args = parse_args(argv)
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device here; use --device cpu --quick")
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    steps = []
    for name, cmd, limit in benchmark_commands(args.device, args.quick):
        print(f"[gpu_check] {name} ...", flush=True)
        steps.append(run_command(name, cmd, limit))
        print(
            f"[gpu_check] {name}: {steps[-1]['status']} ({steps[-1]['seconds']:.0f} s)", flush=True
        )
    print("[gpu_check] paper config run ...", flush=True)
    start = time.perf_counter()
    try:
        paper = paper_config_run(args.device, args.quick, args.iters, out)
    except Exception as err:  # reported, so the rest of the report still comes back
        paper = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
    paper["seconds"] = time.perf_counter() - start
    report = write_report(os.path.join(out, "report.md"), args, steps, paper)
    print(report.split("## structure tests")[0])
    print(f"[gpu_check] report: {os.path.join(out, 'report.md')}")
    failed = [s for s in steps if s["status"] != "ok"] + ([paper] if "error" in paper else [])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_tool(main))

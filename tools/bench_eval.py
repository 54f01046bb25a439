"""Benchmark: instance boundary IoU on bounding-box crops vs full-image erosion per instance.

A synthetic tiny-dense scene: an H x W image cut into N Voronoi cells (GT instances, all touching
their neighbours); predictions are the cells of the same seeds jittered by a few pixels. Both
paths score every (GT, prediction) pair; the numbers must be identical. Run:

    .venv/bin/python tools/bench_eval.py [--size 512] [--instances 300] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Tuple

import cv2
import numpy as np
import torch
from scipy.spatial import cKDTree
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled
from cli_flags import add_timing_flags  # noqa: E402
from cli_values import float_range, int_range  # noqa: E402
from sard.evaluation import (  # noqa: E402
    PromptableInstanceEvaluator,
    boundary_dilation,
    mask_boundary,
    paired_mask_scores,
    touching_neighbour_counts,
)
from sard.user_errors import run_tool  # noqa: E402


def voronoi_masks(seeds: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, H, W) bool masks of the Voronoi cells of (N, 2) seeds given as (y, x)."""
    yy, xx = np.mgrid[0:height, 0:width]
    _, owner = cKDTree(seeds).query(np.stack([yy.ravel(), xx.ravel()], axis=1))
    owner = owner.reshape(height, width)
    return owner[None] == np.arange(len(seeds))[:, None, None]


def full_image_scores(gt: np.ndarray, pred: np.ndarray, ratio: float) -> Tuple[np.ndarray, ...]:
    """Straightforward path: official full-image erosion of every GT and prediction mask."""
    d = boundary_dilation(gt.shape[1], gt.shape[2], ratio)
    iou, biou = np.ones(len(gt)), np.ones(len(gt))
    for i in range(len(gt)):
        inter, union = np.count_nonzero(gt[i] & pred[i]), np.count_nonzero(gt[i] | pred[i])
        bg, bp = mask_boundary(gt[i], d), mask_boundary(pred[i], d)
        b_inter, b_union = np.count_nonzero(bg & bp), np.count_nonzero(bg | bp)
        iou[i] = inter / union if union else 1.0
        biou[i] = b_inter / b_union if b_union else 1.0
    return iou, biou


def interleaved_best_times(
    fns: Dict[str, Callable[[], object]], repeats: int
) -> Tuple[Dict[str, float], Dict[str, object]]:
    """Fastest wall time (seconds) of each function and its last result; the functions take
    turns within every repeat so that load from other processes hits them alike."""
    best = {name: float("inf") for name in fns}
    results: Dict[str, object] = {}
    for _ in tqdm(range(repeats), desc="timing"):
        for name, fn in fns.items():
            start = time.perf_counter()
            results[name] = fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best, results


def argument_parser() -> argparse.ArgumentParser:
    """The tool's flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int_range(8), default=512, help="image height and width")
    parser.add_argument(
        "--instances", type=int_range(1), default=300, help="GT instances per image"
    )
    parser.add_argument(
        "--jitter", type=float_range(0), default=3.0, help="prediction seed jitter (px)"
    )
    parser.add_argument("--images", type=int_range(1), default=2, help="images (scenes) to time")
    add_timing_flags(parser, repeats=5, warmup=None, what="rounds of every method, the best kept")
    parser.add_argument("--dilation-ratio", type=float_range(0, 1, lo_open=True), default=0.02)
    parser.add_argument("--threads", type=int_range(1), default=1, help="OpenCV and torch threads")
    return parser


def main(argv=None) -> None:
    args = argument_parser().parse_args(argv)
    # OpenCV ignores OMP_NUM_THREADS and would otherwise parallelise only the full-image path.
    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    scenes = []
    for _ in tqdm(range(args.images), desc="building scenes"):
        seeds = rng.uniform(0, args.size, size=(args.instances, 2))
        jittered = seeds + rng.normal(0, args.jitter, size=seeds.shape)
        gt = voronoi_masks(seeds, args.size, args.size)
        pred = voronoi_masks(jittered, args.size, args.size)
        pred[rng.random(args.instances) < 0.02] = False  # a few missed instances
        scenes.append((gt, pred))

    def run_full():
        return [full_image_scores(g, p, args.dilation_ratio) for g, p in scenes]

    def run_crop():
        return [paired_mask_scores(g, p, args.dilation_ratio) for g, p in scenes]

    def run_neighbours():
        return [touching_neighbour_counts(g) for g, _ in scenes]

    def run_evaluator():
        evaluator = PromptableInstanceEvaluator(distributed=False)
        for k, (g, p) in enumerate(scenes):
            inputs = [{"image_id": k, "gt_masks": torch.from_numpy(g)}]
            evaluator.process(inputs, [{"pred_masks": torch.from_numpy(p)}])
        return evaluator

    times, results = interleaved_best_times(
        {"full": run_full, "crop": run_crop, "neighbours": run_neighbours, "eval": run_evaluator},
        args.repeats,
    )
    t_full, t_crop, t_nb = times["full"], times["crop"], times["neighbours"]
    crop, nbs = results["crop"], results["neighbours"]
    for (iou_f, biou_f), scores in zip(results["full"], crop):
        assert np.array_equal(iou_f, scores.iou), "IoU differs between the two paths"
        assert np.array_equal(biou_f, scores.boundary_iou), "boundary IoU differs"

    n = args.images * args.instances
    miou = 100 * np.mean(np.concatenate([s.iou for s in crop]))
    biou = 100 * np.mean(np.concatenate([s.boundary_iou for s in crop]))
    d = boundary_dilation(args.size, args.size, args.dilation_ratio)
    print(
        f"{args.images} image(s) {args.size}x{args.size}, {args.instances} instances each, d={d}, "
        f"{args.threads} thread(s)"
    )
    print(f"mIoU {miou:.2f}  bIoU {biou:.2f}  (identical on both paths: yes)")
    print(f"mean touching neighbours {np.mean(np.concatenate(nbs)):.2f}")
    header = f"{'path':<40} {'ms/image':>10} {'us/instance':>12} {'speed-up':>9}"
    print(header)
    print("-" * len(header))
    for name, t in (
        ("full-image erosion per instance", t_full),
        ("bounding-box crop (paired_mask_scores)", t_crop),
    ):
        print(f"{name:<40} {1e3 * t / args.images:>10.1f} {1e6 * t / n:>12.1f} {t_full / t:>8.1f}x")
    print(f"{'touching_neighbour_counts (GT only)':<40} {1e3 * t_nb / args.images:>10.1f}")
    t_eval = times["eval"]
    print(f"{'PromptableInstanceEvaluator.process':<40} {1e3 * t_eval / args.images:>10.1f}")


if __name__ == "__main__":
    sys.exit(run_tool(main))

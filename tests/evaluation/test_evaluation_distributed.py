"""Both evaluators gathered over two CPU processes (gloo) equal a single-process run."""
import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sard.evaluation import PromptableInstanceEvaluator, SemSegBoundaryEvaluator

NUM_IMAGES = 6


def instance_image(index):
    """Random rectangles as GT, jittered rectangles (some missing) as predictions."""
    rng = np.random.default_rng(index)
    h, w = 40 + 3 * index, 50
    gt = np.zeros((5, h, w), bool)
    pred = np.zeros_like(gt)
    for q in range(5):
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        sy, sx = rng.integers(2, 20, size=2)
        gt[q, y : y + sy, x : x + sx] = True
        dy, dx = rng.integers(-2, 3, size=2)
        if rng.random() > 0.2:
            pred[q, max(0, y + dy) : y + sy + dy, max(0, x + dx) : x + sx + dx] = True
    inputs = {"image_id": index, "height": h, "width": w, "gt_masks": torch.from_numpy(gt)}
    return inputs, {"pred_masks": torch.from_numpy(pred)}


def semantic_image(index):
    rng = np.random.default_rng(100 + index)
    gt = rng.integers(0, 4, size=(6, 8)).repeat(5, 0).repeat(5, 1)
    gt[rng.random(gt.shape) < 0.05] = 255
    pred = np.where(rng.random(gt.shape) < 0.7, gt, rng.integers(0, 4, size=gt.shape))
    pred[pred == 255] = 0  # copied ignore pixels still need a real class
    return {"sem_seg": torch.from_numpy(gt)}, {"sem_seg": torch.from_numpy(pred)}


def evaluate_images(images):
    instance = PromptableInstanceEvaluator()
    semantic = SemSegBoundaryEvaluator(4)
    for i in images:
        instance.process(*[[x] for x in instance_image(i)])
        semantic.process(*[[x] for x in semantic_image(i)])
    return instance.evaluate(), semantic.evaluate()


def _worker(rank, world_size, port, out_dir):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        instance, semantic = evaluate_images(range(rank, NUM_IMAGES, world_size))
        result = {"instance": instance, "semantic": semantic}
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(120)
def test_two_process_gather_equals_single_process(tmp_path):
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    rank1 = json.loads((tmp_path / "rank1.json").read_text())
    assert rank1 == {"instance": None, "semantic": None}  # only the main process reports
    instance, semantic = evaluate_images(range(NUM_IMAGES))
    assert rank0["instance"]["sard_instances"]["count"] == 5 * NUM_IMAGES
    # Instance means are summed in another order across processes: equal up to rounding.
    assert rank0["instance"]["sard_instances"] == pytest.approx(instance["sard_instances"])
    assert rank0["semantic"]["sem_seg"] == pytest.approx(semantic["sem_seg"])
    assert set(rank0["semantic"]["sem_seg"]) == set(semantic["sem_seg"])

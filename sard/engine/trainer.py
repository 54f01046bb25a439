"""The built-in trainer, used when detectron2 is absent (or with ``--engine sard``).

One config drives it and the detectron2 project alike. It is assembled from existing parts:
fvcore's config, checkpointer and parameter schedulers, torch DDP, torch.amp, tqdm, TensorBoard.
Each iteration: map a deterministic batch -> distiller losses -> check finite -> backward ->
clip -> AdamW step -> schedule step -> log (``metrics.json`` lines and TensorBoard) ->
periodic atomic checkpoint -> periodic evaluation.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from typing import Dict, List, Optional

import numpy as np
import torch
from fvcore.common.checkpoint import PeriodicCheckpointer
from fvcore.common.config import CfgNode
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from . import comm
from .builders import build_distiller_for_training, build_evaluator, build_mapper, dataset_records
from .checkpoint import AtomicCheckpointer, rng_state, set_rng_state
from .data import TrainStream, build_test_loader, build_train_loader
from .solver import build_lr_scheduler, build_optimizer, clip_gradients, trainable_parameters

logger = logging.getLogger(__name__)


def resolve_device(cfg: CfgNode) -> torch.device:
    if str(cfg.MODEL.DEVICE).startswith("cuda") and not torch.cuda.is_available():
        logger.warning("MODEL.DEVICE=%s but CUDA is not available: using the CPU", cfg.MODEL.DEVICE)
        return torch.device("cpu")
    if str(cfg.MODEL.DEVICE) == "cuda" and comm.is_dist():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(cfg.MODEL.DEVICE)


class Trainer:
    """Train and evaluate a ``SARDDistiller`` described by ``cfg`` (a frozen, merged config)."""

    def __init__(self, cfg: CfgNode) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg)
        self.records = dataset_records(cfg.DATASETS.TRAIN) if cfg.DATASETS.TRAIN else []
        self.max_iter = resolve_max_iter(cfg, len(self.records))
        self.seed = seed = training_seed(cfg)
        # Same seed on every process while building (identical random inits, the teacher's
        # included, which DDP does not broadcast), then one stream per process for training.
        seed_all(seed)
        model = build_distiller_for_training(cfg).to(self.device)
        seed_all(seed + comm.get_rank())
        self.model = model
        self.optimizer = build_optimizer(cfg, model)
        self.scheduler = build_lr_scheduler(cfg, self.optimizer)
        self.ddp: Optional[DistributedDataParallel] = None
        if comm.get_world_size() > 1:
            self.ddp = DistributedDataParallel(
                model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        self.checkpointer = AtomicCheckpointer(
            model,
            cfg.OUTPUT_DIR,
            save_to_disk=comm.is_main_process(),
            optimizer=self.optimizer,
            scheduler=self.scheduler,
        )
        self.start_iter = 0
        self.use_amp = bool(cfg.SOLVER.AMP.ENABLED)
        amp_fp16 = self.use_amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp_fp16)
        self.amp_dtype = torch.float16 if amp_fp16 else torch.bfloat16

    # ------------------------------------------------------------------ checkpoints
    def resume_or_load(self, resume: bool = True) -> None:
        """``resume``: continue from OUTPUT_DIR's last checkpoint if any, else MODEL.WEIGHTS."""
        extra = self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if resume and "iteration" in extra:
            self.start_iter = int(extra["iteration"]) + 1
            if "rng" in extra:
                set_rng_state(extra["rng"])
            if "scaler" in extra:
                self.scaler.load_state_dict(extra["scaler"])
            logger.info("resumed from iteration %d", self.start_iter)

    # ------------------------------------------------------------------ training
    def train(self) -> Dict[str, float]:
        cfg = self.cfg
        if not self.records:
            raise ValueError("DATASETS.TRAIN is empty: nothing to train on")
        mapper = build_mapper(cfg, is_train=True)
        stream = TrainStream(
            self.records,
            mapper,
            global_batch=cfg.SOLVER.IMS_PER_BATCH,
            seed=self.seed,
            start_iter=self.start_iter,
            rank=comm.get_rank(),
            world_size=comm.get_world_size(),
        )
        loader = iter(build_train_loader(stream, cfg.DATALOADER.NUM_WORKERS))
        periodic = PeriodicCheckpointer(
            self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD, self.max_iter
        )
        writer = MetricsWriter(cfg.OUTPUT_DIR) if comm.is_main_process() else None
        net = self.ddp or self.model
        net.train()
        bar = tqdm(
            range(self.start_iter, self.max_iter),
            initial=self.start_iter,
            total=self.max_iter,
            desc="train",
            disable=not comm.is_main_process(),
            dynamic_ncols=True,
        )
        results: Dict[str, float] = {}
        for it in bar:
            losses = self.run_step(net, next(loader), it)
            if writer is not None and (
                (it + 1) % cfg.SOLVER.LOG_PERIOD == 0 or it == self.max_iter - 1
            ):
                lr = self.optimizer.param_groups[0]["lr"]
                writer.write(it, {**losses, "total_loss": sum(losses.values()), "lr": lr})
                bar.set_postfix(loss=f"{sum(losses.values()):.4f}")
            periodic.step(it, rng=rng_state(), scaler=self.scaler.state_dict())
            period = cfg.TEST.EVAL_PERIOD
            last = it == self.max_iter - 1
            if cfg.DATASETS.TEST and ((period > 0 and (it + 1) % period == 0) or last):
                results = self.test()
                if writer is not None:
                    writer.write(it, flatten_results(results))
                net.train()
        if writer is not None:
            writer.close()
        return results

    def run_step(self, net: torch.nn.Module, batch: List[Dict], it: int) -> Dict[str, float]:
        self.model.iteration = it  # the distiller ramps its distillation terms by iteration
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            loss_dict = net(batch)
        total = sum(loss_dict.values())
        if not torch.isfinite(total):
            last = self.checkpointer.get_checkpoint_file() or "none saved yet"
            terms = {k: float(v.detach()) for k, v in loss_dict.items()}
            raise FloatingPointError(
                f"loss became {float(total)} at iteration {it} (terms: {terms}). Training "
                f"stopped; the last good checkpoint is {last}. Lower SOLVER.BASE_LR or enable "
                "SOLVER.CLIP_GRADIENTS."
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.optimizer)
        clip_gradients(self.cfg, trainable_parameters(self.model))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return {k: float(v.detach()) for k, v in loss_dict.items()}

    # ------------------------------------------------------------------ evaluation
    def test(self) -> Dict[str, Dict[str, float]]:
        """Evaluate the student on every DATASETS.TEST name; returns {name: {metric: value}}."""
        cfg = self.cfg
        self.model.eval()
        mapper = build_mapper(cfg, is_train=False)
        all_results = {}
        for name in cfg.DATASETS.TEST:
            records = dataset_records([name])
            if cfg.TEST.MAX_IMAGES > 0:
                records = records[: cfg.TEST.MAX_IMAGES]
            evaluator = build_evaluator(cfg, name, os.path.join(cfg.OUTPUT_DIR, "inference", name))
            evaluator.reset()
            loader = build_test_loader(records, mapper, comm.get_rank(), comm.get_world_size())
            n_local = len(range(comm.get_rank(), len(records), comm.get_world_size()))
            for inputs in tqdm(
                loader,
                total=n_local,
                desc=f"eval {name}",
                leave=False,
                disable=not comm.is_main_process(),
            ):
                evaluator.process(inputs, self.model(inputs))
            results = evaluator.evaluate()
            if comm.is_main_process() and results is not None:
                all_results[name] = results
        return all_results


def flatten_results(results: Dict) -> Dict[str, float]:
    flat = {}
    for name, res in results.items():
        for task, metrics in res.items():
            if isinstance(metrics, dict):
                for k, v in metrics.items():
                    flat[f"{name}/{task}/{k}"] = v
            else:
                flat[f"{name}/{task}"] = metrics
    return flat


def training_seed(cfg: CfgNode) -> int:
    """SEED, or (SEED < 0) a seed drawn once and shared by all processes, logged."""
    if cfg.SEED >= 0:
        return int(cfg.SEED)
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    if comm.is_dist():
        seed = comm.all_gather(seed)[0]
    logger.info("SEED < 0: using seed %d", seed)
    return seed


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_max_iter(cfg: CfgNode, num_images: int) -> int:
    """SOLVER.MAX_EPOCHS > 0 overrides MAX_ITER: ceil(epochs * images / IMS_PER_BATCH)."""
    if cfg.SOLVER.MAX_EPOCHS > 0 and num_images > 0:
        return math.ceil(cfg.SOLVER.MAX_EPOCHS * num_images / cfg.SOLVER.IMS_PER_BATCH)
    return int(cfg.SOLVER.MAX_ITER)


class MetricsWriter:
    """Append metrics as JSON lines to ``metrics.json`` and to TensorBoard (if importable)."""

    def __init__(self, output_dir: str) -> None:
        os.makedirs(output_dir, exist_ok=True)
        self.path = os.path.join(output_dir, "metrics.json")
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(output_dir)
        except ImportError:  # TensorBoard is optional at run time
            logger.warning("tensorboard is not installed: metrics go to metrics.json only")

    def write(self, iteration: int, metrics: Dict[str, float]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"iteration": iteration, **metrics}) + "\n")
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(k, v, iteration)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()

"""The built-in trainer, used when detectron2 is absent (or with ``--engine sard``).

One config drives it and the detectron2 project alike. It is assembled from existing parts:
fvcore's config, checkpointer and parameter schedulers, torch DDP, torch.amp, tqdm, TensorBoard.
Each iteration: map a deterministic batch -> distiller losses -> check finite -> backward ->
clip -> AdamW step -> schedule step -> log (``metrics.json`` lines and TensorBoard) ->
periodic atomic checkpoint -> periodic evaluation.
"""

from __future__ import annotations

import logging
import os
import random
from typing import Dict, List, Optional

import numpy as np
import torch
from fvcore.common.checkpoint import PeriodicCheckpointer
from fvcore.common.config import CfgNode
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from sard.config.contract import describe_contract, effective_config
from sard.distill.build import build_distiller

from sard import distributed as comm
from .builders import build_evaluator, build_inference_model, build_mapper, evaluation_records
from .builders import evaluation_output_dir
from .builders import training_records
from .checkpoint import AtomicCheckpointer, rng_state, set_rng_state
from .data import TrainStream, build_test_loader, build_train_loader
from .metrics import MetricsWriter, flatten_results
from .solver import build_lr_scheduler, build_optimizer
from .step import NonFiniteLossError, Precision, TrainingDiverged, forward_backward
from .step import nonfinite_loss_message
from .step import optimizer_step
from .subnormals import flush_subnormal_floats

logger = logging.getLogger(__name__)


def resolve_device(cfg: CfgNode) -> torch.device:
    """MODEL.DEVICE of the effective config ("cpu" already where CUDA is absent); "cuda" means
    this process's GPU under DDP."""
    if str(cfg.MODEL.DEVICE) == "cuda" and comm.is_dist():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(cfg.MODEL.DEVICE)


class Trainer:
    """Train and evaluate a ``SARDDistiller`` described by ``cfg`` (a merged config).

    The training contract (``sard.config.contract``) is applied here too, so a config from
    ``load_config`` and one from ``sard.engine.setup.setup_config`` train the same way.
    """

    def __init__(self, cfg: CfgNode) -> None:
        self.records = training_records(cfg) if cfg.DATASETS.TRAIN else []
        self.cfg = cfg = effective_config(cfg, len(self.records))
        self.device = resolve_device(cfg)
        self.max_iter = int(cfg.SOLVER.MAX_ITER)
        self.seed = seed = training_seed(cfg)
        # Same seed on every process while building (identical random inits, the teacher's
        # included, which DDP does not broadcast), then one stream per process for training.
        seed_all(seed)
        model = build_distiller(cfg).to(self.device)
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
        self.precision = Precision.from_cfg(cfg, self.device)
        logger.info(describe_contract(cfg, len(self.records)))
        flush_subnormal_floats()

    # ------------------------------------------------------------------ checkpoints
    def resume_or_load(self, resume: bool = True) -> None:
        """``resume``: continue from OUTPUT_DIR's last checkpoint if any, else MODEL.WEIGHTS."""
        resuming = resume and self.checkpointer.has_checkpoint()
        extra = self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        # The iteration, RNG and scaler state of OUTPUT_DIR's own checkpoint only: MODEL.WEIGHTS
        # may be another run's final checkpoint, whose iteration means nothing here.
        if resuming and "iteration" in extra:
            self.start_iter = int(extra["iteration"]) + 1
            if "rng" in extra:
                set_rng_state(extra["rng"])
            if "scaler" in extra:
                self.precision.scaler.load_state_dict(extra["scaler"])
            logger.info("resumed from iteration %d", self.start_iter)

    # ------------------------------------------------------------------ training
    def train(self) -> Dict[str, float]:
        """Train from ``start_iter`` to MAX_ITER, then evaluate; returns the last results.

        A run resumed after all its iterations (killed while saving ``model_final.pth`` or
        evaluating) writes what is missing and evaluates, so ``--resume`` always finishes the job.
        """
        cfg = self.cfg
        if not self.records:
            raise ValueError("DATASETS.TRAIN is empty: nothing to train on")
        writer = MetricsWriter(cfg.OUTPUT_DIR, self.start_iter) if comm.is_main_process() else None
        try:
            if self.start_iter >= self.max_iter and self.start_iter > 0:
                results = self._finish_completed_run(writer)  # resumed after every iteration
            else:
                results = self._train_iterations(writer)
        finally:
            if writer is not None:
                writer.close()
        return results

    def _train_iterations(self, writer: Optional["MetricsWriter"]) -> Dict[str, float]:
        cfg = self.cfg
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
            lr = self.optimizer.param_groups[0]["lr"]  # the LR this iteration trains with
            losses = self.run_step(net, next(loader), it)
            if writer is not None and (
                (it + 1) % cfg.SOLVER.LOG_PERIOD == 0 or it == self.max_iter - 1
            ):
                writer.write(it, {**losses, "total_loss": sum(losses.values()), "lr": lr})
                bar.set_postfix(loss=f"{sum(losses.values()):.4f}")
            periodic.step(it, rng=rng_state(), scaler=self.precision.scaler.state_dict())
            period = cfg.TEST.EVAL_PERIOD
            last = it == self.max_iter - 1
            if cfg.DATASETS.TEST and ((period > 0 and (it + 1) % period == 0) or last):
                results = self.test()
                if writer is not None:
                    writer.write(it, flatten_results(results))
                net.train()
        return results

    def _finish_completed_run(self, writer: Optional["MetricsWriter"]) -> Dict[str, float]:
        final = os.path.join(self.cfg.OUTPUT_DIR, "model_final.pth")
        if not os.path.isfile(final):
            logger.info("all %d iterations were done: writing the missing %s", self.max_iter, final)
            self.checkpointer.save(
                "model_final",
                iteration=self.max_iter - 1,
                rng=rng_state(),
                scaler=self.precision.scaler.state_dict(),
            )
        results: Dict[str, float] = {}
        if self.cfg.DATASETS.TEST:
            results = self.test()
            if writer is not None:
                writer.write(self.max_iter - 1, flatten_results(results))
        return results

    def run_step(self, net: torch.nn.Module, batch: List[Dict], it: int) -> Dict[str, float]:
        """Forward, finite check, backward, clipped AdamW step, schedule step (shared step)."""
        try:
            loss_dict = forward_backward(net, batch, self.optimizer, self.precision, it)
        except NonFiniteLossError as err:
            comm.synchronize()
            last_good = self.checkpointer.quarantine_diverged(it)
            raise TrainingDiverged(nonfinite_loss_message(err, last_good)) from None
        optimizer_step(self.optimizer, self.precision)
        self.scheduler.step()
        return {k: float(v) for k, v in loss_dict.items()}

    # ------------------------------------------------------------------ evaluation
    def test(self) -> Dict[str, Dict[str, float]]:
        """Evaluate the student on every DATASETS.TEST name; returns {name: {metric: value}}."""
        self.model.eval()
        return evaluate(self.cfg, self.model)


def evaluate(cfg: CfgNode, model: torch.nn.Module) -> Dict[str, Dict[str, float]]:
    """Run ``model`` (eval mode) on the first TEST.MAX_IMAGES images of every DATASETS.TEST name,
    mapped in this process, split over processes; returns {name: {task: {metric: value}}}."""
    mapper = build_mapper(cfg, is_train=False)
    all_results = {}
    for name in cfg.DATASETS.TEST:
        records = evaluation_records(cfg, name)
        evaluator = build_evaluator(cfg, name, evaluation_output_dir(cfg, name))
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
            evaluator.process(inputs, model(inputs))
        results = evaluator.evaluate()
        if comm.is_main_process() and results is not None:
            all_results[name] = results
    return all_results


def evaluate_weights(cfg: CfgNode) -> Dict[str, Dict[str, float]]:
    """``--eval-only``: the student alone (no teacher built) with MODEL.WEIGHTS, evaluated."""
    cfg = effective_config(cfg, None)  # CPU fallback; no training set needed
    model = build_inference_model(cfg).to(resolve_device(cfg))
    AtomicCheckpointer(model, cfg.OUTPUT_DIR, save_to_disk=False).load(
        cfg.MODEL.WEIGHTS, checkpointables=[]
    )
    model.eval()
    return evaluate(cfg, model)


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

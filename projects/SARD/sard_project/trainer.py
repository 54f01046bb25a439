"""detectron2's DefaultTrainer training SARD exactly as SARD's built-in engine does.

Both engines read the effective config of ``sard.engine.setup.setup_config`` and share, from
``sard.engine``: the optimizer (AdamW that clips its own gradients), the LR schedule, the
training step (autocast, finite check before backward, GradScaler), the checkpointer rules
(atomic, finite weights, local files only, strict student, RNG state), the evaluation images
(TEST.MAX_IMAGES, mapped in the main process), the metrics period (SOLVER.LOG_PERIOD) and the
non-finite-loss message. What stays detectron2's own: its loop, hooks, data loader, event
writers and launcher.
"""

from __future__ import annotations

import logging
import os
import time
import weakref

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, SimpleTrainer, TrainerBase, hooks
from detectron2.utils import comm
from detectron2.utils.events import JSONWriter
from torch.nn.parallel import DistributedDataParallel

from sard.config.contract import describe_contract
from sard.engine.builders import (
    build_evaluator,
    build_mapper,
    evaluation_output_dir,
    evaluation_records,
    training_records,
)
from sard.engine.checkpoint import RNGCheckpointable, SardCheckpointMixin
from sard.engine.metrics import drop_metrics_from
from sard.engine.solver import build_lr_scheduler, build_optimizer
from sard.engine.step import (
    NonFiniteLossError,
    Precision,
    TrainingDiverged,
    forward_backward,
    nonfinite_loss_message,
    optimizer_step,
)
from sard.engine.subnormals import flush_subnormal_floats
from sard.engine.trainer import resolve_device, seed_all, training_seed

logger = logging.getLogger("sard.projects")


class SardDetectionCheckpointer(SardCheckpointMixin, DetectionCheckpointer):
    """detectron2's checkpointer with SARD's saving and loading rules."""


class SardStepTrainer(SimpleTrainer):
    """SimpleTrainer whose step is SARD's shared one (``sard.engine.step``)."""

    def __init__(self, model, data_loader, optimizer, precision: Precision) -> None:
        super().__init__(model, data_loader, optimizer)
        self.precision = precision

    def run_step(self) -> None:
        assert self.model.training, "[SardStepTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        loss_dict = forward_backward(self.model, data, self.optimizer, self.precision, self.iter)
        self.after_backward()
        self._write_metrics(loss_dict, data_time)
        optimizer_step(self.optimizer, self.precision)

    def state_dict(self):
        ret = super().state_dict()
        ret["grad_scaler"] = self.precision.scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "grad_scaler" in state_dict:
            self.precision.scaler.load_state_dict(state_dict["grad_scaler"])


class ResumableJSONWriter(JSONWriter):
    """detectron2's metrics.json writer; before its first line it removes lines of iterations
    the (resumed) run will write again, as the built-in engine does."""

    def __init__(self, json_file: str, trainer: "Trainer", window_size: int = 20) -> None:
        super().__init__(json_file, window_size)
        self._json_file = json_file
        self._trainer = weakref.proxy(trainer)
        self._cleaned = False

    def write(self) -> None:
        if not self._cleaned:
            self._file_handle.close()
            drop_metrics_from(self._json_file, self._trainer.start_iter)
            self._file_handle = open(self._json_file, "a")
            self._cleaned = True
        super().write()


class Trainer(DefaultTrainer):
    """DefaultTrainer with SARD's model, data, optimizer, schedule, step, hooks and evaluation."""

    def __init__(self, cfg) -> None:
        TrainerBase.__init__(self)
        seed = training_seed(cfg)
        # As the built-in engine: one seed while building (identical random inits on every
        # process, the teacher's included, which DDP does not broadcast), then one per process.
        seed_all(seed)
        model = self.build_model(cfg)
        seed_all(seed + comm.get_rank())
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        device = resolve_device(cfg)
        if comm.get_world_size() > 1:
            # detectron2's create_ddp_model passes device_ids=[local rank], which a CPU module
            # refuses; on CPUs (gloo) DDP takes no device ids.
            model = DistributedDataParallel(
                model,
                device_ids=[comm.get_local_rank()] if device.type == "cuda" else None,
                broadcast_buffers=False,
                find_unused_parameters=True,
            )
        self._trainer = SardStepTrainer(
            model, data_loader, optimizer, Precision.from_cfg(cfg, device)
        )
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = SardDetectionCheckpointer(
            model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self), rng=RNGCheckpointable()
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())
        logger.info(describe_contract(cfg, len(training_records(cfg))))
        flush_subnormal_floats()

    def build_hooks(self):
        """Timer, LR schedule (logs the LR an iteration used, then steps), checkpoints, evaluation
        every TEST.EVAL_PERIOD and at the end, metrics every SOLVER.LOG_PERIOD."""
        cfg = self.cfg
        ret = [hooks.IterationTimer(), hooks.LRScheduler()]
        if comm.is_main_process():
            ret.append(hooks.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD))

        def test_and_save_results():
            self._last_eval_results = self.test(self.cfg, self.model)
            return self._last_eval_results

        ret.append(hooks.EvalHook(cfg.TEST.EVAL_PERIOD, test_and_save_results))
        if comm.is_main_process():
            ret.append(hooks.PeriodicWriter(self.build_writers(), period=cfg.SOLVER.LOG_PERIOD))
        return ret

    def build_writers(self):
        writers = super().build_writers()
        json_file = os.path.join(self.cfg.OUTPUT_DIR, "metrics.json")
        for i, w in enumerate(writers):
            if type(w) is JSONWriter:
                w.close()
                writers[i] = ResumableJSONWriter(json_file, self)
        return writers

    def run_step(self) -> None:
        self._trainer.iter = self.iter
        try:
            self._trainer.run_step()
        except NonFiniteLossError as err:
            comm.synchronize()
            last_good = self.checkpointer.quarantine_diverged(self.iter)
            raise TrainingDiverged(nonfinite_loss_message(err, last_good)) from None

    def resume_or_load(self, resume: bool = True) -> None:
        super().resume_or_load(resume=resume)
        if self.start_iter >= self.max_iter and self.start_iter > 0:
            self._finish_completed_run()

    def _finish_completed_run(self) -> None:
        """All iterations were done before a kill: write model_final.pth if missing; the
        evaluation runs in train() (EvalHook's after_train)."""
        final = os.path.join(self.cfg.OUTPUT_DIR, "model_final.pth")
        if comm.is_main_process() and not os.path.isfile(final):
            logger.info("all %d iterations were done: writing the missing %s", self.max_iter, final)
            self.iter = self.max_iter - 1
            self.checkpointer.save("model_final", iteration=self.max_iter - 1)

    def train(self):
        if self.start_iter >= self.max_iter and self.start_iter > 0:
            # TrainerBase.train would skip every hook; evaluate as the last iteration would.
            self.iter = self.max_iter - 1
            if self.cfg.DATASETS.TEST:
                self._last_eval_results = self.test(self.cfg, self.model)
                return self._last_eval_results
            return None
        return super().train()

    @classmethod
    def build_train_loader(cls, cfg):
        # The epoch both engines train on (image folders with pseudo-labels, mixing ratio).
        return build_detection_train_loader(
            cfg, mapper=build_mapper(cfg, is_train=True), dataset=training_records(cfg)
        )

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        # The images the built-in engine evaluates (TEST.MAX_IMAGES), mapped in this process:
        # loader workers only compete with the model for a few cores here.
        return build_detection_test_loader(
            evaluation_records(cfg, dataset_name),
            mapper=build_mapper(cfg, is_train=False),
            num_workers=0,
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or evaluation_output_dir(cfg, dataset_name)
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_optimizer(cls, cfg, model):
        # The FrozenTeacher exposes no parameters, so the teacher never enters the optimizer;
        # the optimizer clips its own gradients (SOLVER.CLIP_GRADIENTS), as in the built-in engine.
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)


def build_inference_model(cfg) -> torch.nn.Module:
    """The registered meta-architecture with the student alone (no teacher built), on device."""
    from sard.distill import distiller_kwargs

    from .meta_arch import SARDDistiller

    model = SARDDistiller(**distiller_kwargs(cfg, inference_only=True))
    return model.to(resolve_device(cfg))

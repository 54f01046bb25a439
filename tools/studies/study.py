"""One training run of a study (teacher or student) on the built-in Trainer, resumable.

A run is fully described by config overrides (``KEY VALUE`` pairs on top of a YAML config), so
the quickstart and the method comparison train through the same ``Trainer`` that users run.
A run folder holds ``run.json`` (its overrides, written before training), the trainer's
checkpoints and ``metrics.json``, and, once evaluated, ``results.json``; a folder with
``results.json`` is skipped, one with only checkpoints resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from .output_lock import FolderInUseError, claim_output_folder

# The checkout's configs/ folder, next to tools/ (studies run from a checkout, never installed).
CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"
TINY_SAM_CONFIG = str(CONFIGS_DIR / "tiny" / "sam_tiny_to_efficientsam_tiny.yaml")

# Study method name -> (MODEL.SARD.METHOD, MODEL.SARD.* overrides). The W(i) ablations keep the
# paper's beta of each kept term and zero the others, as configs/ablations/ do.
METHOD_VARIANTS: Dict[str, Tuple[str, Dict[str, float]]] = {
    "none": ("none", {}),
    "kd": ("kd", {}),
    "skd": ("skd", {}),
    "cwd": ("cwd", {}),
    "mgd": ("mgd", {}),
    "uniform": ("uniform", {}),
    "sard": ("sard", {}),
    "sard_E": ("sard", {"BETA_E": 2.0, "BETA_C": 0.0, "BETA_D": 0.0}),
    "sard_C": ("sard", {"BETA_E": 0.0, "BETA_C": 1.0, "BETA_D": 0.0}),
    "sard_D": ("sard", {"BETA_E": 0.0, "BETA_C": 0.0, "BETA_D": 1.0}),
    "sard_EC": ("sard", {"BETA_E": 2.0, "BETA_C": 1.0, "BETA_D": 0.0}),
}
# Overrides that may change between a crash and a resume without changing the run: where it
# lives, the device, and where the teacher's checkpoint lives (a moved output folder moves it;
# MODEL.WEIGHTS is only set on the teacher-only run that evaluates a given teacher).
_FREE_KEYS = ("OUTPUT_DIR", "MODEL.DEVICE", "MODEL.TEACHER.WEIGHTS", "MODEL.WEIGHTS")


@dataclass(frozen=True)
class Member:
    """A teacher or student: family, size name and architecture overrides (MODEL.*.ARCH)."""

    family: str
    size: str
    arch: Tuple[Tuple[str, object], ...] = ()

    def opts(self, role: str) -> List[str]:
        """``KEY VALUE`` overrides for MODEL.TEACHER (role "TEACHER") or MODEL.STUDENT."""
        out = [f"MODEL.{role}.FAMILY", self.family, f"MODEL.{role}.SIZE", self.size]
        for key, value in self.arch:
            out += [f"MODEL.{role}.ARCH.{key.upper()}", json.dumps(value)]
        return out

    def describe(self) -> str:
        """ "family:size (key=value, ...)" for tables."""
        arch = ", ".join(f"{k}={v}" for k, v in self.arch)
        return f"{self.family}:{self.size}" + (f" ({arch})" if arch else "")


def widened_member(family: str, size: str, embed_dim: int, depth: int, heads: int) -> Member:
    """``family:size`` with its encoder widened/deepened to ``embed_dim``, ``depth``, ``heads``
    (SAM: global attention in every other block, the rest windowed, as SAM; the last block when
    there is only one) - the CPU-scale teachers of the quickstart and the comparison."""
    arch = [("embed_dim", embed_dim), ("depth", depth), ("num_heads", heads)]
    if family == "sam":
        arch.append(("global_attn_indexes", list(range(1, depth, 2)) or [depth - 1]))
    return Member(family, size, tuple(arch))


# Architecture overrides a study may set on a member (MODEL.*.ARCH), each with its official
# value, the multiple it must be and why. segment_anything's SAM takes any of them; EfficientSAM's
# released layout is fixed (patch 16, decoder width 256).
@dataclass(frozen=True)
class ArchOverride:
    default: int
    multiple_of: int
    what: str
    fixed_hint: str = ""


ARCH_OVERRIDES: Dict[str, ArchOverride] = {
    # feature grid = input / patch; the mask decoder draws logits at 4x that grid
    "patch_size": ArchOverride(16, 4, "patch size", ", or a larger input size for a finer grid"),
    # neck, prompt encoder and per-prompt decoder width: most of a step's cost on fine grids,
    # so this is what makes a student small next to its teacher
    "decoder_dim": ArchOverride(256, 16, "decoder width"),
}
ARCH_OVERRIDABLE_FAMILIES = ("sam",)


def with_arch(member: Member, key: str, value: int) -> Member:
    """``member`` with ``ARCH_OVERRIDES[key]`` set to ``value``; the official value leaves the
    member unchanged. ValueError for a family whose layout is fixed or a value that is not a
    positive multiple of the key's step."""
    spec = ARCH_OVERRIDES[key]
    if value == spec.default:
        return member
    if member.family not in ARCH_OVERRIDABLE_FAMILIES:
        raise ValueError(
            f"{member.family} has a fixed {spec.what} of {spec.default}; use the sam family for "
            f"another {spec.what}{spec.fixed_hint}"
        )
    if value <= 0 or value % spec.multiple_of:
        raise ValueError(
            f"{spec.what} must be a positive multiple of {spec.multiple_of}, got {value}"
        )
    return Member(member.family, member.size, member.arch + ((key, value),))


@dataclass(frozen=True)
class Schedule:
    """Optimisation schedule shared by every student of a study (and the teacher's own)."""

    iters: int
    ims_per_batch: int = 2
    base_lr: float = 1e-3
    max_prompts: int = 32
    warmup_iters: int = 0


@dataclass
class RunSpec:
    """Everything that defines one run; ``opts()`` turns it into config overrides.

    ``method`` is a key of METHOD_VARIANTS. ``teacher``/``teacher_weights`` are ignored for
    "none". ``num_test`` limits evaluation to the first N test images (0 = all).
    """

    method: str
    seed: int
    student: Member
    schedule: Schedule
    image_size: int
    train_name: str
    test_name: str
    teacher: Optional[Member] = None
    teacher_weights: str = ""
    device: str = "cpu"
    num_test: int = 0
    extra_opts: List[str] = field(default_factory=list)

    def opts(self) -> List[str]:
        """``KEY VALUE`` overrides of the run on top of the base YAML (OUTPUT_DIR excluded)."""
        if self.method not in METHOD_VARIANTS:
            raise ValueError(f"unknown method {self.method!r}; choose from {list(METHOD_VARIANTS)}")
        base_method, betas = METHOD_VARIANTS[self.method]
        s = self.schedule
        out = [
            "MODEL.DEVICE",
            self.device,
            "MODEL.SARD.METHOD",
            base_method,
            "SEED",
            str(self.seed),
            "INPUT.IMAGE_SIZE",
            f"({self.image_size}, {self.image_size})",
            "INPUT.PROMPT.MAX_PROMPTS",
            str(s.max_prompts),
            "DATASETS.TRAIN",
            f"('{self.train_name}',)",
            "DATASETS.TEST",
            f"('{self.test_name}',)",
            "SOLVER.MAX_ITER",
            str(s.iters),
            "SOLVER.IMS_PER_BATCH",
            str(s.ims_per_batch),
            "SOLVER.BASE_LR",
            str(s.base_lr),
            "SOLVER.WARMUP_ITERS",
            str(s.warmup_iters),
            # Checkpoints a crash can resume from, without filling the disk (see compact_run).
            "SOLVER.CHECKPOINT_PERIOD",
            str(max(1, s.iters // 4)),
            "SOLVER.LOG_PERIOD",
            "1",
            "TEST.EVAL_PERIOD",
            "0",
            "TEST.MAX_IMAGES",
            str(self.num_test),
        ]
        out += self.student.opts("STUDENT")
        if base_method != "none":
            if self.teacher is None:
                raise ValueError(f"method {self.method!r} needs a teacher")
            out += self.teacher.opts("TEACHER")
            out += ["MODEL.TEACHER.WEIGHTS", self.teacher_weights]
        for key, value in betas.items():
            out += [f"MODEL.SARD.{key}", str(value)]
        return out + list(self.extra_opts)


def _identity(opts: Sequence[str]) -> List[List[str]]:
    """The overrides that define a run (the _FREE_KEYS left out)."""
    pairs = zip(opts[0::2], opts[1::2])
    return [[k, str(v)] for k, v in pairs if k not in _FREE_KEYS]


def _write_json(path: str, data: Dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)  # a crash mid-write never leaves a truncated results file


def write_results(out: Path, payload: Dict) -> None:
    """A study's ``OUT/results.json``, written atomically (a crash never leaves half a file)."""
    _write_json(str(Path(out) / "results.json"), payload)


def read_results(run_dir: str) -> Optional[Dict]:
    """The run's ``results.json``, or None when the run has not finished."""
    path = os.path.join(run_dir, "results.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def check_same_run(run_dir: str, opts: Sequence[str]) -> None:
    """Raise ValueError when ``run_dir`` was started with other settings than ``opts``."""
    path = os.path.join(run_dir, "run.json")
    if not os.path.isfile(path):
        return
    with open(path) as f:
        previous = [p for p in json.load(f)["opts"] if p[0] not in _FREE_KEYS]
    now = _identity(opts)
    if previous != now:
        changed = [p for p in now if p not in previous] + [p for p in previous if p not in now]
        raise ValueError(
            f"{run_dir} holds a run with other settings (differing: {changed[:6]}). Use "
            "another output folder, or delete that run folder to retrain it."
        )


def compact_run(run_dir: str) -> None:
    """Once a run is evaluated: drop intermediate checkpoints and the optimizer state from
    model_final.pth (a finished run is never resumed), keeping the weights."""
    for path in glob.glob(os.path.join(run_dir, "model_[0-9]*.pth")):
        os.remove(path)
    final = os.path.join(run_dir, "model_final.pth")
    if os.path.isfile(final):
        ckpt = torch.load(final, map_location="cpu", weights_only=True)
        slim = {k: ckpt[k] for k in ("model", "iteration") if k in ckpt}
        if slim.keys() != ckpt.keys():
            torch.save(slim, final + ".tmp")
            os.replace(final + ".tmp", final)


def build_trainer(config_file: str, opts: Sequence[str], run_dir: str):
    """A ``Trainer`` for ``config_file`` + ``opts`` writing into ``run_dir``, resumed from the
    run's last checkpoint (its final weights when it has finished)."""
    from sard.config import load_config
    from sard.engine import Trainer

    cfg = load_config(config_file, list(opts) + ["OUTPUT_DIR", run_dir])
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=True)
    return trainer


def train_run(
    config_file: str, spec: RunSpec, run_dir: str, label: str = ""
) -> Tuple[Dict, Optional[object]]:
    """Train and evaluate ``spec`` in ``run_dir`` unless its results exist.

    Returns (record, trainer): record = {"label", "method", "seed", "metrics" (the test split's
    ``sard_instances`` metrics), "wall_s", "iterations", "teacher_weights", "opts"}; trainer is
    None when the run was skipped. The record is also written to ``run_dir/results.json``.
    """
    opts = spec.opts()
    os.makedirs(run_dir, exist_ok=True)
    check_same_run(run_dir, opts)
    done = read_results(run_dir)
    if done is not None:
        return done, None
    _write_json(os.path.join(run_dir, "run.json"), {"opts": _identity(opts)})
    start = time.perf_counter()
    trainer = build_trainer(config_file, opts, run_dir)
    results = trainer.train() or trainer.test()
    if spec.test_name not in results:
        raise RuntimeError(f"{run_dir}: evaluation returned no results for {spec.test_name}")
    metrics = dict(next(iter(results[spec.test_name].values())))
    record = {
        "label": label or spec.method,
        "method": spec.method,
        "seed": spec.seed,
        "metrics": metrics,
        "wall_s": time.perf_counter() - start,
        "iterations": spec.schedule.iters,
        "teacher_weights": (
            spec.teacher_weights if METHOD_VARIANTS[spec.method][0] != "none" else ""
        ),
        "opts": _identity(opts),
    }
    _write_json(os.path.join(run_dir, "results.json"), record)
    compact_run(run_dir)
    return record, trainer


def train_run_job(job: Dict) -> Dict:
    """Process-pool entry point: ``train_run`` in a fresh process.

    ``job``: config_file, spec, run_dir, label, threads, and dataset = (prefix, folder, splits)
    to register in this process (registrations do not cross process boundaries). The run's
    progress bar and warnings go to ``run_dir/train.log`` (follow it with ``tail -f``), so
    parallel runs do not garble the terminal.
    """
    from .study_data import register_splits

    start_study_process(int(job.get("threads", 1)))
    register_splits(*job["dataset"])
    os.makedirs(job["run_dir"], exist_ok=True)
    with open(os.path.join(job["run_dir"], "train.log"), "a") as log:
        with contextlib.redirect_stderr(log):
            record, _ = train_run(
                job["config_file"], job["spec"], job["run_dir"], job.get("label", "")
            )
    return record


def start_study_process(threads: int) -> None:
    """Torch threads, and quiet logs: studies start their models from random weights on
    purpose, so the "random init" warnings say nothing."""
    import logging
    import warnings

    from sard.engine.subnormals import flush_subnormal_floats

    # Before any torch work, so every worker thread inherits it; the trainer checks and logs.
    flush_subnormal_floats(check=False)
    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", message=".*random")
    logging.getLogger("sard").setLevel(logging.WARNING)
    logging.getLogger("sard.models").setLevel(logging.ERROR)


def start_study(threads: int, out: str) -> Path:
    """A study tool's start: ``start_study_process(threads)``, then its output folder ``out``,
    made if missing and claimed for this process (``claim_output_folder``: a second study
    writing into it at the same time is refused: the tool exits with the reason); returns it."""
    start_study_process(threads)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        claim_output_folder(folder)
    except FolderInUseError as e:
        raise SystemExit(f"error: {e}") from None
    return folder


def spawn_pool(workers: int):
    """A process pool of fresh interpreters ("spawn": no forked torch state, safe with threads
    and CUDA) for ``train_run_job``; each worker ends when this process does."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=exit_with_parent,
        initargs=(os.getpid(),),
    )


def exit_with_parent(parent_pid: int, poll_s: float = 1.0) -> None:
    """Pool-worker initialiser: end this worker within ``poll_s`` of its parent's end.

    Ctrl-C reaches the whole process group, but a parent killed alone (``kill PID``, a scheduler's
    time limit) leaves its workers training on, into run folders that a restarted study trains
    into as well. Checkpoints are written atomically, so the restart resumes from the last one.
    """
    import threading

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os._exit(1)  # no cleanup: the parent that would collect the result is gone

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def evaluate_run_on(
    config_file: str, spec: RunSpec, run_dir: str, test_name: str, image_size: int
) -> Dict[str, float]:
    """Metrics of a finished run's final weights on another registered test set (e.g. a model
    trained on synthetic data, evaluated on real photos), at input size ``image_size``; no
    training. Results are also written under ``run_dir/inference/<test_name>``."""
    opts = spec.opts() + [
        "DATASETS.TEST",
        f"('{test_name}',)",
        "INPUT.IMAGE_SIZE",
        f"({image_size}, {image_size})",
        "TEST.MAX_IMAGES",
        "0",
    ]
    given = "MODEL.WEIGHTS" in spec.extra_opts[0::2]  # e.g. a teacher loaded, not trained
    if not given and not os.path.isfile(os.path.join(run_dir, "model_final.pth")):
        raise FileNotFoundError(f"{run_dir} has no model_final.pth: train the run first")
    results = build_trainer(config_file, opts, run_dir).test()
    return dict(next(iter(results[test_name].values())))

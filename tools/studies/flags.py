"""Command-line pieces the study tools share: the regime flags, the member flags and their checks,
and the settings every study process starts with.

The tools parse flags into a ``Namespace``; these functions turn it into the dataclasses the
study modules take (``RegimeFlags``, ``Member``), so nothing below the tools reads argparse.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from .study import ARCH_OVERRIDES, Member, widened_member, with_arch

FAMILIES = ("efficient_sam", "sam")
TASK_LOSSES = ("dice_bce", "focal_dice")
MULTIMASK = ("always", "never", "auto")
# The official layout's values (the flags' defaults add no ARCH override).
PATCH = ARCH_OVERRIDES["patch_size"].default
DECODER_DIM = ARCH_OVERRIDES["decoder_dim"].default


@dataclass(frozen=True)
class RegimeFlags:
    """Training levers every run of a study shares. Defaults add no override, so a study that
    leaves them alone trains exactly the base YAML's regime."""

    scale_jitter: Tuple[float, float] = (1.0, 1.0)
    multimask: str = "always"
    task_loss: str = "dice_bce"

    def opts(self) -> List[str]:
        """``KEY VALUE`` overrides: INPUT.SCALE_JITTER, MODEL.SARD.MULTIMASK_OUTPUT and
        MODEL.SARD.TASK_LOSS, each only when it differs from its default."""
        out: List[str] = []
        if self.scale_jitter != (1.0, 1.0):
            out += ["INPUT.SCALE_JITTER", str(tuple(self.scale_jitter))]
        if self.multimask != "always":
            out += ["MODEL.SARD.MULTIMASK_OUTPUT", self.multimask]
        if self.task_loss != "dice_bce":
            out += ["MODEL.SARD.TASK_LOSS", self.task_loss]
        return out


def add_regime_flags(
    p: argparse.ArgumentParser, jitter_help: str, jitter_default: Optional[Tuple] = None
) -> None:
    """--task-loss, --multimask and --scale-jitter LOW HIGH (``jitter_default``: None or
    (1.0, 1.0), both meaning no jitter)."""
    p.add_argument(
        "--task-loss",
        default="dice_bce",
        choices=TASK_LOSSES,
        help="promptable task loss (MODEL.SARD.TASK_LOSS): the paper's Dice + BCE or SAM's "
        "20:1 focal + Dice",
    )
    p.add_argument(
        "--multimask",
        default="always",
        choices=MULTIMASK,
        help="mask outputs per prompt (MODEL.SARD.MULTIMASK_OUTPUT): 3 candidates, or SAM's "
        "single mask for box prompts (never/auto)",
    )
    p.add_argument(
        "--scale-jitter",
        type=float,
        nargs=2,
        default=jitter_default,
        metavar=("LOW", "HIGH"),
        help=f"{jitter_help}: random rescale range (flips are always on)",
    )


def add_patch_flags(p: argparse.ArgumentParser) -> None:
    """--teacher-patch, --student-family, --student-patch and --student-decoder-dim
    (--student-size is the tool's: its default differs)."""
    p.add_argument(
        "--teacher-patch", type=int, default=PATCH, help="teacher patch size, px (sam family: 4, 8)"
    )
    p.add_argument("--student-family", default="efficient_sam", choices=FAMILIES)
    p.add_argument(
        "--student-patch", type=int, default=PATCH, help="student patch size, px (sam family: 4, 8)"
    )
    p.add_argument(
        "--student-decoder-dim",
        type=int,
        default=DECODER_DIM,
        help="student neck/prompt/decoder width (sam family; 256 = SAM's): the per-prompt decoder "
        "is most of a step on fine grids, so a small student needs a narrow one (e.g. 64)",
    )


def check_regime_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A parser error for a --scale-jitter range that is empty or not positive."""
    low, high = args.scale_jitter or (1.0, 1.0)
    if not 0 < low <= high:
        p.error("--scale-jitter needs 0 < LOW <= HIGH")


def regime_of(args: argparse.Namespace) -> RegimeFlags:
    """The regime of ``add_regime_flags``' flags (checked by ``check_regime_flags``)."""
    return RegimeFlags(tuple(args.scale_jitter or (1.0, 1.0)), args.multimask, args.task_loss)


def check_patches(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--teacher-patch, --student-patch and --student-decoder-dim valid for their families (a
    parser error if not)."""
    for flag, family, key in (
        ("teacher_patch", args.teacher_family, "patch_size"),
        ("student_patch", args.student_family, "patch_size"),
        ("student_decoder_dim", args.student_family, "decoder_dim"),
    ):
        try:
            with_arch(Member(family, "tiny"), key, getattr(args, flag))
        except ValueError as err:
            p.error(f"--{flag.replace('_', '-')}: {err}")


def check_positive(p: argparse.ArgumentParser, args: argparse.Namespace, names: Sequence[str]):
    """A parser error naming the first of ``names`` (attribute names) that is not positive."""
    for name in names:
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")


def check_files(p: argparse.ArgumentParser, args: argparse.Namespace, names: Sequence[str]):
    """A parser error naming the first of ``names`` (attribute names) that is given but is not an
    existing file."""
    for name in names:
        path = getattr(args, name)
        if path and not os.path.isfile(path):
            p.error(f"--{name.replace('_', '-')} {path!r} does not exist")


def member(
    family: str,
    size: str,
    patch: int = PATCH,
    widen: Tuple[int, int, int] = (),
    decoder_dim: int = DECODER_DIM,
) -> Member:
    """``family:size``, widened to ``widen`` = (embed_dim, depth, heads) when given (the CPU-scale
    teachers), with its encoder's patch size and its decoder width."""
    base = widened_member(family, size, *widen) if widen else Member(family, size)
    return with_arch(with_arch(base, "patch_size", patch), "decoder_dim", decoder_dim)

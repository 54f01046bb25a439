"""Build teachers, students and the distiller from a config node."""

from __future__ import annotations

import logging
import os
import warnings
from typing import Dict, Optional

import torch
import torch.nn as nn
from fvcore.common.config import CfgNode

from sard.models.base import PROMPTABLE_FAMILIES

from .distiller import SARDDistiller
from .teacher_cache import TeacherCache, state_dict_digest

logger = logging.getLogger(__name__)

TRAINING_CHECKPOINT_PREFIX = "student."


def member_image_size(cfg: CfgNode, family: str):
    """(H, W) for semantic families; the longest side for promptable (square-input) families."""
    h, w = (int(v) for v in cfg.INPUT.IMAGE_SIZE)
    return max(h, w) if family in PROMPTABLE_FAMILIES else (h, w)


def student_state_dict(checkpoint: Dict) -> Dict[str, torch.Tensor]:
    """The bare student's weights from a SARD checkpoint (``{"model": {"student.x": ...}}``).

    A checkpoint that is already a bare state dict is returned unchanged.
    """
    state = checkpoint.get("model", checkpoint)
    if not any(k.startswith(TRAINING_CHECKPOINT_PREFIX) for k in state):
        return state
    n = len(TRAINING_CHECKPOINT_PREFIX)
    return {k[n:]: v for k, v in state.items() if k.startswith(TRAINING_CHECKPOINT_PREFIX)}


def _is_sard_checkpoint(path: str, allow_unsafe_pickle: bool) -> bool:
    from sard.models.checkpoint import read_state_dict

    state = read_state_dict(path, allow_unsafe_pickle=allow_unsafe_pickle)
    return any(k.startswith(TRAINING_CHECKPOINT_PREFIX) for k in state)


def _load_weights(model: nn.Module, node: CfgNode, role: str) -> None:
    """Load MODEL.{TEACHER,STUDENT}.WEIGHTS into ``model``.

    Accepted: a SARD training checkpoint (its student is taken), the family's official checkpoint
    (through ``load_checkpoint``, with its resizing rules), or whatever the family's own
    ``load_weights`` reads (a transformers folder for Mask2Former, a timm ViT state dict).
    """
    from sard.local_paths import require_local_path
    from sard.models.checkpoint import load_checkpoint

    key = f"MODEL.{role.upper()}.WEIGHTS"
    path, unsafe = node.WEIGHTS, node.ALLOW_UNSAFE_PICKLE
    if path:
        require_local_path(path, key)  # a URL is refused: nothing is ever downloaded
    if not path:
        warnings.warn(
            f"{key} is empty: the {role} ({node.FAMILY} {node.SIZE}) is randomly initialised",
            stacklevel=3,
        )
        return
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{role} weights not found: {path!r}. Put the {node.FAMILY} {node.SIZE} "
            f'checkpoint there, or set {key} to its path ("" = random init).'
        )
    if hasattr(model, "load_weights") and (
        os.path.isdir(path) or not _is_sard_checkpoint(path, unsafe)
    ):
        model.load_weights(path, allow_unsafe_pickle=unsafe)
        return
    load_checkpoint(model, path, allow_unsafe_pickle=unsafe, transform=student_state_dict)


def build_member(cfg: CfgNode, node: CfgNode, role: str) -> nn.Module:
    """Build the teacher or student described by ``node`` (MODEL.TEACHER or MODEL.STUDENT).

    A WEIGHTS file written by SARD's own trainer (a distiller checkpoint) is accepted too: its
    ``student.*`` weights are loaded, which is how a teacher trained here becomes a teacher.
    """
    from sard.models import build_model

    arch = {k.lower(): v for k, v in node.ARCH.items()}
    kwargs = dict(size=node.SIZE, image_size=member_image_size(cfg, node.FAMILY), **arch)
    if node.FAMILY not in PROMPTABLE_FAMILIES:
        kwargs["num_classes"] = cfg.MODEL.NUM_CLASSES
    # weights=None: the family builder stays silent, as _load_weights either loads WEIGHTS or
    # announces the random initialisation itself, naming the config key.
    model = build_model(node.FAMILY, weights=None, **kwargs)
    _load_weights(model, node, role)
    return model


def _tap_channels(model: nn.Module, taps, role: str):
    missing = [t for t in taps if t not in model.tap_channels]
    if missing:
        raise KeyError(
            f"{role} has no tap {missing}; its taps are {sorted(model.tap_channels)} "
            f"(set MODEL.{role.upper()}.TAP, or the method's stage taps, e.g. "
            "MODEL.SARD.REVIEWKD.TAPS)"
        )
    return [model.tap_channels[t] for t in taps]


def _teacher_identity(cfg: CfgNode, teacher: nn.Module) -> Dict:
    """Which teacher this is: family, size, architecture overrides, image size, weights path and
    a digest of the weights actually loaded (another checkpoint, or a random init with another
    seed, is another teacher)."""
    t = cfg.MODEL.TEACHER
    return {
        "family": t.FAMILY,
        "size": t.SIZE,
        "arch": {str(k): str(v) for k, v in sorted(t.ARCH.items())},
        "image_size": [int(v) for v in cfg.INPUT.IMAGE_SIZE],
        "weights": t.WEIGHTS,
        "weights_digest": state_dict_digest(teacher),
    }


def teacher_cache_identity(
    cfg: CfgNode,
    teacher: nn.Module,
    promptable: bool,
    structure: Optional[Dict],
    stage_taps=(),
) -> Dict:
    """What the teacher cache's entries depend on, besides the input image (see
    ``sard.distill.teacher_cache``): the teacher (``_teacher_identity``), the cached outputs
    (taps, semantic scores, W) and, when
    W is cached, its settings ``structure`` (the head's ``structure_settings``: betas, radius,
    sigma, border cells; None when the head caches no W). ``stage_taps``: the stages a
    multi-tap method (ReviewKD) compares."""
    t = cfg.MODEL.TEACHER
    taps = [t.TAP] + [tap for tap in stage_taps if tap != t.TAP]  # as the distiller runs
    # The outputs every entry must hold.
    outputs = [t.TAP] + list(stage_taps)
    outputs += [] if promptable else ["sem_logits"]
    outputs += [] if structure is None else ["structure_weight"]
    return {
        **_teacher_identity(cfg, teacher),
        "taps": taps,
        "outputs": sorted(set(outputs)),
        "structure": None if structure is None else dict(structure),
    }


def pseudo_label_identity(cfg: CfgNode, teacher: nn.Module, resize_mode: str) -> Dict:
    """What pseudo-masks depend on besides the model input: the teacher
    (``_teacher_identity``), the mapper's resize mode, the multimask mode (one mask or three
    per point) and every MODEL.SARD.PSEUDO_LABELS setting that changes masks."""
    from .pseudo_labels import PseudoLabelSettings

    node = cfg.MODEL.SARD.PSEUDO_LABELS
    return {
        **_teacher_identity(cfg, teacher),
        "resize_mode": resize_mode,
        "multimask": cfg.MODEL.SARD.MULTIMASK_OUTPUT,
        "pseudo_labels": PseudoLabelSettings.from_cfg(cfg).identity(node),
    }


def build_pseudo_labeler(cfg: CfgNode, teacher: nn.Module):
    """The ``PseudoLabeler`` of MODEL.SARD.PSEUDO_LABELS for ``teacher``: its masks are stored
    beside the teacher cache on disk when MODEL.SARD.CACHE.ENABLED with a CACHE.DIR, else in
    memory (each model input is segmented once per process)."""
    from sard.config.sard_config import resize_mode

    from .pseudo_label_store import PseudoLabelStore
    from .pseudo_labels import PromptSettings, PseudoLabeler, PseudoLabelSettings

    mode = resize_mode(cfg)
    cache = cfg.MODEL.SARD.CACHE
    directory = cache.DIR if cache.ENABLED else ""
    identity = pseudo_label_identity(cfg, teacher.module, mode) if directory else {}
    return PseudoLabeler(
        teacher,
        PseudoLabelSettings.from_cfg(cfg),
        PromptSettings.from_cfg(cfg),
        mode,
        PseudoLabelStore(directory, identity),
        multimask=cfg.MODEL.SARD.MULTIMASK_OUTPUT,
    )


def distiller_kwargs(cfg: CfgNode, *, inference_only: bool = False) -> Dict:
    """Keyword arguments of ``SARDDistiller`` built from ``cfg`` (detectron2's ``from_config``).

    ``inference_only``: the student alone (no teacher, no distillation head, method "none"),
    for evaluation and deployment, where the teacher never runs.
    """
    from sard.losses import MethodInputs, PromptMaskLoss, get_method
    from sard.models.frozen import FrozenTeacher

    s = cfg.MODEL.SARD
    method = "none" if inference_only or s.METHOD == "none" else get_method(s.METHOD).name
    student = build_member(cfg, cfg.MODEL.STUDENT, "student")
    promptable = cfg.MODEL.STUDENT.FAMILY in PROMPTABLE_FAMILIES
    if (cfg.MODEL.TEACHER.FAMILY in PROMPTABLE_FAMILIES) != promptable:
        raise ValueError(
            "teacher and student must both be promptable (sam, efficient_sam) or both semantic: "
            f"got {cfg.MODEL.TEACHER.FAMILY} -> {cfg.MODEL.STUDENT.FAMILY}"
        )
    teacher, head, taps = None, None, []
    pseudo = s.PSEUDO_LABELS.ENABLED and not inference_only
    if method != "none" or pseudo:  # pseudo-labels alone (method "none") need the teacher too
        teacher = FrozenTeacher(build_member(cfg, cfg.MODEL.TEACHER, "teacher"))
    if method != "none":
        spec = get_method(method)
        if spec.taps is not None:  # multi-tap methods compare lists of stages
            taps = spec.taps(cfg)
            s_ch = _tap_channels(student, taps, "student")
            t_ch = _tap_channels(teacher, taps, "teacher")
        else:
            (s_ch,) = _tap_channels(student, [cfg.MODEL.STUDENT.TAP], "student")
            (t_ch,) = _tap_channels(teacher, [cfg.MODEL.TEACHER.TAP], "teacher")
        head = spec.from_config(cfg, MethodInputs(s_ch, t_ch, promptable, cfg))
    task_loss = (
        PromptMaskLoss(iou_weight=s.IOU_LOSS_WEIGHT, kind=s.TASK_LOSS) if promptable else None
    )
    cache = None
    if s.CACHE.ENABLED and teacher is not None and method != "none":
        structure = getattr(head, "structure_settings", None)  # the head owns W
        identity = teacher_cache_identity(cfg, teacher.module, promptable, structure, taps)
        cache = TeacherCache(s.CACHE.DIR, identity=identity)
    labeler = build_pseudo_labeler(cfg, teacher) if pseudo else None
    return dict(
        teacher=teacher,
        student=student,
        distill_loss=head,
        task_loss=task_loss,
        method=method,
        teacher_tap=cfg.MODEL.TEACHER.TAP,
        student_tap=cfg.MODEL.STUDENT.TAP,
        mu=s.MU,
        review_taps=taps,
        cache=cache,
        test_prompt_chunk=cfg.TEST.PROMPT_CHUNK,
        distill_warmup_iters=s.DISTILL_WARMUP_ITERS,
        multimask=s.MULTIMASK_OUTPUT,
        pseudo_labeler=labeler,
    )


def build_distiller(cfg: CfgNode, *, inference_only: bool = False) -> SARDDistiller:
    """Teacher (frozen), student, distillation loss and task loss as the config says
    (the student alone with ``inference_only``)."""
    return SARDDistiller(**distiller_kwargs(cfg, inference_only=inference_only))

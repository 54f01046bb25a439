"""Shared input checks and reductions for the distillation losses.

Every loss computes its reductions in float32 whatever the input precision (fp16/bf16 under
autocast), so the weighted sums over 64x64 maps stay finite and accurate.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

IGNORE_LABEL = 255
LOGIT_FORMS = ("class", "mask")


def check_feature_map(x: torch.Tensor, name: str, channels: Optional[int] = None) -> None:
    """Raise a ValueError unless ``x`` is (B, C, H, W) with C == ``channels`` (when given)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a (B, C, H, W) tensor, got {shape}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f"{name} has {x.shape[1]} channels but the loss was built for {channels} "
            f"(check student_channels / teacher_channels)"
        )


def check_feature_pair(
    student: torch.Tensor,
    teacher: torch.Tensor,
    student_channels: Optional[int] = None,
    teacher_channels: Optional[int] = None,
    what: str = "features",
) -> None:
    """Raise a ValueError unless ``student`` and ``teacher`` are (B, C, H, W) maps of the same
    batch (the same images), with the given channel counts (when given); ``what`` names them."""
    check_feature_map(student, f"student {what}", student_channels)
    check_feature_map(teacher, f"teacher {what}", teacher_channels)
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(
            f"student batch {student.shape[0]} != teacher batch {teacher.shape[0]}: "
            f"both must come from the same images"
        )


def resize_to(x: torch.Tensor, size: Sequence[int], mode: str = "bilinear") -> torch.Tensor:
    """Resize the last two dims of ``x`` (any leading dims) to ``size``; no-op when equal."""
    size = tuple(int(s) for s in size)
    if tuple(x.shape[-2:]) == size:
        return x
    lead = x.shape[:-2]
    flat = x.reshape(-1, 1, *x.shape[-2:]) if x.dim() != 4 else x
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    out = F.interpolate(flat, size=size, mode=mode, **kwargs)
    return out.reshape(*lead, *size)


def resize_labels(labels: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resize of integer label maps (B, H, W) to ``size`` (labels stay exact)."""
    size = tuple(int(s) for s in size)
    if tuple(labels.shape[-2:]) == size:
        return labels
    out = F.interpolate(labels[:, None].float(), size=size, mode="nearest")
    return out[:, 0].to(labels.dtype)


def masked_mean(values: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean of ``values`` over entries where ``mask`` is True (all entries when mask is None).

    With no True entry (or no entry at all) the result is an exact 0 that is still connected to the graph (its
    gradient is zero), so ``backward()`` works on batches without a single valid element.
    """
    values = values.float()
    if values.numel() == 0:  # e.g. a batch of images without one prompt
        return values.sum()
    if mask is None:
        return values.mean()
    mask = mask.expand_as(values)
    total = torch.where(mask, values, torch.zeros_like(values)).sum()
    return total / mask.sum().clamp(min=1).to(total.dtype)


def class_logit_pair(
    student: torch.Tensor,
    teacher: torch.Tensor,
    targets: Optional[torch.Tensor],
    ignore_index: int = IGNORE_LABEL,
) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Check (B, K, H, W) class logits and bring them to the teacher's grid.

    Returns (student, teacher, labels, valid): student logits resized bilinearly to the
    teacher's H x W, labels (B, H, W) resized nearest (or None), valid (B, H, W) bool marking
    pixels whose label is not ``ignore_index`` (None when no targets were given).
    """
    check_feature_pair(student, teacher, what="class logits")
    if student.shape[1] != teacher.shape[1]:
        raise ValueError(
            f"student has {student.shape[1]} classes, teacher {teacher.shape[1]}: logit "
            f"distillation needs the same label space"
        )
    student = resize_to(student, teacher.shape[-2:])
    if targets is None:
        return student, teacher, None, None
    if targets.dim() != 3 or targets.shape[0] != teacher.shape[0]:
        raise ValueError(f"targets must be (B, H, W) integer labels, got {tuple(targets.shape)}")
    labels = resize_labels(targets.long(), teacher.shape[-2:])
    return student, teacher, labels, labels != ignore_index


def mask_logit_pair(
    student: torch.Tensor, teacher: torch.Tensor, valid: Optional[torch.Tensor]
) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Check binary mask logits (..., h, w), e.g. (B, Q, M, h, w) or (N, M, h, w).

    Returns (student, teacher, valid) with the student resized bilinearly to the teacher's
    h x w and ``valid`` (a bool tensor over the leading dims, e.g. (B, Q) marking real
    prompts) reshaped to broadcast against the logits, or None.
    """
    if student.dim() < 3 or teacher.dim() < 3:
        raise ValueError(
            f"mask logits must be (..., h, w) with at least one leading dim, got student "
            f"{tuple(student.shape)} and teacher {tuple(teacher.shape)}"
        )
    if student.shape[:-2] != teacher.shape[:-2]:
        raise ValueError(
            f"student mask logits {tuple(student.shape)} and teacher {tuple(teacher.shape)} "
            f"must agree on every dim but the last two (prompts and masks are matched 1:1)"
        )
    student = resize_to(student, teacher.shape[-2:])
    if valid is None:
        return student, teacher, None
    lead = teacher.shape[:-2]
    if valid.dtype != torch.bool or valid.dim() > len(lead) or valid.shape != lead[: valid.dim()]:
        raise ValueError(
            f"targets for mask logits must be a bool 'valid' tensor over the leading dims "
            f"{tuple(lead)} (e.g. (B, Q)), got {valid.dtype} {tuple(valid.shape)}"
        )
    valid = valid.reshape(*valid.shape, *([1] * (teacher.dim() - valid.dim())))
    return student, teacher, valid


def check_logit_form(form: str) -> str:
    """Validate a ``logit_form`` argument: "class" (softmax over dim 1) or "mask" (sigmoid)."""
    if form not in LOGIT_FORMS:
        raise ValueError(f"logit_form must be one of {LOGIT_FORMS}, got {form!r}")
    return form


def valid_on_grid(
    valid_mask: Optional[torch.Tensor], reference: torch.Tensor
) -> Optional[torch.Tensor]:
    """A bool valid mask (..., 1, h, w) brought to ``reference``'s last two dims (nearest), so it
    broadcasts against ``reference`` (..., C, H, W); None stays None.

    Padded cells (False) are where a zero-padded image shows no scene: the feature losses
    leave them out (see ``sard.structure.valid_region``).
    """
    if valid_mask is None:
        return None
    if valid_mask.dtype != torch.bool or valid_mask.dim() != reference.dim():
        raise ValueError(
            f"valid_mask must be a bool (..., 1, h, w) tensor with {reference.dim()} dims like "
            f"the map {tuple(reference.shape)}, got {valid_mask.dtype} {tuple(valid_mask.shape)}"
        )
    if valid_mask.shape[-3] != 1 or valid_mask.shape[:-3] != reference.shape[:-3]:
        raise ValueError(
            f"valid_mask {tuple(valid_mask.shape)} does not broadcast against the map "
            f"{tuple(reference.shape)}: it needs one channel and the same leading dims"
        )
    return (
        resize_labels(valid_mask.flatten(0, -3).to(torch.uint8), reference.shape[-2:])
        .view(*valid_mask.shape[:-2], *reference.shape[-2:])
        .bool()
        .to(reference.device)
    )


def uniform_weight(
    reference: torch.Tensor, valid_mask: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """W(i) = 1 / (H * W) for every position of ``reference`` (B, C, H, W): (B, 1, H, W); with
    ``valid_mask`` 1 / |valid| on valid positions and 0 on padded ones."""
    b, _, h, w = reference.shape
    valid = valid_on_grid(valid_mask, reference)
    if valid is None:
        return torch.full((b, 1, h, w), 1.0 / (h * w), device=reference.device, dtype=torch.float32)
    cells = valid.float()
    return cells / cells.sum(dim=(2, 3), keepdim=True).clamp(min=1.0)

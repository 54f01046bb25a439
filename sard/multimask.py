"""When a promptable model decodes SAM's 3 candidate masks instead of its single mask.

``MODEL.SARD.MULTIMASK_OUTPUT`` says how a student (and its teacher) was trained, and every
consumer of the model follows the same rule: training, evaluation, the predictor, the automatic
mask generator (segment everything, pseudo-labels). A model trained "never" has decoded only its
single-mask output (index 0): its multimask heads and their predicted IoUs never got a gradient,
so picking among them is picking among random masks.

    "always": 3 masks, the one with the highest predicted IoU kept
    "never":  the single mask
    "auto":   SAM's rule: 3 masks only when every prompt is one point (no box, no second point)
"""

from __future__ import annotations

import torch

from sard.prompt_labels import LABEL_BOX_BR, LABEL_BOX_TL, LABEL_PAD

MULTIMASK_MODES = ("always", "never", "auto")


def check_multimask_mode(mode: str) -> str:
    """``mode`` when it is one of ``MULTIMASK_MODES``, else a ValueError naming the key."""
    if mode not in MULTIMASK_MODES:
        raise ValueError(
            f"MODEL.SARD.MULTIMASK_OUTPUT must be one of {MULTIMASK_MODES}, got {mode!r}"
        )
    return mode


def use_multimask(mode: str, labels: torch.Tensor) -> bool:
    """Whether prompts with point labels ``labels`` (..., N), box corners encoded as labels
    ``LABEL_BOX_TL``/``LABEL_BOX_BR`` and padding as ``LABEL_PAD``, are decoded into 3 masks
    under ``mode`` (see the module docstring)."""
    if mode != "auto":
        return mode == "always"
    real = labels != LABEL_PAD
    box = ((labels == LABEL_BOX_TL) | (labels == LABEL_BOX_BR)).any(dim=-1)
    return bool(((real.sum(dim=-1) == 1) & ~box).all())

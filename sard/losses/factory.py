"""One way to build any distillation method, and the sum of a dict of loss terms.

Every module built here has a ``consumes`` attribute and the same call:

    forward(student, teacher, weight=None, targets=None) -> Dict[str, Tensor]

returning named, already weighted scalar terms (sum them with ``total_loss``).

| method   | consumes         | student / teacher inputs                      | terms            |
| -------- | ---------------- | --------------------------------------------- | ---------------- |
| sard     | features         | (B, Cs, Hs, Ws) / (B, Ct, Ht, Wt); W optional | loss_fc, loss_da |
| uniform  | features         | same, W = 1/(Ht·Wt)                           | loss_fc, loss_da |
| mgd      | features         | same                                          | loss_mgd         |
| cwd      | logits (default) | class (B, K, H, W) or mask (..., h, w) logits | loss_cwd         |
|          | or features      | (``on="features"``)                           |                  |
| kd, skd  | logits           | ``logit_form="class"``: (B, K, H, W), softmax | loss_kd,         |
|          |                  | ``"mask"``: (B, Q, M, h, w) / (N, M, h, w),   | loss_skd         |
|          |                  | sigmoid                                       |                  |
| dkd      | logits           | (B, K, H, W) class logits, targets required   | loss_dkd_tckd,   |
|          |                  |                                               | loss_dkd_nckd    |
| reviewkd | multi_features   | lists of (B, C_l, H_l, W_l), one per stage    | loss_reviewkd    |
| none     | none             | anything (ignored)                            | (empty dict)     |

``targets``: class form, a (B, H, W) label map (255 = ignore); mask form, a bool ``valid``
over the leading dims (e.g. (B, Q)).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Sequence, Union

import torch
import torch.nn as nn

from .cwd import ChannelWiseDistillationLoss
from .dkd import DKDLoss
from .logit_kd import LogitKDLoss, PixelwiseKDLoss
from .mgd import MGDLoss
from .review_kd import ReviewKDLoss
from .sard_head import SARDDistillationHead

Channels = Union[int, Sequence[int], None]


class NoDistillation(nn.Module):
    """The scratch baseline: no distillation term at all (``forward`` returns {})."""

    consumes = "none"

    def forward(
        self, student=None, teacher=None, weight=None, targets=None
    ) -> Dict[str, torch.Tensor]:
        return {}


def _need_int(value: Channels, name: str, method: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"method {method!r} needs {name} as a positive int, got {value!r}")
    return value


def _need_list(value: Channels, name: str, method: str) -> Sequence[int]:
    if isinstance(value, int) or not value:
        raise ValueError(f"method {method!r} needs {name} as a per-stage list, got {value!r}")
    return [int(c) for c in value]


def _sard(weighting: str) -> Callable[..., nn.Module]:
    def build(cs: Channels, ct: Channels, method: str, **hp: Any) -> nn.Module:
        if "weighting" in hp:
            raise ValueError(f"method {method!r} fixes weighting={weighting!r}; do not pass it")
        cs_, ct_ = _need_int(cs, "student_channels", method), _need_int(
            ct, "teacher_channels", method
        )
        return SARDDistillationHead(cs_, ct_, weighting=weighting, **hp)

    return build


def _cwd(cs: Channels, ct: Channels, method: str, **hp: Any) -> nn.Module:
    if hp.get("on", "logits") == "features":
        cs, ct = _need_int(cs, "student_channels", method), _need_int(
            ct, "teacher_channels", method
        )
        return ChannelWiseDistillationLoss(student_channels=cs, teacher_channels=ct, **hp)
    return ChannelWiseDistillationLoss(**hp)


def _mgd(cs: Channels, ct: Channels, method: str, **hp: Any) -> nn.Module:
    cs_, ct_ = _need_int(cs, "student_channels", method), _need_int(ct, "teacher_channels", method)
    return MGDLoss(cs_, ct_, **hp)


def _reviewkd(cs: Channels, ct: Channels, method: str, **hp: Any) -> nn.Module:
    cs_, ct_ = _need_list(cs, "student_channels", method), _need_list(
        ct, "teacher_channels", method
    )
    return ReviewKDLoss(cs_, ct_, **hp)


def _logits(cls: type) -> Callable[..., nn.Module]:
    def build(cs: Channels, ct: Channels, method: str, **hp: Any) -> nn.Module:
        return cls(**hp)

    return build


_BUILDERS: Dict[str, Callable[..., nn.Module]] = {
    "sard": _sard("structure"),
    "uniform": _sard("uniform"),
    "cwd": _cwd,
    "mgd": _mgd,
    "kd": _logits(LogitKDLoss),
    "skd": _logits(PixelwiseKDLoss),
    "dkd": _logits(DKDLoss),
    "reviewkd": _reviewkd,
    "none": _logits(NoDistillation),
}
DISTILLATION_METHODS = tuple(_BUILDERS)


def build_distillation_loss(
    method: str,
    *,
    student_channels: Channels = None,
    teacher_channels: Channels = None,
    **hparams: Any,
) -> nn.Module:
    """Build the distillation loss ``method`` (see the module table) with ``hparams``.

    Channels: ints for "sard", "uniform", "mgd" and "cwd" with ``on="features"``; per-stage
    lists for "reviewkd"; unused by the logit methods and "none". ``hparams`` are the keyword
    arguments of the method's class (e.g. ``lambda_f``, ``alpha``, ``beta_e`` for sard; ``tau``,
    ``weight``, ``logit_form`` for kd). Raises ValueError for an unknown method or a missing
    channel count, TypeError (naming the method) for an unknown hyper-parameter.
    """
    if method not in _BUILDERS:
        raise ValueError(f"unknown distillation method {method!r}; known: {', '.join(_BUILDERS)}")
    try:
        return _BUILDERS[method](student_channels, teacher_channels, method, **hparams)
    except TypeError as err:
        raise TypeError(f"bad hyper-parameters for distillation method {method!r}: {err}") from err


def total_loss(terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Σ of a dict of already weighted scalar loss terms (e.g. distillation + task terms).

    Raises ValueError on an empty dict (nothing to optimise) or a non-scalar term.
    """
    if not terms:
        raise ValueError("total_loss got no loss terms")
    for name, value in terms.items():
        if not isinstance(value, torch.Tensor) or value.dim() != 0:
            raise ValueError(f"loss term {name!r} must be a scalar tensor, got {value!r}")
    return torch.stack([v.float() for v in terms.values()]).sum()

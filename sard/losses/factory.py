"""One way to build any distillation method, and the sum of a dict of loss terms.

Every module built here has a ``consumes`` attribute and the same call (``DistillationLoss``,
``sard.losses.base``; ReviewKD takes lists of stages):

    forward(student, teacher, weight=None, targets=None, valid_mask=None) -> Dict[str, Tensor]

returning named, already weighted scalar terms (sum them with ``total_loss``); ``valid_mask``
only for modules with ``handles_padding``.

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

Methods are registered by their own files (``sard.losses.registry``); "none" (the student
alone) has no loss module: the distiller then has no head.

``targets``: class form, a (B, H, W) label map (255 = ignore); mask form, a bool ``valid``
over the leading dims (e.g. (B, Q)).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence, Union

import torch
import torch.nn as nn

from .registry import get_method

Channels = Union[int, Sequence[int], None]


def build_distillation_loss(
    method: str,
    *,
    student_channels: Channels = None,
    teacher_channels: Channels = None,
    **hparams: Any,
) -> nn.Module:
    """Build the registered distillation loss ``method`` with explicit ``hparams``.

    Channels: ints for "sard", "uniform", "mgd" and "cwd" with ``on="features"``; per-stage
    lists for "reviewkd"; unused by the logit methods. ``hparams`` are the keyword arguments of
    the method's class (e.g. ``lambda_f``, ``alpha``, ``beta_e`` for sard; ``tau``, ``weight``,
    ``logit_form`` for kd). From a config, use ``get_method(name).from_config`` instead. Raises
    KeyError for an unknown method, ValueError for a missing channel count, TypeError (naming
    the method) for an unknown hyper-parameter.
    """
    spec = get_method(method)
    try:
        return spec.build(student_channels, teacher_channels, **hparams)
    except TypeError as err:
        raise TypeError(f"bad hyper-parameters for distillation method {method!r}: {err}") from err
    except ValueError as err:
        raise ValueError(f"distillation method {method!r}: {err}") from err


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

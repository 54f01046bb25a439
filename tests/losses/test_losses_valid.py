"""Padded cells are no part of the scene: SARD, uniform, CWD and MGD leave them out."""

from __future__ import annotations

import pytest
import torch

from sard.losses import build_distillation_loss
from sard.structure import valid_cells

# Landscape images (padded at the bottom) and portrait ones (padded at the right), 8 x 8 grid.
LANDSCAPE = valid_cells([(40, 64), (64, 64)], (64, 64), (8, 8))  # 5 valid rows; a full image
PORTRAIT = valid_cells([(64, 24), (64, 48)], (64, 64), (8, 8))  # 3 and 6 valid columns


def _pair(seed: int, cs: int = 6, ct: int = 8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, cs, 8, 8, generator=g), torch.randn(2, ct, 8, 8, generator=g)


def _scramble_padding(x: torch.Tensor, valid: torch.Tensor, seed: int) -> torch.Tensor:
    garbage = 30.0 * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    return torch.where(valid, x, garbage)


def _loss(head, student, teacher, valid, seed=5, **kw):
    torch.manual_seed(seed)  # L_DA's noise and MGD's mask come from the global RNG
    return sum(head(student, teacher, valid_mask=valid, **kw).values())


@pytest.mark.parametrize("valid", [LANDSCAPE, PORTRAIT], ids=["landscape", "portrait"])
@pytest.mark.parametrize(
    "method,hp",
    [
        ("sard", dict(dim=8, radius=2)),
        ("uniform", dict(dim=8)),
        ("mgd", {}),
        ("cwd", dict(on="features")),
    ],
)
def test_padded_cells_change_neither_loss_nor_gradient(method, hp, valid):
    torch.manual_seed(0)
    head = build_distillation_loss(method, student_channels=6, teacher_channels=8, **hp)
    student, teacher = _pair(1)
    student.requires_grad_(True)
    loss = _loss(head, student, teacher, valid)
    loss.backward()
    # Nothing reaches the student's padded cells...
    pad = (~valid).expand_as(student)
    assert student.grad[pad].abs().max() == 0 and student.grad[~pad].abs().max() > 0
    # ... and whatever the padding holds, on either side, the loss is the same.
    moved = _loss(
        head, _scramble_padding(student, valid, 2), _scramble_padding(teacher, valid, 3), valid
    )
    torch.testing.assert_close(moved, loss.detach(), rtol=1e-5, atol=1e-6)
    # Without the mask the padding does matter (what the mask is for).
    blind = _loss(head, student.detach(), teacher, None)
    blind_moved = _loss(
        head,
        _scramble_padding(student.detach(), valid, 2),
        _scramble_padding(teacher, valid, 3),
        None,
    )
    assert not torch.allclose(blind, blind_moved, rtol=1e-3)


def test_weights_sum_to_one_on_valid_cells_and_cwd_equals_the_cropped_maps():
    head = build_distillation_loss("uniform", student_channels=6, teacher_channels=8, dim=8)
    student, teacher = _pair(4)
    w = head.weight_map(teacher, LANDSCAPE)
    torch.testing.assert_close(w.sum(dim=(1, 2, 3)), torch.ones(2))
    assert w[0, 0, 5:].abs().max() == 0 and w[0, 0, 0, 0] == pytest.approx(1 / 40)
    sard = build_distillation_loss("sard", student_channels=6, teacher_channels=8, dim=8)
    ws = sard.weight_map(teacher, PORTRAIT)
    assert ws[0, 0, :, 3:].abs().max() == 0 and ws[0].sum().item() == pytest.approx(1.0)
    # A W that puts mass on padded cells is refused when a valid mask says otherwise.
    with pytest.raises(ValueError, match="not 0 on the padded cells"):
        sard(student, teacher, weight=torch.full((2, 1, 8, 8), 1 / 64), valid_mask=PORTRAIT)
    # CWD's spatial softmax over the valid cells only = CWD on the valid crop.
    cwd = build_distillation_loss("cwd", on="features", student_channels=8, teacher_channels=8)
    s8 = torch.randn(2, 8, 8, 8)
    both = cwd(s8, teacher, valid_mask=PORTRAIT)["loss_cwd"]
    crops = [cwd(s8[i : i + 1, :, :, :c], teacher[i : i + 1, :, :, :c])["loss_cwd"] for i, c in
             enumerate((3, 6))]  # fmt: skip
    torch.testing.assert_close(both, torch.stack(crops).mean())


def test_cwd_on_mask_logits_takes_a_mask_per_prompt():
    cwd = build_distillation_loss("cwd", logit_form="mask")
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(3, 2, 16, 16, generator=g), torch.randn(3, 2, 16, 16, generator=g)
    valid = valid_cells([(16, 10), (16, 10), (8, 16)], (16, 16), (16, 16))
    got = cwd(s, t, valid_mask=valid)["loss_cwd"]
    moved = cwd(_scramble_padding(s, valid, 1), _scramble_padding(t, valid, 2), valid_mask=valid)
    torch.testing.assert_close(got, moved["loss_cwd"])
    with pytest.raises(ValueError, match="does not broadcast"):
        cwd(s, t, valid_mask=valid[:2])

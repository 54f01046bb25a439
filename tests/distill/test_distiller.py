"""Distiller details: what the models see (padding) and where predictions land (cropping)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from sard.losses import build_distillation_loss
from sard.losses.prompt_mask import PromptMaskLoss
from sard.models import build_model
from sard.models.frozen import FrozenTeacher
from sard.distill import SARDDistiller
from sard.models.base import encode
from sard.structure import valid_cells


def test_sam_family_sees_zero_padding_after_normalisation():
    sam = build_model("sam", size="tiny", image_size=64).eval()
    image = torch.rand(1, 3, 64, 64) * 255
    image[..., 32:, :] = 0  # the mapper's padding of a 2:1 image (0 in 0-255 units)
    with torch.no_grad():
        ours = encode(sam, image, [(32, 64)])["image_embedding"]
        # Official SAM: normalise the unpadded image, then pad with zeros.
        official = sam.image_encoder(sam.preprocess(image[..., :32, :]))
        naive = sam.extract_features(image)["image_embedding"]
    torch.testing.assert_close(ours, official)
    assert not torch.allclose(naive, official, atol=1e-3)
    # A model that stretches (EfficientSAM) has no padding and is called unchanged.
    esam = build_model("efficient_sam", size="tiny", image_size=64).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            encode(esam, image, [(64, 64)])["image_embedding"],
            esam.extract_features(image)["image_embedding"],
        )


class LeftHalfStudent(nn.Module):
    """Semantic stub: class 1 on the left half of the valid region, class 0 elsewhere."""

    def __init__(self, valid_w: int) -> None:
        super().__init__()
        self.valid_w = valid_w
        self.anchor = nn.Parameter(torch.zeros(()))

    def semantic_inference(self, images, output_size=None):
        b, _, h, w = images.shape
        scores = torch.zeros(b, 2, h, w)
        scores[:, 0] = 1.0
        scores[:, 1, :, : self.valid_w // 2] = 2.0
        return scores


def test_semantic_predictions_drop_the_canvas_padding():
    # A 16 x 64 image laid on a 64 x 64 canvas (fit_pad): valid region (16, 64).
    student = LeftHalfStudent(valid_w=64)
    distiller = SARDDistiller(
        teacher=None,
        student=student,
        distill_loss=None,
        task_loss=None,
        method="none",
        teacher_tap="t",
        student_tap="s",
    ).eval()
    x = {"image": torch.zeros(3, 64, 64), "input_hw": (16, 64), "height": 8, "width": 32}
    (out,) = distiller([x])
    pred = out["sem_seg"].argmax(0)
    assert pred.shape == (8, 32)
    assert (pred[:, :16] == 1).all() and (pred[:, 16:] == 0).all()


def _padded_batch():
    """A landscape (32 x 64) and a portrait (64 x 24) image padded onto 64 x 64 (longest_pad)."""
    g = torch.Generator().manual_seed(0)
    batch = []
    for hw in ((32, 64), (64, 24)):
        image = torch.zeros(3, 64, 64)
        image[:, : hw[0], : hw[1]] = torch.rand(3, *hw, generator=g) * 255
        gt = torch.zeros(2, 64, 64, dtype=torch.bool)
        gt[0, 4:12, 4:12] = gt[1, 14:20, 2:9] = True
        boxes = torch.tensor([[4.0, 4, 11, 11], [2, 14, 8, 19]])
        batch.append(
            {
                "image": image,
                "input_hw": hw,
                "gt_masks": gt,
                "points": boxes.view(2, 2, 2),
                "point_labels": torch.tensor([[2, 3], [2, 3]]),
            }
        )
    return batch


class _Recorder(nn.Module):
    """Wraps a distillation head and keeps the valid_mask (and W) it was called with."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head
        self.consumes, self.handles_padding = head.consumes, True
        # The distiller asks the head for W (SARD's structure map), cached with the taps.
        self.structure_settings = getattr(head, "structure_settings", None)
        self.weight_map = getattr(head, "weight_map", None)
        self.seen = {}

    def forward(self, student, teacher, weight=None, targets=None, valid_mask=None):
        self.seen.update(valid_mask=valid_mask, weight=weight, teacher=teacher)
        return self.head(student, teacher, weight=weight, valid_mask=valid_mask)


@pytest.mark.parametrize("method", ["sard", "mgd", "cwd"])
def test_padded_images_give_their_valid_cells_to_w_and_the_losses(method):
    torch.manual_seed(0)
    teacher = FrozenTeacher(build_model("sam", size="tiny", image_size=64))
    student = build_model("sam", size="tiny", image_size=64)
    hp = (
        dict(dim=16, radius=2)
        if method == "sard"
        else dict(logit_form="mask") if method == "cwd" else {}
    )
    head = build_distillation_loss(method, student_channels=256, teacher_channels=256, **hp)
    recorder = _Recorder(head)
    distiller = SARDDistiller(
        teacher=teacher,
        student=student,
        distill_loss=recorder,
        task_loss=PromptMaskLoss(),
        method=method,
        teacher_tap="image_embedding",
        student_tap="image_embedding",
    ).train()
    losses = distiller(_padded_batch())
    assert all(torch.isfinite(v) for v in losses.values())
    valid = recorder.seen["valid_mask"]
    if method == "cwd":  # on the mask logits: one mask per prompt, at input resolution
        assert valid.shape == (4, 1, 64, 64)
        assert valid[:2, 0].any(dim=2).sum(dim=1).tolist() == [32, 32]  # landscape prompts
        assert valid[2:, 0].any(dim=1).sum(dim=1).tolist() == [24, 24]  # portrait prompts
        return
    # Grid 64 / 16 = 4 x 4: the landscape image covers 2 rows, the portrait one 1.5 columns
    # (only cells more than half covered count: 1).
    expected = valid_cells([(32, 64), (64, 24)], (64, 64), (4, 4))
    assert torch.equal(valid, expected)
    assert valid[0, 0].sum() == 8 and valid[1, 0].sum() == 4
    if method == "sard":
        w = recorder.seen["weight"]
        assert w[~valid.expand_as(w)].abs().max() == 0
        torch.testing.assert_close(w.sum(dim=(1, 2, 3)), torch.ones(2))


@pytest.mark.parametrize("weighting", ["sard", "uniform"])
def test_the_distiller_takes_w_from_the_head_in_float32_under_autocast(weighting):
    """One W: the cached one is the head's ``weight_map`` (autocast off, float32), with the
    head's own settings; uniform weighting caches none (the head makes it in forward)."""
    torch.manual_seed(0)
    teacher = FrozenTeacher(build_model("sam", size="tiny", image_size=64))
    head = build_distillation_loss(
        weighting, student_channels=256, teacher_channels=256, dim=16, radius=2
    )
    distiller = SARDDistiller(
        teacher=teacher,
        student=build_model("sam", size="tiny", image_size=64),
        distill_loss=head,
        task_loss=PromptMaskLoss(),
        method=weighting,
        teacher_tap="image_embedding",
        student_tap="image_embedding",
    )
    images = torch.rand(2, 3, 64, 64) * 255
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = distiller._run_teacher(images, [(32, 64), (64, 64)])
    if weighting == "uniform":
        assert "structure_weight" not in out
        return
    w = out["structure_weight"]
    assert w.dtype == torch.float32
    valid = valid_cells([(32, 64), (64, 64)], (64, 64), (4, 4))
    expected = head.weight_map(out["image_embedding"].float(), valid)  # outside autocast
    torch.testing.assert_close(w, expected)


@pytest.mark.parametrize("mode", ["always", "never", "auto"])
def test_multimask_modes_follow_sams_rule_for_boxes_and_points(mode):
    torch.manual_seed(0)
    student = build_model("sam", size="tiny", image_size=64)
    teacher = FrozenTeacher(build_model("sam", size="tiny", image_size=64))
    seen = []
    original = student.predict_masks

    def spy(features, prompts, multimask=True):
        seen.append(multimask)
        return original(features, prompts, multimask=multimask)

    student.predict_masks = spy
    distiller = SARDDistiller(
        teacher=teacher,
        student=student,
        distill_loss=build_distillation_loss("kd", logit_form="mask"),
        task_loss=PromptMaskLoss(),
        method="kd",
        teacher_tap="image_embedding",
        student_tap="image_embedding",
        multimask=mode,
    )
    boxes = _padded_batch()  # box prompts
    points = [dict(x, points=x["points"][:, :1], point_labels=torch.ones(2, 1)) for x in boxes]
    losses = distiller.train()(boxes)
    assert all(torch.isfinite(v) for v in losses.values())
    distiller.train()(points)
    (out,) = distiller.eval()([dict(boxes[0], height=64, width=64)])
    assert out["pred_masks"].shape == (2, 64, 64)
    boxes_mm, points_mm, infer_mm = seen
    assert boxes_mm == infer_mm == (mode == "always")  # SAM: one mask for a box
    assert points_mm == (mode != "never")  # a lone point is ambiguous: 3 masks
    with pytest.raises(ValueError, match="MODEL.SARD.MULTIMASK_OUTPUT must be one of"):
        SARDDistiller(
            teacher=None, student=student, distill_loss=None, task_loss=None, method="none",
            teacher_tap="t", student_tap="s", multimask="sometimes",
        )  # fmt: skip

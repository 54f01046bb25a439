"""Distiller details: what the models see (padding) and where predictions land (cropping)."""

from __future__ import annotations

import torch
import torch.nn as nn

from sard.models import build_model
from sard.modeling import SARDDistiller
from sard.modeling.distiller import encode


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

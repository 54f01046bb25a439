"""Tiny random SAM / EfficientSAM models whose automatic masks are small and scattered.

With random weights every point prompt gives a mask over most of the image, so box NMS keeps
one mask and nothing else is tested. Two edits make masks sparse: output channel 0 of the last
upscaling layer is a constant 10 (its bias) and every mask hypernetwork weighs it by a fixed
``-offset / 10``, which lowers all logits by ``offset`` (about one standard deviation), so only
their peaks stay positive. The IoU head is shifted by +0.5 so that predicted IoUs straddle a
threshold in (0, 1), as a trained model's do (SAM skips its IoU filter at thresholds <= 0).
"""

from __future__ import annotations

import warnings

import torch

from sard.models import build_model


def sparse_mask_model(family: str, image_size: int, offset: float, seed: int = 0, **arch):
    """A ``family`` ("sam" or "efficient_sam") tiny model at ``image_size``, in eval mode;
    ``arch`` overrides its builder's architecture (e.g. patch_size, decoder_dim)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        model = build_model(family, size="tiny", image_size=image_size, **arch).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 2e-2)
        if family == "sam":
            dec = model.mask_decoder
            dec.output_upscaling[3].bias[0] = 10.0
            last_layers = [mlp.layers[-1] for mlp in dec.output_hypernetworks_mlps]
            iou_last = dec.iou_prediction_head.layers[-1]
        else:
            dec = model.mask_decoder
            dec.final_output_upscaling_layers[-1][0].bias[0] = 10.0
            last_layers = [mlp.fc for mlp in dec.output_hypernetworks_mlps]
            iou_last = dec.iou_prediction_head.fc
        for layer in last_layers:
            layer.weight[0] = 0.0
            layer.bias[0] = -offset / 10.0
        iou_last.bias.add_(0.5)
    return model

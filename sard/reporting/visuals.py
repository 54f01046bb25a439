"""Inputs and outputs for a study's pictures: a mapped test image, a model's masks on it, and the
teacher's structure map W(i) on it."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
from fvcore.common.config import CfgNode


def test_sample(cfg: CfgNode, dataset_name: str, index: int = 0) -> Tuple[Dict, Dict]:
    """(mapped sample, dataset record) of test image ``index`` of ``dataset_name``, prepared by
    the evaluation mapper of ``cfg`` (every instance prompted, in a fixed order)."""
    from sard.engine.builders import build_mapper, dataset_records

    records = dataset_records([dataset_name])
    if not 0 <= index < len(records):
        raise IndexError(f"image index {index} out of range: {dataset_name} has {len(records)}")
    return build_mapper(cfg, is_train=False)(records[index]), records[index]


def limit_prompts(sample: Dict, count: int) -> Dict:
    """A shallow copy of ``sample`` keeping its first ``count`` prompts (0 = all)."""
    if count <= 0:
        return sample
    out = dict(sample)
    for key in ("points", "point_labels", "boxes", "gt_masks", "gt_masks_orig"):
        if key in out:
            out[key] = out[key][:count]
    return out


@torch.no_grad()
def predicted_masks(model: nn.Module, sample: Dict) -> np.ndarray:
    """(Q, H, W) bool masks a distiller's student predicts for the sample's prompts."""
    was_training = model.training
    model.eval()
    try:
        masks = model([sample])[0]["pred_masks"]
    finally:
        model.train(was_training)
    return masks.cpu().numpy().astype(bool)


@torch.no_grad()
def structure_map_of(model: nn.Module, sample: Dict, cfg: CfgNode, tap: Optional[str] = None):
    """``compute_structure_map`` of a promptable model's tap (default MODEL.STUDENT.TAP, the
    tap the model was trained as) on the sample's image, with the config's betas, r and sigma."""
    from sard.config.sard_config import structure_map_kwargs
    from sard.structure import compute_structure_map

    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        image = sample["image"].to(device, torch.float32)[None]
        features = model.extract_features(image)[tap or cfg.MODEL.STUDENT.TAP]
    finally:
        model.train(was_training)
    return compute_structure_map(features.float(), **structure_map_kwargs(cfg.MODEL.SARD))


def model_input_image(sample: Dict) -> np.ndarray:
    """The mapped model input as uint8 (S, S, 3), padding included: the exact region the
    feature grid covers, so a structure map stretched over it stays registered."""
    image = sample["image"].permute(1, 2, 0).cpu().numpy()
    return np.clip(image, 0, 255).astype(np.uint8)

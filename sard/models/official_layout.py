"""Random weights written in the layout of each family's official release.

For smoke runs of the paper configs without the real checkpoints (the CI test of every
top-level config, ``tools/gpu_check.py``): the files go through exactly the loading path that
real checkpoints take (key names, containers, position tables resized to the input size).

| family | official file | layout written here |
|---|---|---|
| ``sam`` | ``sam_vit_h_4b8939.pth`` | plain state dict, model built at 1024 px |
| ``efficient_sam`` | ``efficient_sam_vitt.pt`` | ``{"model": state dict}`` |
| ``mask2former`` | a transformers ``save_pretrained`` folder | that folder |
| ``vit_semantic`` | a timm ``vit_*_patch16_224`` state dict | the backbone's state dict at 224 px |
"""

from __future__ import annotations

import os

import torch

from .base import is_promptable_family
from .registry import build_model

# The input size each release was trained at: position tables are saved for it.
OFFICIAL_IMAGE_SIZE = {"sam": 1024, "efficient_sam": 1024, "mask2former": 384, "vit_semantic": 224}


def save_random_official_weights(
    family: str, size: str, path: str, *, num_classes: int = 1, seed: int = 0
) -> str:
    """Build ``family``/``size`` with random weights (seeded) and write them to ``path`` in the
    official layout (a folder for Mask2Former). Returns ``path``."""
    if family not in OFFICIAL_IMAGE_SIZE:
        raise KeyError(f"no official layout known for family {family!r}")
    torch.manual_seed(seed)
    image_size = OFFICIAL_IMAGE_SIZE[family]
    kwargs = {} if is_promptable_family(family) else {"num_classes": num_classes}
    if family == "mask2former":
        image_size = (image_size, image_size)
    model = build_model(family, size=size, image_size=image_size, weights=None, **kwargs)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    if family == "mask2former":
        model.save_pretrained(path)
    elif family == "efficient_sam":
        torch.save({"model": model.state_dict()}, path)
    elif family == "vit_semantic":
        torch.save(model.backbone.state_dict(), path)
    else:
        torch.save(model.state_dict(), path)
    return path

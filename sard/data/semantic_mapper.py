"""Dataset dict -> semantic-segmentation sample (for the Mask2Former / semantic pairs).

Output of ``SemanticDatasetMapper.__call__`` with ``image_size = (h, w)``::

    image          float32 (3, h, w), 0-255 RGB
    sem_seg        int64 (h, w), class ids, ``ignore_label`` (255) outside the image
    input_hw       (h', w') valid region before padding
    image_id, file_name, height, width   (original size)
    sem_seg_orig   int64 (H, W), evaluation only

Labels come from ``sem_seg_file_name`` (Cityscapes / ADE20K) or are rendered from the
instance ``annotations`` when the dict carries ``sem_seg_from_instances`` (RockFrag view).
Geometry: "fit_pad" scales by min(h / H, w / W) and pads bottom/right, "stretch" resizes to
(h, w). Training adds a random scale in ``scale_jitter``, flips with p = 0.5 and a random crop
when the scaled image exceeds (h, w).
"""

from __future__ import annotations

import copy
import os
from typing import Any, Dict, Tuple

import numpy as np
import torch

from .mapper import load_image_checked, training_rng
from .semantic import IGNORE_LABEL, instances_to_semantic, read_sem_seg
from .transforms import make_plan

SEMANTIC_RESIZE_MODES = ("fit_pad", "stretch")


def semantic_labels(dataset_dict: Dict[str, Any], height: int, width: int) -> np.ndarray:
    """The (H, W) int64 label map of a semantic dict (file or rendered from instances)."""
    if "sem_seg_file_name" in dataset_dict:
        return read_sem_seg(dataset_dict["sem_seg_file_name"], height, width)
    spec = dataset_dict.get("sem_seg_from_instances")
    if spec is None:
        raise KeyError(
            f"{dataset_dict.get('file_name')}: dict has neither 'sem_seg_file_name' nor "
            "'sem_seg_from_instances'; register it with a semantic loader"
        )
    return instances_to_semantic(
        dataset_dict.get("annotations", []),
        height,
        width,
        boundary_width=int(spec.get("boundary_width", 0)),
        num_thing_classes=int(spec.get("num_thing_classes", 1)),
    )


class SemanticDatasetMapper:
    """Map a semantic dataset dict to (image, sem_seg) at a fixed input size."""

    def __init__(
        self,
        *,
        is_train: bool,
        image_size: Tuple[int, int],
        resize_mode: str = "fit_pad",
        scale_jitter: Tuple[float, float] = (1.0, 1.0),
        hflip: bool = True,
        vflip: bool = False,
        ignore_label: int = IGNORE_LABEL,
    ) -> None:
        if resize_mode not in SEMANTIC_RESIZE_MODES:
            raise ValueError(
                f"resize_mode must be one of {SEMANTIC_RESIZE_MODES}, got {resize_mode!r}"
            )
        if len(image_size) != 2 or min(image_size) <= 0:
            raise ValueError(f"image_size must be a positive (h, w), got {image_size}")
        lo, hi = scale_jitter
        if not 0 < lo <= hi:
            raise ValueError(f"scale_jitter must satisfy 0 < low <= high, got {scale_jitter}")
        self.is_train = is_train
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.resize_mode = resize_mode
        self.scale_jitter = (float(lo), float(hi))
        self.hflip, self.vflip = bool(hflip), bool(vflip)
        self.ignore_label = int(ignore_label)

    def _plan(self, src_hw, rng: np.random.Generator | None):
        if rng is None:
            return make_plan(src_hw, self.image_size, self.resize_mode)
        lo, hi = self.scale_jitter
        return make_plan(
            src_hw,
            self.image_size,
            self.resize_mode,
            scale=float(rng.uniform(lo, hi)) if hi > lo else lo,
            hflip=self.hflip and bool(rng.random() < 0.5),
            vflip=self.vflip and bool(rng.random() < 0.5),
            rng=rng,
        )

    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        """See the module docstring for the returned keys."""
        d = copy.copy(dataset_dict)
        image = load_image_checked(d)
        hw = image.shape[:2]
        labels = semantic_labels(d, *hw)
        plan = self._plan(hw, training_rng() if self.is_train else None)
        out = {
            "image": torch.from_numpy(plan.apply_image(image)).permute(2, 0, 1).float(),
            "sem_seg": torch.from_numpy(plan.apply_labels(labels, self.ignore_label)),
            "input_hw": plan.input_hw,
            "image_id": d.get("image_id", os.path.splitext(os.path.basename(d["file_name"]))[0]),
            "file_name": d["file_name"],
            "height": hw[0],
            "width": hw[1],
        }
        if not self.is_train:
            out["sem_seg_orig"] = torch.from_numpy(labels)
        return out

"""SAM's ``ResizeLongestSide`` interface on top of the data mapper's geometry.

``predictor.transform.apply_coords(coords, original_size)`` and friends behave like
segment_anything's, so code that prepares prompts for ``SamPredictor.predict_torch`` runs
unchanged, but the mapping is the one the student was trained with
(``sard.data.transforms.make_plan``): pixel-index coordinates,
``x' = (x + 0.5) * w' / W - 0.5`` (SAM itself uses ``x' = x * w' / W``; the two differ by
``0.5 * (w'/W - 1)`` pixels), resize by cv2 as in training, and the ``stretch`` mode of
EfficientSAM as well as SAM's ``longest_pad``.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

from sard.data.transforms import GeometryPlan, make_plan

RESIZE_MODES = ("longest_pad", "stretch")


class ResizeTransform:
    """Original image <-> model input frame for a square model input of side ``target_length``."""

    def __init__(self, target_length: int, resize_mode: str) -> None:
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
        self.target_length = int(target_length)
        self.resize_mode = resize_mode

    def plan(self, original_size: Tuple[int, int]) -> GeometryPlan:
        """The mapper's evaluation plan (no flip, no crop) for an image of ``original_size``."""
        side = self.target_length
        return make_plan(tuple(int(v) for v in original_size), (side, side), self.resize_mode)

    def get_preprocess_shape(self, old_h: int, old_w: int) -> Tuple[int, int]:
        """(h', w'): the resized size before padding (``input_size`` of the predictor)."""
        return self.plan((old_h, old_w)).input_hw

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (h', w', 3) uint8 resized, not padded (as SAM's transform)."""
        plan = self.plan(image.shape[:2])
        h, w = plan.input_hw
        return plan.apply_image(image)[:h, :w]

    def apply_coords(self, coords: np.ndarray, original_size: Tuple[int, int]) -> np.ndarray:
        """(..., 2) xy in original pixels -> model-input pixels (float)."""
        return self.plan(original_size).apply_points(np.asarray(coords, dtype=np.float64))

    def apply_boxes(self, boxes: np.ndarray, original_size: Tuple[int, int]) -> np.ndarray:
        """(..., 4) xyxy in original pixels -> model-input pixels, corner by corner."""
        boxes = np.asarray(boxes, dtype=np.float64)
        corners = self.apply_coords(boxes.reshape(-1, 2, 2), original_size)
        return corners.reshape(boxes.shape)

    def apply_coords_torch(
        self, coords: torch.Tensor, original_size: Tuple[int, int]
    ) -> torch.Tensor:
        """Tensor version of ``apply_coords`` (same device; float32 for integer input)."""
        out = self.apply_coords(coords.detach().cpu().double().numpy(), original_size)
        return torch.as_tensor(out, dtype=_float_dtype(coords), device=coords.device)

    def apply_boxes_torch(
        self, boxes: torch.Tensor, original_size: Tuple[int, int]
    ) -> torch.Tensor:
        """Tensor version of ``apply_boxes`` (same device; float32 for integer input)."""
        out = self.apply_boxes(boxes.detach().cpu().double().numpy(), original_size)
        return torch.as_tensor(out, dtype=_float_dtype(boxes), device=boxes.device)


def _float_dtype(x: torch.Tensor) -> torch.dtype:
    """Integer pixel coordinates become float32 after mapping (sub-pixel positions)."""
    return x.dtype if x.is_floating_point() else torch.float32

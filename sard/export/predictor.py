"""``SardPredictor``: segment_anything's ``SamPredictor`` interface for a distilled student.

Code written for SAM runs unchanged::

    predictor = SardPredictor.from_config("configs/...yaml", "output/model_final.pth")
    predictor.set_image(image)                      # (H, W, 3) uint8 RGB
    masks, scores, low_res = predictor.predict(point_coords=xy, point_labels=lab)
    boxes = predictor.transform.apply_boxes_torch(boxes_xyxy, image.shape[:2])
    masks, scores, low_res = predictor.predict_torch(None, None, boxes=boxes)

One difference by design: ``multimask_output`` defaults to None, "as the student was trained"
(``from_config`` reads MODEL.SARD.MULTIMASK_OUTPUT), so a student trained on SAM's single mask
returns (1, H, W) where SAM returns 3 masks; pass True / False to choose, as with SAM.

Coordinates of ``predict`` are original-image pixels; ``predict_torch`` takes model-input pixels
(from ``predictor.transform``), as in SAM. The image and prompts go through the training data
mapper's geometry (``sard.data.transforms``), so the student sees at inference what it saw in
training; its outputs equal ``student.predict_masks`` on the mapper's sample. ``predict_torch``
decodes prompts in chunks of ``chunk_size`` (the image embedding is copied once per prompt in
the decoder), so hundreds of boxes per image fit in memory.
"""

from __future__ import annotations

import inspect
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from sard.models.base import PROMPTABLE_FAMILIES, Prompts, encode
from sard.multimask import check_multimask_mode, use_multimask
from sard.prompt_labels import LABEL_BOX_BR, LABEL_BOX_TL, LABEL_PAD

from .checks import check_image, check_inside, check_labels, check_points
from .transform import ResizeTransform

DEFAULT_CHUNK = 64


class SardPredictor:
    """SamPredictor-compatible wrapper around a promptable sard student (SAM or EfficientSAM).

    Attributes as SamPredictor: ``model``, ``transform``, ``is_image_set``, ``features``,
    ``original_size`` (H, W), ``input_size`` (h', w') before padding, ``device``,
    ``mask_threshold`` (0.0). ``multimask``: how the model was trained (MODEL.SARD.
    MULTIMASK_OUTPUT, see ``sard.multimask``); ``multimask_output=None`` (the default of
    ``predict`` and ``predict_torch``) decodes as it was trained, True / False as SAM does.
    """

    mask_threshold = 0.0

    def __init__(
        self,
        model: nn.Module,
        *,
        resize_mode: Optional[str] = None,
        chunk_size: int = DEFAULT_CHUNK,
        multimask: str = "always",
    ) -> None:
        family = getattr(model, "family", None)
        if family not in PROMPTABLE_FAMILIES:
            raise TypeError(
                f"SardPredictor needs a promptable student ({', '.join(PROMPTABLE_FAMILIES)}), "
                f"got {type(model).__name__} (family {family!r}); semantic students have no prompts"
            )
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.model = model.eval()
        self.resize_mode = resize_mode or model.resize_mode
        self.transform = ResizeTransform(model.image_size, self.resize_mode)
        self.chunk_size = int(chunk_size)
        self.multimask = check_multimask_mode(multimask)
        self.accepts_mask_input = "mask_inputs" in inspect.signature(model.predict_masks).parameters
        self.max_points = getattr(model, "decoder_max_num_input_points", None)
        self.reset_image()

    @classmethod
    def from_config(
        cls,
        config_file: str,
        weights: Optional[str] = None,
        opts: Sequence[str] = (),
        *,
        device: Optional[str] = None,
        chunk_size: int = DEFAULT_CHUNK,
    ) -> "SardPredictor":
        """Build the student of a SARD config and load ``weights`` (a training checkpoint such
        as ``OUTPUT_DIR/model_final.pth`` or a bare student state dict; None = MODEL.WEIGHTS in
        ``opts``). device: default ``MODEL.DEVICE`` (CPU when CUDA is absent)."""
        from .loading import config_resize_mode, load_student, pick_device

        opts = list(opts) + (["MODEL.WEIGHTS", weights] if weights else [])
        cfg, student = load_student(config_file, opts)
        student = student.to(pick_device(device or cfg.MODEL.DEVICE))
        return cls(
            student,
            resize_mode=config_resize_mode(cfg),
            chunk_size=chunk_size,
            multimask=cfg.MODEL.SARD.MULTIMASK_OUTPUT,
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ image
    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Compute the image embedding of an (H, W, 3) uint8 image in ``image_format``."""
        check_image(image)
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        if image_format == "BGR":
            image = image[..., ::-1]
        resized = self.transform.apply_image(np.ascontiguousarray(image))
        tensor = torch.as_tensor(resized, device=self.device).permute(2, 0, 1)[None].float()
        self.set_torch_image(tensor, image.shape[:2])

    @torch.no_grad()
    def set_torch_image(
        self, transformed_image: torch.Tensor, original_image_size: Tuple[int, ...]
    ) -> None:
        """(1, 3, h', w') float 0-255 image already resized by ``self.transform`` (not padded):
        zero-padded bottom/right to the model size, as the data mapper pads, then encoded."""
        side = self.transform.target_length
        if (
            transformed_image.dim() != 4
            or transformed_image.shape[:2] != (1, 3)
            or max(transformed_image.shape[-2:]) > side
        ):
            raise ValueError(
                f"set_torch_image expects (1, 3, h, w) with h, w <= {side}, got "
                f"{tuple(transformed_image.shape)}; use set_image for (H, W, 3) arrays"
            )
        self.reset_image()
        h, w = (int(v) for v in transformed_image.shape[-2:])
        padded = F.pad(transformed_image.float(), (0, side - w, 0, side - h))
        # Same encoding as training (SAM-family models zero their padding after normalising).
        self.features = encode(self.model, padded.to(self.device), [(h, w)])["image_embedding"]
        self.original_size = tuple(int(v) for v in original_image_size[:2])
        self.input_size = (h, w)
        self.is_image_set = True

    def get_image_embedding(self) -> torch.Tensor:
        """The current image's embedding (1, 256, S/16, S/16)."""
        self._require_image()
        return self.features

    def reset_image(self) -> None:
        """Forget the current image."""
        self.is_image_set = False
        self.features = None
        self.original_size = None
        self.input_size = None

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")

    # ------------------------------------------------------------------ prompts
    def predict(
        self,
        point_coords: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
        box: Optional[np.ndarray] = None,
        mask_input: Optional[np.ndarray] = None,
        multimask_output: Optional[bool] = None,
        return_logits: bool = False,
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One prompt in original-image pixels: points (N, 2) xy with labels (N,) (1 fg, 0 bg),
        and/or a box (4,) xyxy, and/or low-res logits (1, S/4, S/4) of an earlier call.

        Returns masks (C, H, W) bool (logits if ``return_logits``), scores (C,), low-res
        logits (C, S/4, S/4); C = 3 with ``multimask_output`` (None: as the model was trained,
        ``multimask_for``) else 1.
        """
        self._require_image()
        coords = labels = boxes = masks = None
        if point_coords is not None or point_labels is not None:
            if point_coords is None or point_labels is None:
                raise ValueError("point_labels must be supplied with point_coords (and vice versa)")
            raw = check_points(point_coords, "point_coords")
            lab = check_labels(point_labels, raw.shape[0], "point_labels")
            check_inside(raw[lab != LABEL_PAD], self.original_size, "point_coords")
            coords = torch.as_tensor(
                self.transform.apply_coords(raw, self.original_size), dtype=torch.float32
            )[None]
            labels = torch.as_tensor(lab, dtype=torch.long)[None]
        if box is not None:
            raw_box = check_points(np.asarray(box, dtype=np.float64).reshape(-1, 2), "box")
            if raw_box.shape[0] != 2:
                raise ValueError(
                    f"box must be one xyxy box of 4 numbers, got shape {np.shape(box)}"
                )
            check_inside(raw_box, self.original_size, "box")
            boxes = self.transform.apply_boxes(raw_box.reshape(1, 4), self.original_size)
            boxes = torch.as_tensor(boxes, dtype=torch.float32)
        if mask_input is not None:
            masks = torch.as_tensor(np.asarray(mask_input), dtype=torch.float32)[None]
        out = self.predict_torch(coords, labels, boxes, masks, multimask_output, return_logits)
        return tuple(t[0].cpu().numpy() for t in out)  # type: ignore[return-value]

    @torch.no_grad()
    def predict_torch(
        self,
        point_coords: Optional[torch.Tensor],
        point_labels: Optional[torch.Tensor],
        boxes: Optional[torch.Tensor] = None,
        mask_input: Optional[torch.Tensor] = None,
        multimask_output: Optional[bool] = None,
        return_logits: bool = False,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """B prompts in model-input pixels (``self.transform``): points (B, N, 2) + labels (B, N),
        and/or boxes (B, 4) xyxy, and/or mask_input (B, 1, S/4, S/4) (SAM students only).

        Returns masks (B, C, H, W) bool (logits if ``return_logits``), scores (B, C) and low-res
        logits (B, C, S/4, S/4); C = 3 with ``multimask_output`` (None: as the model was trained,
        ``multimask_for``) else 1. Decoded ``chunk_size`` prompts at a time; like SamPredictor it
        returns every mask at full size, so for hundreds of prompts on a large image call it
        once per chunk and keep what you need (``tools/predict.py`` keeps the best mask as RLE).
        """
        self._require_image()
        if mask_input is not None and not self.accepts_mask_input:
            raise ValueError(
                f"{type(self.model).__name__} ({self.model.family}) has no mask prompt: "
                "mask_input is only supported for SAM-family students"
            )
        mask_count = None if mask_input is None else int(mask_input.shape[0])
        points, labels, count = self._assemble(point_coords, point_labels, boxes, mask_count)
        masks_in = self._check_mask_input(mask_input, count)
        if multimask_output is None:
            multimask_output = use_multimask(self.multimask, labels)
        all_masks, all_iou, all_low = [], [], []
        for start in range(0, count, self.chunk_size):
            sl = slice(start, start + self.chunk_size)
            kwargs = {} if masks_in is None else {"mask_inputs": masks_in[None, sl]}
            out = self.model.predict_masks(
                {"image_embedding": self.features},
                Prompts(points[None, sl], labels[None, sl]),
                multimask=multimask_output,
                **kwargs,
            )
            low = out.mask_logits[0]
            full = self.model.postprocess_masks(low, self.input_size, self.original_size)
            all_masks.append(full if return_logits else full > self.mask_threshold)
            all_iou.append(out.iou_pred[0])
            all_low.append(low)
        return torch.cat(all_masks), torch.cat(all_iou), torch.cat(all_low)

    def multimask_for(
        self, point_labels: Optional[torch.Tensor], boxes: Optional[torch.Tensor] = None
    ) -> bool:
        """Whether prompts of ``predict_torch``'s form (point labels (B, N), boxes (B, 4)) are
        decoded into 3 masks the way the model was trained (``self.multimask``)."""
        if self.multimask != "auto":
            return self.multimask == "always"
        return boxes is None and point_labels is not None and use_multimask("auto", point_labels)

    def _assemble(
        self,
        point_coords: Optional[torch.Tensor],
        point_labels: Optional[torch.Tensor],
        boxes: Optional[torch.Tensor],
        mask_count: Optional[int] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, int]:
        """Points then box corners (labels 2, 3), as SAM's prompt encoder orders them; a
        mask-only call gets zero points per prompt (the model adds SAM's padding point)."""
        lo = self.transform.apply_coords(np.zeros((1, 2)), self.original_size)[0]
        hi = self.transform.apply_coords(
            np.array([self.original_size[::-1]], dtype=np.float64), self.original_size
        )[0]
        parts_xy, parts_lab, counts = [], [], []
        if point_coords is not None or point_labels is not None:
            if point_coords is None or point_labels is None:
                raise ValueError("point_labels must be supplied with point_coords (and vice versa)")
            if point_coords.dim() != 3 or point_coords.shape[-1] != 2:
                raise ValueError(f"point_coords must be (B, N, 2), got {tuple(point_coords.shape)}")
            if tuple(point_labels.shape) != tuple(point_coords.shape[:2]):
                raise ValueError(
                    f"point_labels must be (B, N) = {tuple(point_coords.shape[:2])}, got "
                    f"{tuple(point_labels.shape)}"
                )
            if point_coords.shape[1] == 0:
                raise ValueError("point_coords holds no points (N = 0)")
            if not torch.isfinite(point_coords).all():
                raise ValueError("point_coords hold NaN or infinite values")
            labels = point_labels.long()
            if labels.numel() and (labels.min() < LABEL_PAD or labels.max() > LABEL_BOX_BR):
                raise ValueError(f"point_labels must be in -1..3, got {labels.unique().tolist()}")
            real = point_coords[labels != LABEL_PAD].detach().cpu().double().numpy()
            check_inside(real, None, "point_coords (model-input pixels)", lo, hi)
            parts_xy.append(point_coords.float())
            parts_lab.append(labels)
            counts.append(point_coords.shape[0])
        if boxes is not None:
            if boxes.dim() != 2 or boxes.shape[-1] != 4:
                raise ValueError(f"boxes must be (B, 4) xyxy, got {tuple(boxes.shape)}")
            if not torch.isfinite(boxes).all():
                bad = int((~torch.isfinite(boxes)).any(dim=1).nonzero()[0, 0])
                raise ValueError(f"boxes hold NaN or infinite values (e.g. box #{bad})")
            corners = boxes.float().reshape(-1, 2, 2)
            check_inside(
                corners.detach().cpu().double().numpy().reshape(-1, 2),
                None,
                "boxes (model-input pixels)",
                lo,
                hi,
            )
            if (corners[:, 1] < corners[:, 0]).any():
                raise ValueError("boxes must be xyxy with x1 >= x0 and y1 >= y0")
            parts_xy.append(corners)
            corner_labels = torch.tensor([LABEL_BOX_TL, LABEL_BOX_BR], device=boxes.device)
            parts_lab.append(corner_labels.expand(boxes.shape[0], 2))
            counts.append(boxes.shape[0])
        if not counts and mask_count is not None:
            parts_xy.append(torch.zeros(mask_count, 0, 2))
            parts_lab.append(torch.zeros(mask_count, 0, dtype=torch.long))
            counts.append(mask_count)
        if not counts:
            raise ValueError("no prompt given: pass point_coords with point_labels, or boxes")
        if len(set(counts)) > 1:
            raise ValueError(f"point_coords and boxes hold different prompt counts: {counts}")
        if counts[0] == 0:
            raise ValueError("the prompt list is empty (B = 0): nothing to segment")
        points = torch.cat(parts_xy, dim=1).to(self.device)
        labels = torch.cat(parts_lab, dim=1).to(self.device)
        if self.max_points is not None and points.shape[1] > self.max_points:
            raise ValueError(
                f"{type(self.model).__name__} takes at most {self.max_points} points per prompt "
                f"(a box counts as 2), got {points.shape[1]}"
            )
        return points, labels, counts[0]

    def _check_mask_input(
        self, mask_input: Optional[torch.Tensor], count: int
    ) -> Optional[torch.Tensor]:
        """(B, 1, S/d, S/d) float on the model's device, or None; d = the model's
        ``mask_downsample`` (4 for patch 16, 1 for a 4 px SAM student)."""
        if mask_input is None:
            return None
        side = self.transform.target_length // int(self.model.mask_downsample)
        if tuple(mask_input.shape) != (count, 1, side, side):
            raise ValueError(
                f"mask_input must be (B, 1, {side}, {side}) low-res logits with B = {count}, "
                f"got {tuple(mask_input.shape)}"
            )
        return mask_input.float().to(self.device)


def trained_multimask(
    predictor, point_labels: Optional[torch.Tensor], boxes: Optional[torch.Tensor] = None
) -> bool:
    """``multimask_output`` for ``predictor``: as its model was trained (a ``SardPredictor``'s
    ``multimask_for``), or True for segment_anything's SamPredictor (SAM trains all 4 outputs,
    and its automatic mask generator always decodes 3)."""
    rule = getattr(predictor, "multimask_for", None)
    return True if rule is None else bool(rule(point_labels, boxes))

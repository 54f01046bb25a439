"""``SardAutomaticMaskGenerator``: segment_anything's automatic mask generator on a student.

Same parameters, same algorithm, same output records as ``SamAutomaticMaskGenerator``; the
building blocks are segment_anything's own (``segment_anything.utils.amg``: point grids, crop
boxes, stability score, RLE, crop-edge filter; ``postprocess_small_regions``), only the
predictor differs. For every crop (the whole image, plus ``crop_n_layers`` layers of smaller
crops):

1. a grid of single foreground points, ``points_per_batch`` at a time, three masks each (one
   for a student trained with MODEL.SARD.MULTIMASK_OUTPUT "never": see ``sard.multimask``);
2. keep masks with predicted IoU > ``pred_iou_thresh`` and stability score
   IoU(logits > +offset, logits > -offset) >= ``stability_score_thresh``;
3. binarise at the predictor's ``mask_threshold`` (0), drop masks whose box lies within 20 px of
   a crop side that is not an image side, encode as RLE;
4. box NMS inside the crop at ``box_nms_thresh`` (scored by predicted IoU); across crops box NMS
   at ``crop_nms_thresh`` preferring smaller crops; then optional hole/island removal below
   ``min_mask_region_area`` px with another NMS preferring unchanged masks.

The predictor is a ``SardPredictor`` (built from a student), or anything with SamPredictor's
interface, segment_anything's own included: wrapped around the same SAM modules, both
generators give the same records (tested). For a student the geometry of prompts and images is
the training mapper's (see ``sard.export.transform``), which equals SAM's when a crop is
already at the model's input size and differs by under a pixel otherwise.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
from segment_anything.automatic_mask_generator import SamAutomaticMaskGenerator
from segment_anything.utils.amg import (
    MaskData,
    area_from_rle,
    batch_iterator,
    batched_mask_to_box,
    box_xyxy_to_xywh,
    build_all_layer_point_grids,
    calculate_stability_score,
    coco_encode_rle,
    generate_crop_boxes,
    is_box_near_crop_edge,
    mask_to_rle_pytorch,
    rle_to_mask,
    uncrop_boxes_xyxy,
    uncrop_masks,
    uncrop_points,
)
from torchvision.ops.boxes import batched_nms, box_area

from sard.amg_settings import OUTPUT_MODES, AmgSettings

from .checks import check_image
from .predictor import SardPredictor, trained_multimask

RECORD_KEYS = (
    "segmentation",
    "area",
    "bbox",
    "predicted_iou",
    "point_coords",
    "stability_score",
    "crop_box",
)


def as_predictor(model: Any) -> Any:
    """A predictor with SamPredictor's interface: ``model`` itself when it has one (a
    SardPredictor, segment_anything's SamPredictor), a SardPredictor around a promptable sard
    student (decoding 3 masks per point: for a student trained with MODEL.SARD.MULTIMASK_OUTPUT
    "never" pass ``SardPredictor.from_config(...)`` or ``SardPredictor(student,
    multimask="never")`` instead), or segment_anything's SamPredictor around its ``Sam``."""
    if all(hasattr(model, a) for a in ("set_image", "predict_torch", "transform", "reset_image")):
        return model
    if isinstance(model, nn.Module) and hasattr(model, "family"):
        return SardPredictor(model)
    from segment_anything.modeling import Sam

    if isinstance(model, Sam):
        from segment_anything import SamPredictor

        return SamPredictor(model)
    raise TypeError(
        f"SardAutomaticMaskGenerator needs a promptable student (sam, efficient_sam), a "
        f"SardPredictor, a segment_anything Sam or SamPredictor; got {type(model).__name__}"
    )


def mask_threshold_of(predictor: Any) -> float:
    """The logit threshold of a binary mask: SardPredictor's, or SAM's ``model.mask_threshold``."""
    if hasattr(predictor, "mask_threshold"):
        return float(predictor.mask_threshold)
    return float(predictor.model.mask_threshold)


class SardAutomaticMaskGenerator:
    """Masks for every object of an image from a grid of point prompts (see the module doc).

    Parameters and defaults are SamAutomaticMaskGenerator's, held by ``sard.amg_settings.
    AmgSettings`` (its defaults suit SAM ViT-H; a small student predicts lower IoUs, so lower
    ``pred_iou_thresh`` for it). ``model``: a promptable sard student, a SardPredictor, or a
    segment_anything Sam / SamPredictor.
    """

    def __init__(
        self,
        model: Any,
        *positional: Any,
        settings: Optional[AmgSettings] = None,
        **overrides: Any,
    ) -> None:
        """``settings`` (default ``AmgSettings()``) with the parameters given by position (in
        SamAutomaticMaskGenerator's order: points_per_side, points_per_batch, ...) or by name,
        so SAM's calls work unchanged; an unknown name is a TypeError."""
        names = [f.name for f in fields(AmgSettings)]
        if len(positional) > len(names):
            raise TypeError(f"at most {len(names)} positional parameters ({', '.join(names)})")
        clash = sorted(set(names[: len(positional)]) & set(overrides))
        if clash:
            raise TypeError(f"{clash} given by position and by name")
        given = dict(zip(names, positional), **overrides)
        s = replace(settings if settings is not None else AmgSettings(), **given)
        point_grids = s.point_grids
        if point_grids is None:
            point_grids = build_all_layer_point_grids(
                s.points_per_side, s.crop_n_layers, s.crop_n_points_downscale_factor
            )
        if len(point_grids) < s.crop_n_layers + 1:
            raise ValueError(
                f"point_grids holds {len(point_grids)} grid(s); crop_n_layers={s.crop_n_layers} "
                f"needs {s.crop_n_layers + 1} (one per layer, the whole image first)"
            )
        self.settings = s
        self.point_grids = point_grids
        self.predictor = as_predictor(model)
        self.mask_threshold = mask_threshold_of(self.predictor)
        self.points_per_batch = int(s.points_per_batch)
        self.pred_iou_thresh = float(s.pred_iou_thresh)
        self.stability_score_thresh = float(s.stability_score_thresh)
        self.stability_score_offset = float(s.stability_score_offset)
        self.box_nms_thresh = float(s.box_nms_thresh)
        self.crop_n_layers = int(s.crop_n_layers)
        self.crop_nms_thresh = float(s.crop_nms_thresh)
        self.crop_overlap_ratio = float(s.crop_overlap_ratio)
        self.min_mask_region_area = int(s.min_mask_region_area)
        self.output_mode = s.output_mode
        # Masks of the last image: decoded, kept by the IoU filter, then by the stability filter,
        # and the highest predicted IoU (to tell a user which threshold removed everything).
        self.last_counts: Dict[str, Any] = {}

    @torch.no_grad()
    def generate(self, image: np.ndarray) -> List[Dict[str, Any]]:
        """(H, W, 3) uint8 RGB -> one record per mask, as SamAutomaticMaskGenerator.generate:
        ``segmentation`` (H, W) bool or RLE dict per ``output_mode``, ``area`` (px), ``bbox``
        XYWH (SAM's convention: w = last column - first column), ``predicted_iou``,
        ``point_coords`` [[x, y]], ``stability_score``, ``crop_box`` XYWH."""
        check_image(image)
        data = self.mask_data(image)
        if self.min_mask_region_area > 0:
            # SAM's own static method: fills holes / removes islands, re-runs NMS.
            data = SamAutomaticMaskGenerator.postprocess_small_regions(
                data, self.min_mask_region_area, max(self.box_nms_thresh, self.crop_nms_thresh)
            )
        return self.records(data)

    def records(self, data: MaskData) -> List[Dict[str, Any]]:
        """MaskData (rles, boxes, iou_preds, points, stability_score, crop_boxes) -> records."""
        out = []
        for i, rle in enumerate(data["rles"]):
            if self.output_mode == "coco_rle":
                segmentation = coco_encode_rle(rle)
            elif self.output_mode == "binary_mask":
                segmentation = rle_to_mask(rle)
            else:
                segmentation = rle
            out.append(
                {
                    "segmentation": segmentation,
                    "area": area_from_rle(rle),
                    "bbox": box_xyxy_to_xywh(data["boxes"][i]).tolist(),
                    "predicted_iou": data["iou_preds"][i].item(),
                    "point_coords": [data["points"][i].tolist()],
                    "stability_score": data["stability_score"][i].item(),
                    "crop_box": box_xyxy_to_xywh(data["crop_boxes"][i]).tolist(),
                }
            )
        return out

    def mask_data(self, image: np.ndarray) -> MaskData:
        """Every crop's surviving masks as MaskData (numpy), duplicates across crops removed."""
        hw = tuple(int(v) for v in image.shape[:2])
        self.last_counts = {"masks": 0, "iou_kept": 0, "stable_kept": 0, "max_iou": None}
        crop_boxes, layers = generate_crop_boxes(hw, self.crop_n_layers, self.crop_overlap_ratio)
        data = MaskData()
        for crop_box, layer in zip(crop_boxes, layers):
            data.cat(self._crop_masks(image, crop_box, layer, hw))
        if len(crop_boxes) > 1 and len(data["rles"]):
            # A mask found in several crops is kept from the smallest crop (most pixels per
            # object), as SAM does: score = 1 / crop area.
            score = 1.0 / box_area(data["crop_boxes"]).to(data["boxes"].device)
            keep = batched_nms(
                data["boxes"].float(),
                score,
                torch.zeros(len(data["boxes"])),
                iou_threshold=self.crop_nms_thresh,
            )
            data.filter(keep)
        data.to_numpy()
        return data

    def _crop_masks(
        self, image: np.ndarray, crop_box: List[int], layer: int, hw: Tuple[int, int]
    ) -> MaskData:
        """Masks of one crop in image coordinates, deduplicated inside the crop."""
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1]
        crop_hw = crop.shape[:2]
        self.predictor.set_image(crop)
        points = self.point_grids[layer] * np.array(crop_hw)[None, ::-1]  # normalised -> xy px
        data = MaskData()
        for (batch,) in batch_iterator(self.points_per_batch, points):
            data.cat(self._batch_masks(batch, crop_hw, crop_box, hw))
        self.predictor.reset_image()
        keep = batched_nms(
            data["boxes"].float(),
            data["iou_preds"],
            torch.zeros(len(data["boxes"])),
            iou_threshold=self.box_nms_thresh,
        )
        data.filter(keep)
        data["boxes"] = uncrop_boxes_xyxy(data["boxes"], crop_box)
        data["points"] = uncrop_points(data["points"], crop_box)
        data["crop_boxes"] = torch.tensor([crop_box] * len(data["rles"]))
        return data

    def _batch_masks(
        self,
        points: np.ndarray,
        crop_hw: Tuple[int, int],
        crop_box: List[int],
        hw: Tuple[int, int],
    ) -> MaskData:
        """Three masks per point (one for a student trained on its single mask), filtered by
        predicted IoU, stability and crop edges."""
        predictor = self.predictor
        coords = torch.as_tensor(
            predictor.transform.apply_coords(points, crop_hw), device=predictor.device
        )
        labels = torch.ones(coords.shape[0], dtype=torch.int, device=coords.device)[:, None]
        # SAM decodes 3 masks per point; a student trained on its single mask decodes that one.
        logits, iou_preds, _ = predictor.predict_torch(
            coords[:, None, :],
            labels,
            multimask_output=trained_multimask(predictor, labels),
            return_logits=True,
        )
        per_point = logits.shape[1]
        data = MaskData(
            masks=logits.flatten(0, 1),
            iou_preds=iou_preds.flatten(0, 1),
            points=torch.as_tensor(points.repeat(per_point, axis=0)),
        )
        del logits
        counts = self.last_counts
        counts["masks"] += len(data["iou_preds"])
        top = float(data["iou_preds"].max()) if len(data["iou_preds"]) else None
        if top is not None and (counts["max_iou"] is None or top > counts["max_iou"]):
            counts["max_iou"] = top
        if self.pred_iou_thresh > 0.0:
            data.filter(data["iou_preds"] > self.pred_iou_thresh)
        counts["iou_kept"] += len(data["iou_preds"])
        data["stability_score"] = calculate_stability_score(
            data["masks"], self.mask_threshold, self.stability_score_offset
        )
        if self.stability_score_thresh > 0.0:
            data.filter(data["stability_score"] >= self.stability_score_thresh)
        counts["stable_kept"] += len(data["iou_preds"])
        data["masks"] = data["masks"] > self.mask_threshold
        data["boxes"] = batched_mask_to_box(data["masks"])
        near_edge = is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, hw[1], hw[0]])
        if near_edge.any():
            data.filter(~near_edge)
        data["rles"] = mask_to_rle_pytorch(uncrop_masks(data["masks"], crop_box, *hw))
        del data["masks"]
        return data

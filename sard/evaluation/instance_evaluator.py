"""mIoU and boundary IoU of promptable instance masks (one prediction per prompted GT instance)."""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from sard.distributed import all_gather, is_main_process

from .base import (
    DatasetEvaluator,
    assert_finite,
    format_table,
    write_json,
)
from .boundary import as_bool_masks
from .crowding import touching_neighbour_counts
from .paired import box_fill_scores, paired_mask_scores

logger = logging.getLogger(__name__)

# (image_id, prompt index, GT area, touching neighbours, IoU, boundary IoU, and the same two
# for the GT's own box filled: the prompt-box floor)
InstanceRecord = Tuple[Any, int, int, int, float, float, float, float]
# Prefix of the prompt-box floor's metrics (box_mIoU, box_bIoU, box_mIoU_small, ...).
BOX_FLOOR_PREFIX = "box_"


def _size_bucket_names(size_bins: Sequence[int]) -> List[str]:
    if len(size_bins) == 2:
        return ["small", "medium", "large"]
    return [f"size{k}" for k in range(len(size_bins) + 1)]


def _neighbour_bucket_names(neighbour_bins: Sequence[int]) -> List[str]:
    edges = [0] + list(neighbour_bins)
    names = [f"nb{lo}" if hi - lo == 1 else f"nb{lo}-{hi - 1}" for lo, hi in zip(edges, edges[1:])]
    return names + [f"nb{edges[-1]}+"]


def _check_increasing(values: Sequence[int], name: str) -> None:
    if len(values) == 0 or any(v <= 0 for v in values):
        raise ValueError(f"{name} must be non-empty positive thresholds, got {tuple(values)}")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"{name} must be strictly increasing, got {tuple(values)}")


class PromptableInstanceEvaluator(DatasetEvaluator):
    """IoU and boundary IoU per prompted GT instance, averaged over instances (x100).

    process(inputs, outputs): inputs[i] has "image_id", "gt_masks_orig" (the dataset mapper's
    name; plain "gt_masks" is accepted when "gt_masks_orig" is absent) (Q, H, W) bool at the
    original resolution, one per prompted GT instance in prompt order, and optionally
    "height"/"width" (checked against the masks); outputs[i]["pred_masks"] is (Q, H, W) bool in
    the same order.

    evaluate() returns {"sard_instances": metrics} on the main process (None elsewhere) with keys
        count, mIoU, bIoU                    all instances
        count_<b>, mIoU_<b>, bIoU_<b>        per bucket b
        box_mIoU, box_bIoU (and _<b>)        the prompt-box floor: each GT's tight box filled
                                             as the prediction, same instances and buckets
    Size buckets by GT area in pixels, for size_bins (a, b): small [0, a), medium [a, b),
    large [b, inf). Crowding buckets by touching GT neighbours (8-connected contact or overlap,
    among the image's prompted instances), for neighbour_bins (1, 3): nb0, nb1-2, nb3+.
    Buckets without instances report count_<b> = 0 and no mIoU/bIoU keys, so no value is NaN.
    A pair where both masks are empty scores 1.0, an empty prediction for a non-empty GT 0.0.
    The box floor is what "fill the box" scores with box prompts, the trivial model every
    promptable model must beat: one that scores below it has learned nothing beyond its prompt.

    With output_dir, writes sard_instances.json (metrics and settings) and, if
    save_per_instance, sard_instances_per_instance.json with one record per instance.
    """

    def __init__(
        self,
        dataset_name: Optional[str] = None,
        output_dir: Optional[str] = None,
        size_bins: Sequence[int] = (16**2, 32**2),
        distributed: bool = True,
        *,
        neighbour_bins: Sequence[int] = (1, 3),
        dilation_ratio: float = 0.02,
        save_per_instance: bool = False,
    ) -> None:
        _check_increasing(size_bins, "PromptableInstanceEvaluator(size_bins)")
        _check_increasing(neighbour_bins, "PromptableInstanceEvaluator(neighbour_bins)")
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._size_bins = [int(v) for v in size_bins]
        self._neighbour_bins = [int(v) for v in neighbour_bins]
        self._distributed = distributed
        self._dilation_ratio = float(dilation_ratio)
        self._save_per_instance = save_per_instance
        self._records: List[InstanceRecord] = []
        self._images_seen = 0

    def reset(self) -> None:
        """Forget everything processed so far."""
        self._records = []
        self._images_seen = 0

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        """Score every (GT, prediction) pair of every image in the batch (see the class doc)."""
        if len(inputs) != len(outputs):
            raise ValueError(f"process: {len(inputs)} inputs but {len(outputs)} outputs")
        for k, (inp, out) in enumerate(zip(inputs, outputs)):
            image_id = inp.get("image_id", inp.get("file_name", f"image{self._images_seen}"))
            self._images_seen += 1
            if hasattr(image_id, "item"):  # a tensor or numpy scalar would not survive JSON
                image_id = image_id.item()
            # The mapper's "gt_masks" are in the model's input frame; "gt_masks_orig" are not.
            gt_key = "gt_masks_orig" if "gt_masks_orig" in inp else "gt_masks"
            if gt_key not in inp:
                raise KeyError(f"process: inputs[{k}] (image {image_id}) has no 'gt_masks_orig'")
            if "pred_masks" not in out:
                raise KeyError(f"process: outputs[{k}] (image {image_id}) has no 'pred_masks'")
            gt = as_bool_masks(inp[gt_key], f"inputs[{k}]['{gt_key}']", 3)
            pred = as_bool_masks(out["pred_masks"], f"outputs[{k}]['pred_masks']", 3)
            if gt.shape != pred.shape:
                raise ValueError(
                    f"process: image {image_id}: gt_masks {gt.shape} and pred_masks {pred.shape}"
                    " differ; predictions must be one mask per prompt at the original resolution"
                )
            size = (inp.get("height", gt.shape[1]), inp.get("width", gt.shape[2]))
            if tuple(size) != gt.shape[1:]:
                raise ValueError(
                    f"process: image {image_id}: masks are {gt.shape[1:]} but the image is "
                    f"{tuple(size)}; evaluate at the original resolution"
                )
            scores = paired_mask_scores(gt, pred, self._dilation_ratio)
            floor = box_fill_scores(gt, self._dilation_ratio, scores.gt_boxes)
            neighbours = touching_neighbour_counts(gt, scores.gt_boxes)
            for q in range(gt.shape[0]):
                self._records.append(
                    (
                        image_id,
                        q,
                        int(scores.gt_area[q]),
                        int(neighbours[q]),
                        float(scores.iou[q]),
                        float(scores.boundary_iou[q]),
                        float(floor.iou[q]),
                        float(floor.boundary_iou[q]),
                    )
                )

    def evaluate(self) -> Optional[Dict[str, Dict[str, float]]]:
        """Gather records from all processes; on the main process summarise, log, write, return."""
        records = self._records
        if self._distributed:
            records = [r for part in all_gather(self._records) for r in part]
            if not is_main_process():
                return None
        metrics, rows = self._summarise(records)
        if not records:
            logger.warning("PromptableInstanceEvaluator: no instances were processed")
        name = self._dataset_name or "dataset"
        logger.info(
            "Promptable instance evaluation on %s:\n%s",
            name,
            format_table(["bucket", "count", "mIoU", "bIoU", "box mIoU", "box bIoU"], rows),
        )
        if self._output_dir:
            settings = {
                "dataset": self._dataset_name,
                "size_bins": self._size_bins,
                "neighbour_bins": self._neighbour_bins,
                "dilation_ratio": self._dilation_ratio,
            }
            write_json(self._output_dir, "sard_instances.json", {"metrics": metrics, **settings})
            if self._save_per_instance:
                fields = (
                    "image_id",
                    "index",
                    "area",
                    "neighbours",
                    "iou",
                    "boundary_iou",
                    "box_iou",
                    "box_boundary_iou",
                )
                per_instance = [dict(zip(fields, r)) for r in records]
                write_json(
                    self._output_dir,
                    "sard_instances_per_instance.json",
                    {"instances": per_instance, **settings},
                )
        return OrderedDict({"sard_instances": metrics})

    def _summarise(self, records: List[InstanceRecord]) -> Tuple[Dict[str, float], List[list]]:
        """Metrics dict (see class docstring) and the console table rows."""
        area = np.array([r[2] for r in records], dtype=np.int64)
        neighbours = np.array([r[3] for r in records], dtype=np.int64)
        iou = np.array([r[4] for r in records], dtype=np.float64)
        biou = np.array([r[5] for r in records], dtype=np.float64)
        box_iou = np.array([r[6] for r in records], dtype=np.float64)
        box_biou = np.array([r[7] for r in records], dtype=np.float64)
        size_bucket = np.digitize(area, self._size_bins)
        crowd_bucket = np.digitize(neighbours, self._neighbour_bins)
        groups = [("", np.ones(len(records), dtype=bool))]
        groups += [
            (name, size_bucket == k) for k, name in enumerate(_size_bucket_names(self._size_bins))
        ]
        groups += [
            (name, crowd_bucket == k)
            for k, name in enumerate(_neighbour_bucket_names(self._neighbour_bins))
        ]
        metrics: Dict[str, float] = OrderedDict()
        rows: List[list] = []
        for name, member in groups:
            suffix = f"_{name}" if name else ""
            n = int(member.sum())
            metrics[f"count{suffix}"] = float(n)
            if n == 0:
                rows.append([name or "all", 0, "-", "-", "-", "-"])
                continue
            row: list = [name or "all", n]
            for key, values in (
                ("mIoU", iou),
                ("bIoU", biou),
                (BOX_FLOOR_PREFIX + "mIoU", box_iou),
                (BOX_FLOOR_PREFIX + "bIoU", box_biou),
            ):
                metrics[key + suffix] = 100.0 * float(values[member].mean())
                row.append(metrics[key + suffix])
            rows.append(row)
        assert_finite(metrics, "PromptableInstanceEvaluator")
        return metrics, rows

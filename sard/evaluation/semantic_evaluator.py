"""Semantic segmentation: detectron2-style confusion-matrix metrics plus per-class boundary IoU."""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from PIL import Image

from sard.distributed import all_gather, is_main_process

from .base import (
    DatasetEvaluator,
    assert_finite,
    format_table,
    write_json,
)
from .boundary import boundary_dilation

logger = logging.getLogger(__name__)


def _class_boundaries(labels: np.ndarray, dilation: int, sentinel: int) -> np.ndarray:
    """Pixels of B(labels == c) for every class c at once, as one bool map.

    A pixel of class c survives the erosion of the binary mask (labels == c) iff its whole
    (2d+1)-square lies in the image and holds only c, i.e. iff the square's min and max labels are
    equal, with `sentinel` (ignore) outside the image. So two grey-level filters on the label map
    give every class's boundary, exactly as eroding each binary mask would.
    """
    kernel = np.ones((2 * dilation + 1, 2 * dilation + 1), dtype=np.uint8)
    lo = cv2.erode(labels, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=sentinel)
    hi = cv2.dilate(labels, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=sentinel)
    return (labels != sentinel) & (lo != hi)


def class_boundary_counts(
    gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_label: int, dilation: int
) -> Tuple[np.ndarray, np.ndarray]:
    """Per class c: (|B(G_c) & B(P_c)|, |B(G_c) | B(P_c)|) for one image, as two (K,) int64 arrays.

    G_c = (gt == c), P_c = (pred == c) & (gt != ignore_label): the prediction is cut at ignore
    pixels exactly like the GT, so the result never depends on what is predicted there and a
    prediction equal to the GT on all valid pixels scores 1.0. B is the official boundary
    (`sard.evaluation.boundary`) with `dilation` from the full image size; all classes are done
    at once on the label maps (see `_class_boundaries`), with identical results.
    """
    if num_classes >= np.iinfo(np.uint16).max:
        raise ValueError(f"class_boundary_counts: at most 65534 classes, got {num_classes}")
    dtype = np.uint8 if num_classes < np.iinfo(np.uint8).max else np.uint16
    sentinel = int(np.iinfo(dtype).max)
    valid = gt != ignore_label
    g = np.where(valid, gt, sentinel).astype(dtype)
    p = np.where(valid, pred, sentinel).astype(dtype)
    bg = _class_boundaries(g, dilation, sentinel)
    bp = _class_boundaries(p, dilation, sentinel)
    count_g = np.bincount(g[bg], minlength=num_classes)
    count_p = np.bincount(p[bp], minlength=num_classes)
    inter = np.bincount(g[bg & bp & (g == p)], minlength=num_classes)
    return inter.astype(np.int64), (count_g + count_p - inter).astype(np.int64)


def semseg_metrics(
    conf_matrix: np.ndarray,
    boundary_inter: np.ndarray,
    boundary_union: np.ndarray,
    class_names: Sequence[str],
) -> Dict[str, float]:
    """Metrics (x100) from a (K+1, K+1) confusion matrix indexed [pred, gt] (row/column K = ignore).

    As detectron2's SemSegEvaluator: tp_c = conf[c, c], gt_c = column sum, pred_c = row sum over
    the K real classes; ACC_c = tp_c / gt_c, IoU_c = tp_c / (gt_c + pred_c - tp_c); a class counts
    ("valid") when gt_c > 0, so classes absent from the GT (even if predicted) are left out.
    mIoU, mACC = means over valid classes; fwIoU = sum_c IoU_c * gt_c / sum gt; pACC = sum tp /
    sum gt. Boundary: BIoU_c = boundary_inter_c / boundary_union_c, mBIoU = mean over the same
    valid classes, so mIoU and mBIoU average the same set. Per-class keys IoU-, ACC-, BIoU-<name>
    are reported for valid classes only; with no valid pixel at all nothing is defined and an
    empty dict is returned (never NaN).
    """
    k = len(class_names)
    tp = conf_matrix.diagonal()[:k].astype(np.float64)
    pos_gt = conf_matrix[:k, :k].sum(axis=0).astype(np.float64)
    pos_pred = conf_matrix[:k, :k].sum(axis=1).astype(np.float64)
    valid = pos_gt > 0
    if not valid.any():
        return OrderedDict()
    acc = tp[valid] / pos_gt[valid]
    iou = tp[valid] / (pos_gt + pos_pred - tp)[valid]
    # A class with GT pixels always has GT boundary pixels, so the union is positive; the guard
    # only protects against inconsistent inputs.
    b_union = np.maximum(boundary_union[valid], 1).astype(np.float64)
    biou = boundary_inter[valid] / b_union
    names = [n for n, v in zip(class_names, valid) if v]
    res: Dict[str, float] = OrderedDict()
    res["mIoU"] = 100.0 * float(iou.mean())
    res["fwIoU"] = 100.0 * float((iou * pos_gt[valid]).sum() / pos_gt.sum())
    res["mACC"] = 100.0 * float(acc.mean())
    res["pACC"] = 100.0 * float(tp.sum() / pos_gt.sum())
    res["mBIoU"] = 100.0 * float(biou.mean())
    for name, v in zip(names, iou):
        res[f"IoU-{name}"] = 100.0 * float(v)
    for name, v in zip(names, acc):
        res[f"ACC-{name}"] = 100.0 * float(v)
    for name, v in zip(names, biou):
        res[f"BIoU-{name}"] = 100.0 * float(v)
    return res


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


class SemSegBoundaryEvaluator(DatasetEvaluator):
    """mIoU, fwIoU, mACC, pACC (detectron2's definitions) and per-class boundary IoU, mBIoU.

    process(inputs, outputs): GT from inputs[i]["sem_seg_orig"] (the mapper's labels at the
    original size, at evaluation) or inputs[i]["sem_seg"] (H, W) integer labels, or, if absent,
    from the PNG at inputs[i]["sem_seg_file_name"]; ignore_label marks unlabelled pixels.
    Prediction outputs[i]["sem_seg"]: (K, H, W) scores (argmax taken) or (H, W) labels, at the GT
    resolution. Intersections and unions of class boundaries are summed over the dataset
    (see `class_boundary_counts` for ignore handling) before dividing.

    evaluate() returns {"sem_seg": semseg_metrics(...)} on the main process, None elsewhere; with
    output_dir it also writes sem_seg_boundary.json.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_label: int = 255,
        class_names: Optional[Sequence[str]] = None,
        output_dir: Optional[str] = None,
        distributed: bool = True,
        *,
        dilation_ratio: float = 0.02,
        dataset_name: Optional[str] = None,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"SemSegBoundaryEvaluator: num_classes must be >= 1, is {num_classes}")
        if 0 <= ignore_label < num_classes:
            raise ValueError(
                f"SemSegBoundaryEvaluator: ignore_label {ignore_label} is a real class id "
                f"(num_classes={num_classes})"
            )
        names = [str(c) for c in range(num_classes)] if class_names is None else list(class_names)
        if len(names) != num_classes:
            raise ValueError(
                f"SemSegBoundaryEvaluator: {len(names)} class_names for {num_classes} classes"
            )
        self._num_classes = num_classes
        self._ignore_label = ignore_label
        self._class_names = names
        self._output_dir = output_dir
        self._distributed = distributed
        self._dilation_ratio = float(dilation_ratio)
        self._dataset_name = dataset_name
        self.reset()

    def reset(self) -> None:
        """Zero the confusion matrix and the boundary counts."""
        k = self._num_classes
        self._conf_matrix = np.zeros((k + 1, k + 1), dtype=np.int64)
        self._b_inter = np.zeros(k, dtype=np.int64)
        self._b_union = np.zeros(k, dtype=np.int64)

    def _load_gt(self, inp: Dict[str, Any], k: int) -> np.ndarray:
        # The mapper's "sem_seg" is at the model's input size; predictions come back at the
        # original size, as does the evaluation-time "sem_seg_orig".
        if "sem_seg_orig" in inp:
            gt = _to_numpy(inp["sem_seg_orig"])
        elif "sem_seg" in inp:
            gt = _to_numpy(inp["sem_seg"])
        elif "sem_seg_file_name" in inp:
            with Image.open(inp["sem_seg_file_name"]) as img:
                gt = np.asarray(img)
        else:
            raise KeyError(f"process: inputs[{k}] has neither 'sem_seg' nor 'sem_seg_file_name'")
        if gt.ndim != 2 or gt.dtype.kind not in "iub":
            raise ValueError(
                f"process: inputs[{k}] GT must be (H, W) integer labels, got {gt.dtype} {gt.shape}"
            )
        return gt.astype(np.int64)

    def _prediction(self, out: Dict[str, Any], k: int) -> np.ndarray:
        if "sem_seg" not in out:
            raise KeyError(f"process: outputs[{k}] has no 'sem_seg'")
        sem = out["sem_seg"]
        if not isinstance(sem, torch.Tensor):
            sem = np.asarray(sem)
        if sem.ndim == 3:
            if sem.shape[0] != self._num_classes:
                raise ValueError(
                    f"process: outputs[{k}]['sem_seg'] has {sem.shape[0]} channels, "
                    f"expected num_classes={self._num_classes}"
                )
            sem = sem.argmax(0)  # first maximum on ties, in torch and numpy alike
        pred = _to_numpy(sem)
        if pred.ndim != 2 or pred.dtype.kind not in "iu":
            raise ValueError(
                f"process: outputs[{k}]['sem_seg'] must be (K, H, W) scores or (H, W) labels, "
                f"got {pred.dtype} {pred.shape}"
            )
        return pred.astype(np.int64)

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        """Accumulate the confusion matrix and class boundary counts of a batch."""
        if len(inputs) != len(outputs):
            raise ValueError(f"process: {len(inputs)} inputs but {len(outputs)} outputs")
        n = self._num_classes
        for k, (inp, out) in enumerate(zip(inputs, outputs)):
            gt, pred = self._load_gt(inp, k), self._prediction(out, k)
            where = f"process: image {inp.get('file_name', inp.get('image_id', k))}"
            if gt.shape != pred.shape:
                raise ValueError(
                    f"{where}: GT {gt.shape} and prediction {pred.shape} differ; "
                    "predict at the GT resolution"
                )
            valid = gt != self._ignore_label
            outside = valid & ((gt < 0) | (gt >= n))
            if outside.any():
                raise ValueError(
                    f"{where}: GT labels outside [0, {n}) that are not ignore_label "
                    f"{self._ignore_label}: {np.unique(gt[outside])[:10].tolist()}"
                )
            if ((pred < 0) | (pred >= n)).any():
                raise ValueError(f"{where}: predicted labels outside [0, {n})")
            gt_index = np.where(valid, gt, n)
            self._conf_matrix += np.bincount(
                (n + 1) * pred.reshape(-1) + gt_index.reshape(-1), minlength=(n + 1) ** 2
            ).reshape(n + 1, n + 1)
            d = boundary_dilation(gt.shape[0], gt.shape[1], self._dilation_ratio)
            inter, union = class_boundary_counts(gt, pred, n, self._ignore_label, d)
            self._b_inter += inter
            self._b_union += union

    def evaluate(self) -> Optional[Dict[str, Dict[str, float]]]:
        """Sum counts over processes; on the main process compute, log, write and return."""
        conf, b_inter, b_union = self._conf_matrix, self._b_inter, self._b_union
        if self._distributed:
            parts = all_gather((conf, b_inter, b_union))
            if not is_main_process():
                return None
            conf = sum(p[0] for p in parts)
            b_inter = sum(p[1] for p in parts)
            b_union = sum(p[2] for p in parts)
        res = semseg_metrics(conf, b_inter, b_union, self._class_names)
        if not res:
            logger.warning("SemSegBoundaryEvaluator: no valid GT pixel was processed")
        assert_finite(res, "SemSegBoundaryEvaluator")
        rows = [
            [name, res[f"IoU-{name}"], res[f"BIoU-{name}"], res[f"ACC-{name}"]]
            for name in self._class_names
            if f"IoU-{name}" in res
        ]
        if res:
            rows.append(["mean", res["mIoU"], res["mBIoU"], res["mACC"]])
        logger.info(
            "Semantic evaluation on %s:\n%s",
            self._dataset_name or "dataset",
            format_table(["class", "IoU", "BIoU", "ACC"], rows),
        )
        if self._output_dir:
            write_json(
                self._output_dir,
                "sem_seg_boundary.json",
                {
                    "metrics": res,
                    "dataset": self._dataset_name,
                    "dilation_ratio": self._dilation_ratio,
                    "ignore_label": self._ignore_label,
                },
            )
        return OrderedDict({"sem_seg": res})

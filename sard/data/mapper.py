"""Dataset dict -> model-ready sample with prompts, for SAM / EfficientSAM style models.

Output of ``PromptDatasetMapper.__call__`` (S = image_size, Q prompts, N points each)::

    image        float32 (3, S, S), 0-255 RGB, resized longest side + zero pad bottom/right
                 ("longest_pad", SAM) or stretched to S x S ("stretch", EfficientSAM)
    image_id, file_name, height, width   from the dict (original size)
    input_hw     (h, w) valid region before padding ((S, S) for stretch)
    gt_masks     bool (Q, S, S) in the input frame
    boxes        float32 (Q, 4) xyxy, points float32 (Q, N, 2) xy, point_labels int64 (Q, N)
    gt_masks_orig  bool (Q, H, W), evaluation only, same order as the prompts

Training: up to ``max_prompts`` (default 64) instances drawn at random from the instances
still visible after augmentation (random scale in ``scale_jitter``, flips with p = 0.5, random
crop when the scaled image exceeds S); random prompts from a generator seeded from torch's RNG
(so DataLoader workers differ). Evaluation: no augmentation, every instance (or a seeded subset
when ``max_prompts`` is given), prompts seeded by (eval_seed, image_id): identical in every run.
Instances whose mask is empty at the original resolution are dropped with a counted warning.

Unlabeled records (image folders, ``sard.data.image_folder``) are augmented the same way but
carry no instances: the sample has no prompts, ``unlabeled`` True and a ``prompt_seed`` drawn
from the training generator, with which the distiller samples prompts from the teacher's
pseudo-masks of this very input (``sard.distill.pseudo_labels``). They cannot be evaluated.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch

from .image_folder import UNLABELED_KEY, is_unlabeled_record
from .image_io import read_image
from .masks import decode_instances
from .problems import DatasetError
from .prompts import eval_rng, points_per_prompt, sample_prompts
from .transforms import GeometryPlan, make_plan

logger = logging.getLogger("sard.data")

DEFAULT_TRAIN_MAX_PROMPTS = 64
RESIZE_MODES = ("longest_pad", "stretch")


class _DropCounter:
    """Counts dropped instances; logs at the 1st, 2nd, 4th, 8th ... occurrence."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0

    def add(self, n: int, source: str) -> None:
        for _ in range(n):
            self.count += 1
            if self.count & (self.count - 1) == 0:
                logger.warning("dropped %d %s so far (latest in %s)", self.count, self.what, source)


EMPTY_MASKS_DROPPED = _DropCounter("instances with an empty mask")


def training_rng() -> np.random.Generator:
    """A numpy generator drawn from torch's RNG, which DataLoader seeds per worker."""
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))


def load_image_checked(dataset_dict: Dict[str, Any]) -> np.ndarray:
    """Read the dict's image and check it against its recorded height/width."""
    image = read_image(dataset_dict["file_name"])
    expected = (dataset_dict.get("height"), dataset_dict.get("width"))
    if None not in expected and image.shape[:2] != expected:
        raise DatasetError(
            f"{dataset_dict['file_name']}: image is {image.shape[1]}x{image.shape[0]} but the "
            f"dataset says {expected[1]}x{expected[0]} (width x height)"
        )
    return image


class PromptDatasetMapper:
    """Map a detectron2-style instance dict to the promptable training/evaluation sample."""

    def __init__(
        self,
        *,
        is_train: bool,
        image_size: int,
        resize_mode: str,
        max_prompts: int | None = None,
        prompt_type: str = "box",
        box_jitter: float = 0.1,
        num_points: int = 1,
        num_neg_points: int = 0,
        hflip: bool = True,
        vflip: bool = False,
        scale_jitter: Tuple[float, float] = (1.0, 1.0),
        eval_seed: int = 0,
    ) -> None:
        """``max_prompts``: None means 64 in training and no cap in evaluation."""
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        if max_prompts is not None and max_prompts <= 0:
            raise ValueError(f"max_prompts must be positive or None, got {max_prompts}")
        if num_points < 0 or num_neg_points < 0 or box_jitter < 0:
            raise ValueError("num_points, num_neg_points and box_jitter must be >= 0")
        if prompt_type != "box" and num_points < 1:
            raise ValueError(f"prompt_type {prompt_type!r} needs num_points >= 1")
        lo, hi = scale_jitter
        if not 0 < lo <= hi:
            raise ValueError(f"scale_jitter must satisfy 0 < low <= high, got {scale_jitter}")
        self.num_slots = points_per_prompt(prompt_type, num_points, num_neg_points)
        self.is_train = is_train
        self.image_size = int(image_size)
        self.resize_mode = resize_mode
        self.max_prompts = max_prompts
        self.prompt_type = prompt_type
        self.box_jitter = float(box_jitter)
        self.num_points = int(num_points)
        self.num_neg_points = int(num_neg_points)
        self.hflip, self.vflip = bool(hflip), bool(vflip)
        self.scale_jitter = (float(lo), float(hi))
        self.eval_seed = int(eval_seed)

    # ------------------------------------------------------------------ helpers
    def _plan(self, src_hw: Tuple[int, int], rng: np.random.Generator | None) -> GeometryPlan:
        out_hw = (self.image_size, self.image_size)
        if rng is None:
            return make_plan(src_hw, out_hw, self.resize_mode)
        lo, hi = self.scale_jitter
        return make_plan(
            src_hw,
            out_hw,
            self.resize_mode,
            scale=float(rng.uniform(lo, hi)) if hi > lo else lo,
            hflip=self.hflip and bool(rng.random() < 0.5),
            vflip=self.vflip and bool(rng.random() < 0.5),
            rng=rng,
        )

    def _decode(self, anns: Sequence[Dict[str, Any]], hw, source: str):
        """(masks view (Q, H, W), boxes (Q, 4)) of the non-empty ``anns`` (see decode_instances)."""
        masks, boxes, areas = decode_instances([a["segmentation"] for a in anns], *hw)
        keep = areas > 0
        if not keep.all():
            EMPTY_MASKS_DROPPED.add(int((~keep).sum()), source)
            masks, boxes = masks[keep], boxes[keep]
        return masks, boxes

    def _train_instances(self, anns, hw, plan: GeometryPlan, rng, source: str) -> np.ndarray:
        """Masks in the input frame of up to max_prompts random instances still visible."""
        cap = self.max_prompts or DEFAULT_TRAIN_MAX_PROMPTS
        order = rng.permutation(len(anns))
        kept: List[np.ndarray] = []
        total, start = 0, 0
        while total < cap and start < len(order):
            # Decode in chunks: augmentation may hide some instances, decoding all is wasteful.
            chunk = order[start : start + (cap - total) + 8]
            start += len(chunk)
            masks, boxes = self._decode([anns[i] for i in chunk], hw, source)
            moved = plan.apply_masks(masks, boxes)
            moved = moved[moved.any(axis=(1, 2))][: cap - total]
            kept.append(moved)
            total += len(moved)
        if not kept:
            return np.zeros((0, self.image_size, self.image_size), dtype=bool)
        return np.concatenate(kept, axis=0)

    # ------------------------------------------------------------------ call
    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        """See the module docstring for the returned keys."""
        d = copy.copy(dataset_dict)
        image = load_image_checked(d)
        hw = image.shape[:2]
        anns = [a for a in d.get("annotations", []) if not a.get("iscrowd", 0)]
        source = d["file_name"]
        if is_unlabeled_record(d):
            return self._unlabeled_sample(d, image)
        if self.is_train:
            rng = training_rng()
            plan = self._plan(hw, rng)
            gt_masks = self._train_instances(anns, hw, plan, rng, source)
            orig, fallback = None, None
        else:
            rng = eval_rng(d.get("image_id"), self.eval_seed)
            plan = self._plan(hw, None)
            if self.max_prompts is not None and len(anns) > self.max_prompts:
                subset = np.sort(rng.choice(len(anns), size=self.max_prompts, replace=False))
                anns = [anns[i] for i in subset]
            orig, boxes_orig = self._decode(anns, hw, source)
            gt_masks = plan.apply_masks(orig, boxes_orig)
            fallback = np.zeros((len(orig), 2), dtype=np.float64)
            vanished = ~gt_masks.any(axis=(1, 2))
            if vanished.any():
                fallback[vanished] = plan.apply_points(_interior_points_of(orig[vanished]))
        boxes, points, labels = sample_prompts(
            gt_masks,
            plan.input_hw,
            prompt_type=self.prompt_type,
            num_points=self.num_points,
            num_neg_points=self.num_neg_points,
            box_jitter=self.box_jitter,
            rng=rng,
            deterministic=not self.is_train,
            fallback_xy=fallback,
        )
        out = {
            "image": torch.from_numpy(plan.apply_image(image)).permute(2, 0, 1).float(),
            "image_id": d.get("image_id"),
            "file_name": d["file_name"],
            "height": hw[0],
            "width": hw[1],
            "input_hw": plan.input_hw,
            "gt_masks": torch.from_numpy(gt_masks),
            "boxes": torch.from_numpy(boxes),
            "points": torch.from_numpy(points),
            "point_labels": torch.from_numpy(labels),
        }
        if orig is not None:
            out["gt_masks_orig"] = torch.from_numpy(np.ascontiguousarray(orig))
        return out

    def _unlabeled_sample(self, d: Dict[str, Any], image: np.ndarray) -> Dict[str, Any]:
        """The augmented image of an unlabeled record, no prompts, and the seed of the prompts
        the distiller samples from its pseudo-labels."""
        if not self.is_train:
            raise DatasetError(
                f"{d['file_name']} is an unlabeled image (a folder dataset): it has no masks to "
                "evaluate against; give a labelled test set (COCO .json) in DATASETS.TEST"
            )
        rng = training_rng()
        plan = self._plan(image.shape[:2], rng)
        s, n = self.image_size, self.num_slots
        return {
            "image": torch.from_numpy(plan.apply_image(image)).permute(2, 0, 1).float(),
            "image_id": d.get("image_id"),
            "file_name": d["file_name"],
            "height": image.shape[0],
            "width": image.shape[1],
            "input_hw": plan.input_hw,
            "gt_masks": torch.zeros((0, s, s), dtype=torch.bool),
            "boxes": torch.zeros((0, 4), dtype=torch.float32),
            "points": torch.zeros((0, n, 2), dtype=torch.float32),
            "point_labels": torch.zeros((0, n), dtype=torch.int64),
            UNLABELED_KEY: True,
            "prompt_seed": int(rng.integers(0, 2**63 - 1)),
        }


def _interior_points_of(masks: np.ndarray) -> np.ndarray:
    """(Q, 2) xy of a pixel near the middle of each mask (median of its pixel coordinates,
    snapped to the nearest mask pixel), used when an object vanishes in the input frame."""
    out = np.zeros((masks.shape[0], 2), dtype=np.float64)
    for i, mask in enumerate(masks):
        ys, xs = np.nonzero(mask)
        mx, my = np.median(xs), np.median(ys)
        j = int(np.argmin((xs - mx) ** 2 + (ys - my) ** 2))
        out[i] = (xs[j], ys[j])
    return out

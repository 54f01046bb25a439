"""Pseudo-labels from the teacher: label-free distillation on folders of images.

For an unlabeled training sample (``sard.data.image_folder``; the mapper gives its augmented
model input, no prompts, and a ``prompt_seed``) the frozen teacher segments the model input
automatically, and those masks give the prompts and the Dice+BCE task-loss targets, exactly as
ground-truth masks do for labelled images:

1. **Masks.** ``SardAutomaticMaskGenerator`` (segment_anything's automatic mask generator) runs
   on the teacher, over the input's valid region at its model resolution: a grid of
   ``points_per_side``² single-point prompts, 3 masks each, kept when the predicted IoU exceeds
   ``pred_iou_thresh`` and the stability score IoU(logits > +offset, logits > -offset) is at
   least ``stability_score_thresh``, box NMS at ``box_nms_thresh`` (optional crop layers and
   small-region cleanup as SAM's). Then masks of fewer than ``min_area`` pixels or covering
   more than ``max_area_fraction`` of the valid region (background, the whole pile) are dropped.
   The teacher's image embedding is the one it computes for distillation (the taps of this
   input, from the teacher cache when cached), rounded to float16 as the cache stores it, so
   the masks are the same whether the embedding was cached or not, and the teacher's encoder
   runs once per input.
2. **Storage.** The masks of each model input are stored as RLE under the teacher cache's key
   (``PseudoLabelStore``): in memory, or beside the teacher cache on disk (CACHE.DIR), so
   later epochs (and later runs) never label an input twice.
3. **Prompts.** Up to ``max_prompts`` masks are drawn at random and prompts sampled from them
   with ``sard.data.prompts.sample_prompts`` (the mapper's settings: type, points, jitter), with
   a generator seeded by the sample's ``prompt_seed``: deterministic for a training seed.

Without augmentation every image is one model input; with random flips each flip state is its
own input (as for the teacher cache), and with random rescaling or cropping every view is
labelled anew, as the teacher's taps are recomputed for it.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, fields
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from sard.amg_settings import AmgSettings
from sard.data.image_folder import UNLABELED_KEY
from sard.data.masks import decode_many
from sard.data.prompts import sample_prompts
from sard.models.base import encode

from .pseudo_label_store import PseudoLabels, PseudoLabelStore
from .teacher_cache import image_key

logger = logging.getLogger(__name__)


def _from_node(cls, node, keys: Optional[Dict[str, str]] = None):
    """The settings dataclass ``cls`` read from a config node: field f from key ``keys[f]``
    (default F.upper()), cast to the type of f's default (int, float or str); fields without a
    key in the node keep their defaults."""
    keys = keys or {}
    given = {f: keys.get(f.name, f.name.upper()) for f in fields(cls)}
    return cls(**{f.name: type(f.default)(node[k]) for f, k in given.items() if k in node})


@dataclass(frozen=True)
class PseudoLabelSettings(AmgSettings):
    """MODEL.SARD.PSEUDO_LABELS (see ``sard.config.sard_config``): the automatic mask
    generator's settings (``AmgSettings``, SAM ViT-H's defaults) and the area filters."""

    min_area: int = 0
    max_area_fraction: float = 0.5

    @classmethod
    def from_cfg(cls, cfg) -> "PseudoLabelSettings":
        return _from_node(cls, cfg.MODEL.SARD.PSEUDO_LABELS)

    def identity(self, node) -> Dict[str, Any]:
        """What changes the masks: the settings read from ``node`` (MODEL.SARD.PSEUDO_LABELS),
        by field name, without points_per_batch (memory only)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name.upper() in node}
        out.pop("points_per_batch")
        return out


@dataclass(frozen=True)
class PromptSettings:
    """How prompts are sampled from masks (INPUT.PROMPT; the mapper's training settings)."""

    prompt_type: str = "box"
    num_points: int = 1
    num_neg_points: int = 0
    box_jitter: float = 0.1
    max_prompts: int = 64

    @classmethod
    def from_cfg(cls, cfg) -> "PromptSettings":
        return _from_node(cls, cfg.INPUT.PROMPT, keys={"prompt_type": "TYPE"})


class _PowerOfTwoLog:
    """Logs at the 1st, 2nd, 4th, 8th ... event, so long runs stay quiet."""

    def __init__(self) -> None:
        self.count = 0

    def due(self) -> bool:
        self.count += 1
        return self.count & (self.count - 1) == 0


@functools.lru_cache(maxsize=None)
def _embedded_predictor_class():
    """``SardPredictor`` whose image of a given size takes a given embedding instead of running
    the encoder (imported lazily: sard.export imports sard.distill)."""
    from sard.export.predictor import SardPredictor

    class EmbeddedPredictor(SardPredictor):
        def __init__(
            self, model: nn.Module, resize_mode: str, chunk_size: int, multimask: str
        ) -> None:
            super().__init__(
                model, resize_mode=resize_mode, chunk_size=chunk_size, multimask=multimask
            )
            self.given: Optional[Tuple[Tuple[int, int], torch.Tensor]] = None
            self.encoder_runs = 0

        @torch.no_grad()
        def set_torch_image(self, transformed_image, original_image_size) -> None:
            hw = tuple(int(v) for v in transformed_image.shape[-2:])
            if self.given is not None and self.given[0] == hw == tuple(original_image_size[:2]):
                self.reset_image()
                self.features = self.given[1]
                self.original_size = self.input_size = hw
                self.is_image_set = True
                return
            self.encoder_runs += 1  # a crop (CROP_N_LAYERS > 0) or no embedding given
            super().set_torch_image(transformed_image, original_image_size)

    return EmbeddedPredictor


class PseudoLabeler:
    """The teacher's automatic masks of unlabeled samples, stored per model input, turned into
    prompts and targets (see the module docstring).

    ``teacher``: the promptable teacher (a ``FrozenTeacher`` or the bare model); ``resize_mode``:
    the mapper's; ``multimask``: how the teacher was trained (MODEL.SARD.MULTIMASK_OUTPUT: a
    teacher trained "never" labels with its single mask, see ``sard.multimask``). Counters:
    ``encoder_runs`` (teacher image-encoder passes made here),
    ``labelled`` (inputs segmented), ``masks`` (pseudo-masks kept in total).
    """

    def __init__(
        self,
        teacher: nn.Module,
        settings: PseudoLabelSettings,
        prompts: PromptSettings,
        resize_mode: str,
        store: Optional[PseudoLabelStore] = None,
        multimask: str = "always",
    ) -> None:
        self.teacher = teacher
        self.multimask = multimask
        self.settings = settings
        self.prompts = prompts
        self.resize_mode = resize_mode
        self.store = store if store is not None else PseudoLabelStore()
        self.encoder_runs = 0
        self.labelled = 0
        self.masks = 0
        self._progress = _PowerOfTwoLog()
        self._empty = _PowerOfTwoLog()

    @property
    def model(self) -> nn.Module:
        """The bare teacher model (unwrapped from ``FrozenTeacher``)."""
        return getattr(self.teacher, "module", self.teacher)

    # ------------------------------------------------------------------ masks
    def labels_for(
        self, image: torch.Tensor, valid_hw: Tuple[int, int], embedding: Optional[torch.Tensor]
    ) -> PseudoLabels:
        """The pseudo-masks of one model input ``image`` (3, S, S) float 0-255 whose valid
        region is ``valid_hw``: from the store, else computed (and stored). ``embedding``: the
        teacher's (C, h, w) image embedding of this input when already computed, else None."""
        hw = (int(valid_hw[0]), int(valid_hw[1]))
        key = image_key(image, hw)
        found = self.store.get(key)
        if found is not None:
            return found
        with torch.autocast(image.device.type, enabled=False):
            labels = self._segment(image, hw, embedding)
        self.store.put(key, labels)
        self.labelled += 1
        self.masks += len(labels)
        if self._progress.due():
            logger.info(
                "pseudo-labels: %d model inputs segmented by the teacher so far, %.1f masks each",
                self.labelled,
                self.masks / self.labelled,
            )
        return labels

    def _segment(
        self, image: torch.Tensor, hw: Tuple[int, int], embedding: Optional[torch.Tensor]
    ) -> PseudoLabels:
        from sard.export.automatic import SardAutomaticMaskGenerator

        h, w = hw
        if embedding is None:
            feats = encode(self.teacher, image[None].float(), [hw])
            embedding = feats["image_embedding"][0]
            self.encoder_runs += 1
        predictor = _embedded_predictor_class()(
            self.model, self.resize_mode, self.settings.points_per_batch, self.multimask
        )
        # float16, as the teacher cache stores it: the same masks whether cached or not.
        predictor.given = (hw, embedding.detach().to(torch.float16).float()[None])
        s = self.settings
        generator = SardAutomaticMaskGenerator(predictor, settings=s, output_mode="coco_rle")
        pixels = image[:, :h, :w].detach().round().clamp(0, 255).to(torch.uint8)
        records = generator.generate(pixels.permute(1, 2, 0).cpu().numpy())
        self.encoder_runs += predictor.encoder_runs
        largest = s.max_area_fraction * h * w
        kept = [r for r in records if s.min_area <= r["area"] <= largest]
        if not kept and self._empty.due():
            logger.warning(self._empty_message(generator.last_counts, len(records)))
        return PseudoLabels(
            hw=hw,
            rles=[dict(r["segmentation"]) for r in kept],
            predicted_iou=[float(r["predicted_iou"]) for r in kept],
            stability_score=[float(r["stability_score"]) for r in kept],
        )

    def _empty_message(self, counts: Dict[str, Any], survivors: int) -> str:
        s, key = self.settings, "MODEL.SARD.PSEUDO_LABELS"
        base = f"pseudo-labels: the teacher left no mask on an unlabeled input ({self._empty.count}"
        base += " so far): "
        if counts.get("masks") and not counts.get("iou_kept"):
            top = counts.get("max_iou")
            return base + (
                f"no predicted IoU above {s.pred_iou_thresh:g} (highest {top:.2f}); lower "
                f"{key}.PRED_IOU_THRESH"
            )
        if counts.get("iou_kept") and not counts.get("stable_kept"):
            return base + (
                f"none stable at {s.stability_score_thresh:g}; lower {key}.STABILITY_SCORE_THRESH"
            )
        if survivors:
            return base + (
                f"{survivors} masks outside [{s.min_area}, {s.max_area_fraction:g} of the image];"
                f" check {key}.MIN_AREA and MAX_AREA_FRACTION"
            )
        return base + "every mask touched a crop edge or was removed by NMS"

    # ------------------------------------------------------------------ prompts
    def attach(self, sample: Dict[str, Any], labels: PseudoLabels) -> Dict[str, Any]:
        """A copy of the unlabeled ``sample`` whose prompts and ``gt_masks`` come from up to
        ``max_prompts`` of its pseudo-masks, drawn with its ``prompt_seed``."""
        side = int(sample["image"].shape[-1])
        frame_h = int(sample["image"].shape[-2])
        h, w = labels.hw
        rng = np.random.default_rng(int(sample["prompt_seed"]))
        order = rng.permutation(len(labels))[: self.prompts.max_prompts]
        chosen = decode_many([labels.rles[i] for i in np.sort(order)], h, w)
        masks = np.zeros((len(chosen), frame_h, side), dtype=bool)
        masks[:, :h, :w] = chosen
        p = self.prompts
        boxes, points, point_labels = sample_prompts(
            masks,
            (h, w),
            prompt_type=p.prompt_type,
            num_points=p.num_points,
            num_neg_points=p.num_neg_points,
            box_jitter=p.box_jitter,
            rng=rng,
            deterministic=False,
        )
        out = dict(sample)
        out.update(
            gt_masks=torch.from_numpy(masks),
            boxes=torch.from_numpy(boxes),
            points=torch.from_numpy(points),
            point_labels=torch.from_numpy(point_labels),
        )
        return out

    def label_batch(
        self,
        batched_inputs: List[Dict[str, Any]],
        images: torch.Tensor,
        embeddings: Optional[torch.Tensor],
    ) -> List[Dict[str, Any]]:
        """``batched_inputs`` with every unlabeled sample given its pseudo-label prompts.

        ``images``: the stacked model inputs (B, 3, S, S); ``embeddings``: the teacher's
        (B, C, h, w) image embeddings of them when computed already (else None).
        """
        out = list(batched_inputs)
        for i, sample in enumerate(batched_inputs):
            if not sample.get(UNLABELED_KEY, False):
                continue
            embedding = embeddings[i] if embeddings is not None else None
            labels = self.labels_for(images[i], tuple(sample["input_hw"]), embedding)
            out[i] = self.attach(sample, labels)
        return out

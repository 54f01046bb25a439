"""SARDDistiller: a frozen teacher, a trainable student and a distillation head in one module.

Contract (detectron2's): ``forward(batched_inputs)`` takes a list of mapper dicts. In training it
returns a dict of named, already weighted losses; in eval it returns one dict per image with
detectron2-style predictions made by the STUDENT ALONE (the teacher never runs at inference):

* promptable students: ``{"pred_masks": bool (Q, H, W), "scores": (Q,)}`` at original resolution,
  one mask per prompt in prompt order (the best of the 3 masks by predicted IoU);
* semantic students: ``{"sem_seg": (K, H, W)}`` class scores at original resolution.

The teacher is held by a ``FrozenTeacher`` (no grad, always eval, absent from ``state_dict`` and
``parameters()``), so an optimizer over ``distiller.parameters()`` trains the student and the head
only, and a saved checkpoint holds ``student.*`` and ``head.*`` keys only.

Padded images (SAM's "longest_pad", the semantic "fit_pad"): each image's valid region
(the mapper's ``input_hw``) goes to W(i) and to every distillation loss that handles padding
(``handles_padding``: SARD/uniform, CWD, MGD) as a mask of the cells that show the image
(``sard.structure.valid_cells``), so padding is neither structure nor a target.

Label-free training: samples of unlabeled images (``unlabeled`` True, no prompts) get their
prompts and task-loss targets from the teacher's pseudo-masks of that very input
(``pseudo_labeler``, ``sard.distill.pseudo_labels``) before the student runs; the teacher's
embedding computed for distillation is reused for them, so its encoder runs once per input.
"""

from __future__ import annotations

import numbers
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from sard.data.image_folder import UNLABELED_KEY
from sard.losses import resize_labels, resize_to
from sard.models.base import Prompts, encode
from sard.multimask import check_multimask_mode, use_multimask

from .batching import collate_prompts, stack_images
from .teacher_cache import TeacherCache, image_key, stack_entries


class SARDDistiller(nn.Module):
    """Teacher -> W(i) -> student, with the distillation method chosen by ``method``.

    Args (keyword-only):
        teacher: a ``FrozenTeacher``-wrapped model (or None for ``method="none"``).
        student: the trainable model (same kind as the teacher: promptable or semantic).
        distill_loss: module from ``sard.losses.build_distillation_loss`` (None for "none").
        task_loss: promptable Dice+BCE loss module (semantic students return their own loss).
        method: "sard" | "uniform" | "cwd" | "mgd" | "kd" | "skd" | "dkd" | "reviewkd" | "none".
        teacher_tap / student_tap: names of the distilled taps.
        mu: weight of the task loss.
        review_taps: stage taps for ReviewKD.
        cache: optional ``TeacherCache``.
        test_prompt_chunk: prompts decoded at once at evaluation.
        multimask: promptable models decode 3 candidate masks and keep the best ("always": the
            task loss supervises the best of the 3, inference keeps the one with the highest
            predicted IoU), SAM's single mask ("never"), or SAM's rule ("auto": 3 only when
            every prompt of the batch is one point, the ambiguous case; box prompts get one).
        pseudo_labeler: a ``PseudoLabeler`` for unlabeled samples (label-free distillation);
            with it the teacher is needed even for ``method="none"`` (pseudo-labels alone).
        distill_warmup_iters: N > 0 ramps every distillation term linearly, by
            min(1, (it + 1) / N) at iteration it (0-based), as DKD's and ReviewKD's official code
            ramp theirs; the task loss is never ramped. The iteration comes from
            ``self.iteration``, which trainers set before each step (the lean trainer does), or
            else from detectron2's event storage.
    """

    def __init__(
        self,
        *,
        teacher: Optional[nn.Module],
        student: nn.Module,
        distill_loss: Optional[nn.Module],
        task_loss: Optional[nn.Module],
        method: str,
        teacher_tap: str,
        student_tap: str,
        mu: float = 1.0,
        review_taps: Optional[List[str]] = None,
        cache: Optional[TeacherCache] = None,
        test_prompt_chunk: int = 64,
        distill_warmup_iters: int = 0,
        multimask: str = "always",
        pseudo_labeler=None,
    ) -> None:
        super().__init__()
        self.multimask = check_multimask_mode(multimask)
        if method != "none" and (teacher is None or distill_loss is None):
            raise ValueError(f"method {method!r} needs a teacher and a distillation loss")
        if pseudo_labeler is not None and teacher is None:
            raise ValueError("pseudo-labels need a teacher")
        self.teacher = teacher
        self.student = student
        self.head = distill_loss
        self.task_loss = task_loss
        self.method = method
        self.teacher_tap = teacher_tap
        self.student_tap = student_tap
        self.mu = mu
        self.review_taps = list(review_taps or [])
        self.cache = cache
        self.test_prompt_chunk = test_prompt_chunk
        warmup = distill_warmup_iters
        if isinstance(warmup, bool) or not isinstance(warmup, numbers.Integral) or warmup < 0:
            raise ValueError(f"distill_warmup_iters must be an int >= 0, got {warmup!r}")
        self.distill_warmup_iters = int(distill_warmup_iters)
        self.iteration: Optional[int] = None  # set by the trainer before each training step
        self.promptable = hasattr(student, "predict_masks")
        self.pseudo_labeler = pseudo_labeler

    def use_multimask(self, labels: torch.Tensor) -> bool:
        """Whether prompts with these labels (..., N) are decoded into 3 masks: the rule of
        ``sard.multimask.use_multimask`` under ``multimask``."""
        return use_multimask(self.multimask, labels)

    @property
    def device(self) -> torch.device:
        return next(self.student.parameters()).device

    @property
    def consumes(self) -> str:
        return "none" if self.head is None else getattr(self.head, "consumes", "features")

    # ------------------------------------------------------------------ teacher side
    def _teacher_image_outputs(
        self, images: torch.Tensor, valid_hw: Optional[List] = None
    ) -> Dict[str, torch.Tensor]:
        """Teacher taps (+ W for SARD, + semantic scores for semantic logit methods), cached."""
        if self.cache is not None:
            # The valid region is part of the key: the teacher zeroes the padding beyond it.
            keys = [image_key(im, hw) for im, hw in zip(images, valid_hw or [None] * len(images))]
            entries = self.cache.get(keys, images.shape[1:])
            if all(e is not None for e in entries):
                return stack_entries(entries, images.device, torch.float32)
        with torch.no_grad():
            outputs = self._run_teacher(images, valid_hw)
        if self.cache is not None:
            self.cache.put(keys, outputs, images.shape[1:])
        return outputs

    def _run_teacher(
        self, images: torch.Tensor, valid_hw: Optional[List]
    ) -> Dict[str, torch.Tensor]:
        """Teacher taps, semantic scores and, for a head whose W is a structure map, the head's
        W of the teacher tap on each image's valid cells (cached with the taps)."""
        taps = [self.teacher_tap] + [t for t in self.review_taps if t != self.teacher_tap]
        if self.promptable:
            feats = encode(self.teacher, images, valid_hw)
            out = {name: feats[name] for name in taps if name in feats}
        else:
            sem = self.teacher.forward_semantic(images)
            out = {name: sem.features[name] for name in taps if name in sem.features}
            out["sem_logits"] = sem.sem_logits
        # A head whose W is a structure map says so (``structure_settings``); it computes W.
        if getattr(self.head, "structure_settings", None) is not None:
            feats = out[self.teacher_tap]
            out["structure_weight"] = self.head.weight_map(
                feats, _valid_mask(valid_hw, images, feats)
            )
        return out

    # ------------------------------------------------------------------ training
    def forward(self, batched_inputs: List[Dict]):
        if not self.training:
            return self.inference(batched_inputs)
        if self.promptable:
            return self._forward_promptable(batched_inputs)
        return self._forward_semantic(batched_inputs)

    def _ramped(self, terms: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Distillation terms times the warm-up factor min(1, (it + 1) / N) (N = 0: as is)."""
        if self.distill_warmup_iters == 0:
            return terms
        ramp = min(1.0, (self._current_iteration() + 1) / self.distill_warmup_iters)
        return {name: value * ramp for name, value in terms.items()}

    def _current_iteration(self) -> int:
        """The training iteration: ``self.iteration``, else detectron2's event storage."""
        if self.iteration is not None:
            return int(self.iteration)
        try:
            from detectron2.utils.events import get_event_storage

            return int(get_event_storage().iter)
        except (ImportError, AssertionError):
            raise RuntimeError(
                "distill_warmup_iters > 0 needs the training iteration: set "
                "distiller.iteration before each step (sard's trainer does), or train inside "
                "a detectron2 trainer"
            ) from None

    def _distill(
        self,
        s_feats: Dict[str, torch.Tensor],
        t_out: Dict[str, torch.Tensor],
        s_logits: Optional[torch.Tensor],
        t_logits_fn,
        targets=None,
        valid_fn=None,
    ) -> Dict[str, torch.Tensor]:
        """The head's terms. ``valid_fn(reference, per)``: the valid mask (None: no padding) of
        a map ``reference`` with one entry per image (per="image": features, class logits) or
        per prompt (per="prompt": mask logits), given to heads that handle padding."""
        kind = self.consumes
        if kind == "none":
            return {}
        padding = {}
        if kind == "features":
            teacher = t_out[self.teacher_tap]
            if valid_fn is not None and getattr(self.head, "handles_padding", False):
                padding = {"valid_mask": valid_fn(teacher, "image")}
            return self.head(
                s_feats[self.student_tap],
                teacher,
                weight=t_out.get("structure_weight"),
                **padding,
            )
        if kind == "multi_features":
            s_list = [s_feats[t] for t in self.review_taps]
            t_list = [t_out[t] for t in self.review_taps]
            return self.head(s_list, t_list)
        if kind == "logits":
            teacher = t_logits_fn()
            if valid_fn is not None and getattr(self.head, "handles_padding", False):
                padding = {
                    "valid_mask": valid_fn(teacher, "prompt" if self.promptable else "image")
                }
            return self.head(s_logits, teacher, targets=targets, **padding)
        raise ValueError(f"unknown distillation input kind {kind!r}")

    def _with_pseudo_labels(self, batched_inputs: List[Dict]):
        """(inputs, teacher outputs): unlabeled samples given prompts and targets from the
        teacher's pseudo-masks; the teacher's image outputs of the batch when computed here
        (method != "none"), else None."""
        if not any(x.get(UNLABELED_KEY, False) for x in batched_inputs):
            return batched_inputs, None
        if self.pseudo_labeler is None:
            raise RuntimeError(
                "an unlabeled image reached the distiller without pseudo-labels: set "
                "MODEL.SARD.PSEUDO_LABELS.ENABLED True to train on folders of images"
            )
        images = stack_images(batched_inputs, self.device)
        valid_hw = [tuple(x["input_hw"]) for x in batched_inputs]
        t_out = None
        if self.method != "none":
            t_out = self._teacher_image_outputs(images, valid_hw)
        embeddings = (t_out or {}).get("image_embedding")
        return self.pseudo_labeler.label_batch(batched_inputs, images, embeddings), t_out

    def _forward_promptable(self, batched_inputs: List[Dict]) -> Dict[str, torch.Tensor]:
        batched_inputs, t_out = self._with_pseudo_labels(batched_inputs)
        batch = collate_prompts(batched_inputs, self.device)
        valid_hw = [tuple(x["input_hw"]) for x in batched_inputs]
        s_feats = encode(self.student, batch.images, valid_hw)
        multimask = self.use_multimask(batch.prompts.labels[batch.valid])
        s_out = self.student.predict_masks(s_feats, batch.prompts, multimask=multimask)
        size = batch.images.shape[-2:]
        # Compare at input resolution, as SAM trains: tiny objects vanish at 1/4 resolution.
        logits = resize_to(s_out.mask_logits, size)
        losses = self.task_loss(logits, batch.gt_masks, batch.valid, s_out.iou_pred)
        losses = {k: v * self.mu for k, v in losses.items()}
        if self.method == "none":
            return losses
        if t_out is None:  # (already computed for pseudo-labels otherwise)
            t_out = self._teacher_image_outputs(batch.images, valid_hw)

        def teacher_logits() -> torch.Tensor:
            with torch.no_grad():
                feats = {self.teacher_tap: t_out[self.teacher_tap]}
                t_pred = self.teacher.predict_masks(feats, batch.prompts, multimask=multimask)
            return resize_to(t_pred.mask_logits, size)[batch.valid]

        # Per-image valid masks; mask logits are per prompt (its image's mask).
        prompt_image = torch.nonzero(batch.valid)[:, 0]

        def valid_fn(reference: torch.Tensor, per: str) -> Optional[torch.Tensor]:
            mask = _valid_mask(valid_hw, batch.images, reference)
            return mask[prompt_image] if mask is not None and per == "prompt" else mask

        terms = self._distill(
            s_feats, t_out, logits[batch.valid], teacher_logits, valid_fn=valid_fn
        )
        losses.update(self._ramped(terms))
        return losses

    def _forward_semantic(self, batched_inputs: List[Dict]) -> Dict[str, torch.Tensor]:
        images = stack_images(batched_inputs, self.device)
        targets = [x["sem_seg"].to(self.device) for x in batched_inputs]
        s_out = self.student.forward_semantic(images, targets)
        losses = {k: v * self.mu for k, v in (s_out.losses or {}).items()}
        if self.method == "none":
            return losses
        valid_hw = [tuple(x["input_hw"]) for x in batched_inputs if "input_hw" in x]
        valid_hw = valid_hw if len(valid_hw) == len(batched_inputs) else None
        t_out = self._teacher_image_outputs(images, valid_hw)

        # Families return scores of different kinds (Mask2Former: non-negative class scores);
        # each converts its own to logits for the logit-based baselines.
        def teacher_logits() -> torch.Tensor:
            t = self.teacher.kd_logits(t_out["sem_logits"])
            return resize_to(t, s_out.sem_logits.shape[-2:])

        target = resize_labels(torch.stack(targets), s_out.sem_logits.shape[-2:])
        s_logits = self.student.kd_logits(s_out.sem_logits)
        terms = self._distill(
            s_out.features,
            t_out,
            s_logits,
            teacher_logits,
            target,
            valid_fn=lambda reference, per: _valid_mask(valid_hw, images, reference),
        )
        losses.update(self._ramped(terms))
        return losses

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def inference(self, batched_inputs: List[Dict]) -> List[Dict[str, torch.Tensor]]:
        """Student-only predictions at each image's original resolution."""
        if self.promptable:
            return [self._infer_promptable(x) for x in batched_inputs]
        images = stack_images(batched_inputs, self.device)
        results = []
        for i, x in enumerate(batched_inputs):
            scores = self.student.semantic_inference(images[i : i + 1])  # canvas size
            # Drop the canvas padding before resizing back, or a padded image's predictions
            # would be stretched over the original (as detectron2's sem_seg_postprocess crops).
            ih, iw = (int(v) for v in x.get("input_hw", scores.shape[-2:]))
            scores = resize_to(scores[..., :ih, :iw], (int(x["height"]), int(x["width"])))
            results.append({"sem_seg": scores[0]})
        return results

    def _infer_promptable(self, x: Dict) -> Dict[str, torch.Tensor]:
        image = x["image"].to(self.device, torch.float32)[None]
        feats = encode(self.student, image, [tuple(x["input_hw"])])
        h, w = int(x["height"]), int(x["width"])
        points, labels = x["points"].to(self.device), x["point_labels"].to(self.device)
        multimask = self.use_multimask(labels)
        masks, scores = [], []
        for start in range(0, points.shape[0], self.test_prompt_chunk):
            sl = slice(start, start + self.test_prompt_chunk)
            prompts = Prompts(points[None, sl], labels[None, sl])
            out = self.student.predict_masks(feats, prompts, multimask=multimask)
            best = out.iou_pred[0].argmax(dim=-1)  # (q,)
            idx = torch.arange(best.numel(), device=best.device)
            logits = out.mask_logits[0, idx, best]  # (q, h', w')
            full = self.student.postprocess_masks(logits[None], tuple(x["input_hw"]), (h, w))[0]
            masks.append(full > 0)
            scores.append(out.iou_pred[0, idx, best])
        if not masks:
            return {"pred_masks": torch.zeros(0, h, w, dtype=torch.bool), "scores": torch.zeros(0)}
        return {"pred_masks": torch.cat(masks).cpu(), "scores": torch.cat(scores).cpu()}


def _valid_mask(
    valid_hw: Optional[List], images: torch.Tensor, reference: torch.Tensor
) -> Optional[torch.Tensor]:
    """(B, 1, h, w) bool: the cells of a map ``reference`` (..., h, w) over the whole input
    frame ``images`` (B, 3, H, W) that show each image (``sard.structure.valid_cells``); None
    when nothing is padded (every valid_hw is the whole frame) or valid_hw is unknown."""
    if valid_hw is None:
        return None
    frame = tuple(images.shape[-2:])
    if all(tuple(int(v) for v in hw) == frame for hw in valid_hw):
        return None
    from sard.structure import valid_cells

    return valid_cells(valid_hw, frame, reference.shape[-2:], device=reference.device)

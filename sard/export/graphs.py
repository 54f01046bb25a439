"""The student as exportable graphs: plain tensor-in, tensor-out modules with no Python control
flow that depends on tensor values or on the batch / prompt counts.

Promptable students (SAM, EfficientSAM) become two graphs, as SAM's own ONNX deployment does:

* ``image_encoder``: ``images`` (B, 3, S, S) float32 0-255 RGB, already resized (and, for SAM,
  zero-padded bottom/right) as the data mapper does -> ``image_embedding`` (B, D, S/p, S/p),
  D the decoder width and p the patch (256 and 16 in the official sizes).
  Normalisation (mean/std) happens inside the graph, exactly as ``extract_features``.
* ``mask_decoder``: ``image_embedding``, ``points`` (B, Q, N, 2) float32 xy in model-input pixels,
  ``labels`` (B, Q, N) int64 (-1 pad, 0 bg, 1 fg, 2/3 box corners) -> ``mask_logits``
  (B, Q, 4, S/4, S/4) and ``iou_pred`` (B, Q, 4). Output 0 is the single-mask output, 1..3 the
  multimask outputs: ``predict_masks(multimask=False)`` is ``[:, :, :1]``, ``multimask=True`` is
  ``[:, :, 1:]``. SAM's decoder also takes ``mask_input`` (B, Q, 1, S/4, S/4), or
  (1, 1, 1, S/4, S/4) broadcast, and ``has_mask_input`` (1,) float:
  dense = has * downscale(mask) + (1 - has) * no_mask.

Semantic students (Mask2Former, ViT) become one graph, ``semantic``: ``images`` (B, 3, H, W)
0-255 -> ``sem_logits`` (B, K, H/4, W/4), what ``forward_semantic(images).sem_logits`` returns.

Each graph module registers only the submodules it runs, so a traced graph carries exactly the
student parameters it uses. The ``reference`` functions compute the same outputs through the
student's public API; export verification compares the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import torch
import torch.nn as nn

from sard.models.base import PROMPTABLE_FAMILIES, Prompts
from sard.prompt_labels import LABEL_BOX_TL, LABEL_PAD

NUM_MASK_OUTPUTS = 4  # single-mask output + 3 multimask outputs


class ImageEncoderGraph(nn.Module):
    """images (B, 3, S, S) 0-255 -> image_embedding: ``image_encoder(preprocess(images))``."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.image_encoder = student.image_encoder
        # A bound method, not a submodule: the mean/std buffers become graph constants.
        self._preprocess = student.preprocess

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(self._preprocess(images))


def _pad_to(points: torch.Tensor, labels: torch.Tensor, n: int) -> Tuple[torch.Tensor, ...]:
    """Append padding points ((-1, -1), label -1) and keep the first ``n``: any N <= n works
    in one traced graph because the pad is built by broadcasting, not from a Python count."""
    pad_points = (points[:, :, :1] * 0 - 1).expand(-1, -1, n, -1)
    pad_labels = (labels[:, :, :1] * 0 + LABEL_PAD).expand(-1, -1, n)
    points = torch.cat([points, pad_points], dim=2)[:, :, :n]
    labels = torch.cat([labels, pad_labels], dim=2)[:, :, :n]
    return torch.where((labels == LABEL_PAD).unsqueeze(-1), -1.0, points), labels


class EfficientSamDecoderGraph(nn.Module):
    """(image_embedding, points, labels) -> (mask_logits (B, Q, 4, 4h, 4w), iou_pred (B, Q, 4)).

    Prompts hold at most 6 points; shorter prompts are padded inside the graph as
    ``EfficientSam.predict_masks`` pads them (label -1 at (-1, -1)).
    """

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.prompt_encoder = student.prompt_encoder
        self.mask_decoder = student.mask_decoder
        self.image_size = int(student.image_size)
        self.max_points = int(student.decoder_max_num_input_points)

    def forward(
        self, image_embedding: torch.Tensor, points: torch.Tensor, labels: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        b, q = labels.shape[:2]
        points, labels = _pad_to(points.float(), labels.long(), self.max_points)
        size = (self.image_size, self.image_size)
        sparse = self.prompt_encoder(points.flatten(0, 1), labels.flatten(0, 1), size)
        # The two-way transformer rewrites the image tokens per prompt: one copy each.
        image = image_embedding.repeat_interleave(q, dim=0)
        dense_pe = self.prompt_encoder.get_dense_pe(tuple(image_embedding.shape[-2:]))
        masks, iou = self.mask_decoder(image, dense_pe, sparse)
        return masks.unflatten(0, (b, q)), iou.unflatten(0, (b, q))


class SamDecoderGraph(nn.Module):
    """(image_embedding, points, labels, mask_input, has_mask_input) -> (mask_logits, iou_pred).

    As SAM's ONNX decoder, the caller pads: a prompt set with no box needs one padding point
    ((0, 0), label -1) appended, which ``SamModel.predict_masks`` adds itself.
    """

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.prompt_encoder = student.prompt_encoder
        self.mask_decoder = student.mask_decoder
        # SamModel's own prompt embedding and decoding, run on this module's submodules (they
        # only read self.prompt_encoder / self.mask_decoder), so the graph cannot drift from it.
        cls = type(student)
        self._embed_points = cls.embed_points.__get__(self)
        self._decode = cls.decode_embedded_prompts.__get__(self)

    def forward(
        self,
        image_embedding: torch.Tensor,
        points: torch.Tensor,
        labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        b, q = labels.shape[:2]
        sparse = self._embed_points(points.float().flatten(0, 1), labels.long().flatten(0, 1))
        masked = self.prompt_encoder.mask_downscaling(mask_input.flatten(0, 1))
        no_mask = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        has = has_mask_input.reshape(1, 1, 1, 1)
        dense = has * masked + (1 - has) * no_mask
        masks, iou = self._decode(image_embedding, sparse, dense, q)
        return masks.unflatten(0, (b, q)), iou.unflatten(0, (b, q))


class SemanticGraph(nn.Module):
    """images (B, 3, H, W) 0-255 -> sem_logits (B, K, H/4, W/4) of ``forward_semantic``."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.student.forward_semantic(images).sem_logits


@dataclass
class GraphSpec:
    """One graph to export: its module, I/O names, dynamic axes, and test inputs.

    ``trace_inputs`` are what the graph is traced with; ``check_inputs`` are further cases at
    other batch/prompt counts. ``reference(*inputs)`` computes the outputs through the
    student's public API.
    """

    name: str
    module: nn.Module
    input_names: List[str]
    output_names: List[str]
    dynamic_axes: Dict[str, Dict[int, str]]
    trace_inputs: Tuple[torch.Tensor, ...]
    check_inputs: List[Tuple[torch.Tensor, ...]]
    reference: Callable[..., Tuple[torch.Tensor, ...]]


def random_images(batch: int, hw: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """(B, 3, H, W) float 0-255 RGB noise."""
    return torch.rand(batch, 3, int(hw[0]), int(hw[1]), generator=generator) * 255.0


def random_prompts(
    batch: int, prompts: int, points: int, size: int, generator: torch.Generator, box: bool
) -> Tuple[torch.Tensor, torch.Tensor]:
    """points (B, Q, N, 2) inside [0, size), labels (B, Q, N): a box (2, 3) first when ``box``,
    then foreground / background clicks; the last point of every other prompt is padding."""
    xy = torch.rand(batch, prompts, points, 2, generator=generator) * (size - 1)
    labels = torch.randint(0, 2, (batch, prompts, points), generator=generator)
    if box:
        lo, hi = xy[:, :, :2].min(dim=2).values, xy[:, :, :2].max(dim=2).values
        xy[:, :, 0], xy[:, :, 1] = lo, hi
        labels[:, :, 0], labels[:, :, 1] = 2, 3
    if points > (3 if box else 1):
        labels[:, ::2, -1] = LABEL_PAD
    return xy, labels


def _promptable_reference(student: nn.Module):
    sam = student.family == "sam"

    def reference(embedding, points, labels, mask_input=None, has_mask=None):
        feats = {"image_embedding": embedding}
        if sam and not (labels >= LABEL_BOX_TL).any():
            # The graph's caller appended SAM's padding point; predict_masks appends its own.
            points, labels = points[:, :, :-1], labels[:, :, :-1]
        prompts = Prompts(points, labels)
        kwargs = {}
        if has_mask is not None and float(has_mask.reshape(-1)[0]) > 0:
            kwargs["mask_inputs"] = mask_input
        single = student.predict_masks(feats, prompts, multimask=False, **kwargs)
        multi = student.predict_masks(feats, prompts, multimask=True, **kwargs)
        return (
            torch.cat([single.mask_logits, multi.mask_logits], dim=2),
            torch.cat([single.iou_pred, multi.iou_pred], dim=2),
        )

    return reference


def promptable_specs(student: nn.Module, seed: int = 0) -> List[GraphSpec]:
    """Encoder and decoder specs of a SAM or EfficientSAM student.

    Traced at B=1, Q=2; checked at B=2, Q=5 (and B=3 for the encoder) with other point counts,
    so a graph that baked a size in fails verification.
    """
    g = torch.Generator().manual_seed(seed)
    s = int(student.image_size)
    # Logits are 4x the feature grid; both come from the student (patch 4 or 8 SAM students,
    # narrow decoders), not from the official sizes' patch 16 and width 256.
    grid = s // (4 * int(student.mask_downsample))  # patch = 4 x the logits' downsampling
    channels = int(student.tap_channels["image_embedding"])
    enc = GraphSpec(
        name="image_encoder",
        module=ImageEncoderGraph(student),
        input_names=["images"],
        output_names=["image_embedding"],
        dynamic_axes={"images": {0: "batch"}, "image_embedding": {0: "batch"}},
        trace_inputs=(random_images(1, (s, s), g),),
        check_inputs=[(random_images(2, (s, s), g),)],
        reference=lambda images: (student.extract_features(images)["image_embedding"],),
    )
    embedding = lambda b: torch.randn(b, channels, grid, grid, generator=g)  # noqa: E731
    prompt_axes = {0: "batch", 1: "prompts", 2: "points"}
    axes = {
        "image_embedding": {0: "batch"},
        "points": prompt_axes,
        "labels": prompt_axes,
        "mask_logits": {0: "batch", 1: "prompts"},
        "iou_pred": {0: "batch", 1: "prompts"},
    }
    if student.family == "efficient_sam":
        dec_module: nn.Module = EfficientSamDecoderGraph(student)
        names = ["image_embedding", "points", "labels"]

        def case(b: int, q: int, n: int, box: bool) -> Tuple[torch.Tensor, ...]:
            return (embedding(b), *random_prompts(b, q, n, s, g, box))

        trace = case(1, 2, 3, True)
        checks = [case(2, 5, 4, True), case(1, 3, 1, False), case(2, 1, 6, False)]
    else:
        dec_module = SamDecoderGraph(student)
        names = ["image_embedding", "points", "labels", "mask_input", "has_mask_input"]

        def case(b: int, q: int, n: int, box: bool, mask: bool = False) -> Tuple[torch.Tensor, ...]:
            # Point-only prompts get SAM's extra padding point, as predict_masks adds it.
            pts, labels = random_prompts(b, q, n, s, g, box)
            if not box:
                pts = torch.cat([pts, torch.zeros(b, q, 1, 2)], dim=2)
                labels = torch.cat([labels, torch.full((b, q, 1), LABEL_PAD)], dim=2)
            if mask:
                masks = torch.randn(b, q, 1, 4 * grid, 4 * grid, generator=g) * 4
                return (embedding(b), pts, labels, masks, torch.ones(1))
            no_mask = torch.zeros(1, 1, 1, 4 * grid, 4 * grid)
            return (embedding(b), pts, labels, no_mask, torch.zeros(1))

        trace = case(1, 2, 3, True, mask=True)
        checks = [case(2, 5, 4, True), case(1, 3, 1, False), case(2, 4, 2, True, mask=True)]
        axes["mask_input"] = {0: "mask_batch", 1: "mask_prompts"}
    dec = GraphSpec(
        name="mask_decoder",
        module=dec_module,
        input_names=names,
        output_names=["mask_logits", "iou_pred"],
        dynamic_axes=axes,
        trace_inputs=trace,
        check_inputs=checks,
        reference=_promptable_reference(student),
    )
    return [enc, dec]


def semantic_specs(student: nn.Module, seed: int = 0) -> List[GraphSpec]:
    """The single semantic graph, traced at B=1 and checked at B=2 (fixed H, W)."""
    g = torch.Generator().manual_seed(seed)
    hw = tuple(int(v) for v in student.image_size)
    return [
        GraphSpec(
            name="semantic",
            module=SemanticGraph(student),
            input_names=["images"],
            output_names=["sem_logits"],
            dynamic_axes={"images": {0: "batch"}, "sem_logits": {0: "batch"}},
            trace_inputs=(random_images(1, hw, g),),
            check_inputs=[(random_images(2, hw, g),)],
            reference=lambda images: (student.forward_semantic(images).sem_logits,),
        )
    ]


def graph_specs(student: nn.Module, seed: int = 0) -> List[GraphSpec]:
    """The export graphs of any sard student (promptable: 2, semantic: 1)."""
    family = getattr(student, "family", None)
    if family in PROMPTABLE_FAMILIES:
        return promptable_specs(student, seed)
    if hasattr(student, "forward_semantic"):
        return semantic_specs(student, seed)
    raise TypeError(
        f"cannot export a {type(student).__name__} (family {family!r}): expected a promptable "
        f"student ({', '.join(PROMPTABLE_FAMILIES)}) or a semantic one with forward_semantic"
    )

"""Switch off one suspect of an image encoder at a time, to see what puts W(i) on the image edge.

Two parts of SAM's and EfficientSAM's encoders can make the features at the image border
differ from those inside for no reason in the scene:

* the neck's 3x3 convolution pads with zeros, so the outer ring of cells sees a dark frame;
* absolute position embeddings add a per-cell vector that can vary most at the edges
  (SAM initialises them to zero, EfficientSAM to small random values; training shapes them).

``probe_encoder(model, neck_padding="replicate")`` pads the neck like the structure map pads
(the nearest cell repeated), ``zero_pos_embed=True`` removes the position embeddings. Both
change the model in place and are for measurements only: weights are kept, so a model probed
this way computes features it was not trained on.
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn as nn

NECK_PADDINGS = ("zeros", "replicate", "reflect")


def image_encoder(model: nn.Module) -> nn.Module:
    """The image encoder of a promptable model (SAM or EfficientSAM family)."""
    encoder = getattr(model, "image_encoder", None)
    if encoder is None or not hasattr(encoder, "neck"):
        raise TypeError(f"{type(model).__name__} has no image_encoder with a neck to probe")
    return encoder


@torch.no_grad()
def probe_encoder(
    model: nn.Module, neck_padding: str = "zeros", zero_pos_embed: bool = False
) -> List[str]:
    """Apply the probes in place; returns what was changed, for the report."""
    if neck_padding not in NECK_PADDINGS:
        raise ValueError(f"neck_padding must be one of {NECK_PADDINGS}, got {neck_padding!r}")
    encoder = image_encoder(model)
    changed = []
    if neck_padding != "zeros":
        for conv in encoder.neck.modules():
            if isinstance(conv, nn.Conv2d) and conv.kernel_size != (1, 1):
                conv.padding_mode = neck_padding
                changed.append(f"neck {tuple(conv.kernel_size)} conv padding: {neck_padding}")
    if zero_pos_embed:
        pos = getattr(encoder, "pos_embed", None)
        if pos is None:
            raise TypeError(f"{type(encoder).__name__} has no absolute position embedding")
        pos.zero_()
        changed.append("absolute position embedding: zero")
    return changed

"""Pictures of W(i): the image beside W, E, C and D laid over it as heat maps (PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .structure_map import StructureMap


def _image_as_rgb(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """uint8 (H, W, 3) from an (H, W, 3) / (H, W) array or tensor, or a (3, H, W) tensor.

    uint8 is taken as 0-255; floats in [0, 1] are scaled to 0-255, larger floats taken as 0-255.
    """
    if isinstance(image, torch.Tensor):
        array = image.detach().cpu()
        if array.dim() == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
            array = array.permute(1, 2, 0)
        array = array.float().numpy() if array.dtype == torch.bfloat16 else array.numpy()
    elif isinstance(image, np.ndarray):
        array = image
    else:
        raise TypeError(f"image must be a numpy array or torch.Tensor, got {type(image).__name__}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3):
        raise ValueError(f"image must be (H, W, 3), (H, W) or (3, H, W), got {array.shape}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if array.dtype == np.uint8:
        return array
    array = array.astype(np.float32)
    if array.size and float(np.nanmax(array)) <= 1.0:
        array = array * 255.0
    return np.clip(np.nan_to_num(array), 0, 255).astype(np.uint8)


def _upsampled(map_: torch.Tensor, index: int, size: tuple[int, int]) -> np.ndarray:
    """Map ``index`` of a (B, 1, h, w) tensor, bilinearly stretched to ``size`` (H, W)."""
    single = map_[index : index + 1].detach().float().cpu()
    return F.interpolate(single, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def render_structure_map(
    image: np.ndarray | torch.Tensor,
    structure_map: StructureMap,
    path: str | Path,
    index: int = 0,
    *,
    alpha: float = 0.6,
    cmap: str = "inferno",
    dpi: int = 100,
) -> Path:
    """Write a PNG: the image, then W, E, C and D of image ``index`` over it; returns the path.

    Maps are stretched (bilinear) over the whole image, so pass the image region the features
    cover (e.g. SAM's padded input cropped away by the caller). Each heat map's colour scale
    runs from 0 to its 99.5th percentile, so one hot pixel does not wash the rest out; the
    panel titles give the raw maxima. Uses matplotlib's Agg canvas (no display, no pyplot).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    batch = structure_map.weight.shape[0]
    if not 0 <= index < batch:
        raise IndexError(f"index {index} out of range for a structure map of batch {batch}")
    rgb = _image_as_rgb(image)
    size = rgb.shape[:2]
    panels = [("W", structure_map.weight), ("E", structure_map.E)]
    panels += [("C", structure_map.C), ("D", structure_map.D)]

    aspect = size[1] / max(size[0], 1)
    figure = Figure(figsize=(3.2 * aspect * 5 + 0.5, 3.6), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 5)
    axes[0].imshow(rgb)
    axes[0].set_title("image")
    for ax, (name, map_) in zip(axes[1:], panels):
        heat = _upsampled(map_, index, size)
        top = float(np.percentile(heat, 99.5))
        ax.imshow(rgb)
        shown = ax.imshow(heat, cmap=cmap, alpha=alpha, vmin=0.0, vmax=top if top > 0 else 1.0)
        figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
        ax.set_title(f"{name} (max {float(heat.max()):.3g})")
    for ax in axes:
        ax.set_axis_off()
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path

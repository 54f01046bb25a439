"""The W(i) picture (`sard.structure.render_structure_map`) is written and shows something."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from sard.structure import compute_structure_map, render_structure_map


def _scene() -> tuple[np.ndarray, torch.Tensor]:
    """A 64x80 image of two squares and features (1, 3, 16, 20) that see the same squares."""
    image = np.full((64, 80, 3), 30, dtype=np.uint8)
    image[8:32, 8:32] = (200, 60, 60)
    image[36:60, 44:76] = (60, 200, 90)
    pooled = torch.from_numpy(image).float().permute(2, 0, 1)[None]
    features = torch.nn.functional.avg_pool2d(pooled, 4) / 255.0
    return image, features


def test_png_is_written_and_not_blank(tmp_path):
    image, features = _scene()
    maps = compute_structure_map(features, radius=2)
    path = render_structure_map(image, maps, tmp_path / "sub" / "w.png")
    assert path.exists() and path.stat().st_size > 10_000
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[1] > 4 * pixels.shape[0]  # five panels side by side
    assert pixels[..., :3].std() > 0.1
    # The heat maps differ from panel to panel (W, E, C, D are different maps).
    quarter = pixels.shape[1] // 5
    panels = [pixels[:, i * quarter : (i + 1) * quarter, :3] for i in range(1, 5)]
    assert any(np.abs(panels[0] - p).mean() > 0.01 for p in panels[1:])


def test_accepts_float_chw_tensor_and_batch_index(tmp_path):
    image, features = _scene()
    maps = compute_structure_map(torch.cat([features, features.flip(3)]), radius=2)
    chw = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
    first = render_structure_map(chw, maps, tmp_path / "a.png", index=0)
    second = render_structure_map(chw, maps, tmp_path / "b.png", index=1)
    assert not np.array_equal(imread(first), imread(second))


def test_bad_index_and_image_raise(tmp_path):
    image, features = _scene()
    maps = compute_structure_map(features)
    with pytest.raises(IndexError):
        render_structure_map(image, maps, tmp_path / "x.png", index=1)
    with pytest.raises(ValueError):
        render_structure_map(np.zeros((4, 5, 2), np.uint8), maps, tmp_path / "x.png")
    with pytest.raises(TypeError):
        render_structure_map([[0]], maps, tmp_path / "x.png")

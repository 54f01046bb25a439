"""W(i) on padded images: valid_mask restricts every step to the valid rectangle."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sard.structure import (
    compute_structure_map,
    uniform_structure_map,
    valid_cells,
    valid_rectangles,
)
from sard.structure import moments as moments_module


@pytest.fixture(autouse=True, params=moments_module.MOMENTS_PATHS)
def moments_path(request) -> str:
    """Both implementations of the channel moments handle valid regions."""
    with moments_module.forced_moments_path(request.param):
        yield request.param


def _features(b, c, h, w, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, h, w, generator=g)
    x = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False) + 0.3 * x
    return x + 3.0 * torch.randn(1, c, 1, 1, generator=g)


def _mask(b, h, w, rects) -> torch.Tensor:
    mask = torch.zeros(b, 1, h, w, dtype=torch.bool)
    for i, (y0, y1, x0, x1) in enumerate(rects):
        mask[i, 0, y0:y1, x0:x1] = True
    return mask


# Landscape images padded at the bottom, portrait ones at the right (SAM's longest_pad), a
# full image, and a rectangle away from the corner (a crop), in one batch.
RECTS = [(0, 9, 0, 16), (0, 16, 0, 7), (0, 16, 0, 16), (3, 12, 2, 15)]


@pytest.mark.parametrize("radius,sigma", [(3, 1.0), (7, 0.0), (1, 0.5)])
def test_valid_rectangle_behaves_as_the_whole_image(radius, sigma):
    x = _features(4, 6, 16, 16)
    # Whatever sits in the padding (here: large zero-mean garbage) must not matter.
    garbage = 50.0 * torch.randn(4, 6, 16, 16, generator=torch.Generator().manual_seed(9))
    mask = _mask(4, 16, 16, RECTS)
    padded = torch.where(mask, x, garbage)
    out = compute_structure_map(padded, radius=radius, sigma=sigma, valid_mask=mask)
    for i, (y0, y1, x0, x1) in enumerate(RECTS):
        alone = compute_structure_map(x[i : i + 1, :, y0:y1, x0:x1], radius=radius, sigma=sigma)
        for name in ("weight", "E", "C", "D"):
            got = getattr(out, name)[i : i + 1]
            torch.testing.assert_close(got[..., y0:y1, x0:x1], getattr(alone, name))
            outside = got.clone()
            outside[..., y0:y1, x0:x1] = 0
            assert torch.count_nonzero(outside) == 0, (name, i)  # exactly 0 outside
        assert out.weight[i].sum().item() == pytest.approx(1.0, abs=1e-6)
    # Other betas from the same terms, valid region kept.
    again = compute_structure_map(padded, radius=radius, sigma=sigma, valid_mask=mask, beta_e=0)
    torch.testing.assert_close(out.reweighted(0.0, 1.0, 1.0), again.weight)


def test_the_padding_edge_is_no_structure():
    # A flat image (every valid cell equal) zero-padded at the bottom: the only edge is the
    # image/padding one. Without the mask W sits on it; with the mask W is uniform inside.
    x = torch.zeros(2, 8, 12, 12)
    x[:, :, :7] = torch.randn(1, 8, 1, 1) + 2.0
    mask = _mask(2, 12, 12, [(0, 7, 0, 12)] * 2)
    blind = compute_structure_map(x, radius=2).weight
    assert blind[:, :, 5:9].sum(dim=(1, 2, 3)).min() > 0.9  # rows at the edge take it all
    seeing = compute_structure_map(x, radius=2, valid_mask=mask).weight
    torch.testing.assert_close(seeing, mask.float() / (7 * 12))


def test_instance_density_and_uniform_map_follow_the_valid_region():
    x = _features(2, 4, 8, 12, seed=3)
    mask = _mask(2, 8, 12, [(0, 5, 0, 12), (0, 8, 0, 7)])
    ids = torch.zeros(2, 32, 48, dtype=torch.long)
    ids[0, 2:10, 3:30] = 1
    ids[0, 12:20, 10:40] = 2
    ids[1, 0:30, 0:12] = 3
    ids[1, 5:25, 14:27] = 4
    out = compute_structure_map(x, radius=2, instance_ids=ids, valid_mask=mask)
    full = compute_structure_map(x, radius=2, instance_ids=ids)
    for i, (y0, y1, x0, x1) in enumerate([(0, 5, 0, 12), (0, 8, 0, 7)]):
        torch.testing.assert_close(out.D[i, :, y0:y1, x0:x1], full.D[i, :, y0:y1, x0:x1])
        assert out.weight[i].sum().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.count_nonzero(out.weight[~mask.expand_as(out.weight)]) == 0
    uniform = uniform_structure_map(x, valid_mask=mask).weight
    torch.testing.assert_close(uniform, mask.float() / mask.sum(dim=(2, 3), keepdim=True))
    # An all-valid mask is the same as none.
    everything = torch.ones(2, 1, 8, 12, dtype=torch.bool)
    torch.testing.assert_close(
        compute_structure_map(x, valid_mask=everything).weight, compute_structure_map(x).weight
    )


def test_bad_valid_masks_name_the_problem():
    x = _features(2, 4, 8, 8)
    mask = torch.ones(2, 1, 8, 8, dtype=torch.bool)
    with pytest.raises(TypeError, match="bool"):
        compute_structure_map(x, valid_mask=mask.float())
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        compute_structure_map(x, valid_mask=mask[:, :, :4])
    holed = mask.clone()
    holed[1, 0, 3, 3] = False
    with pytest.raises(ValueError, match="image 1 is not one axis-aligned rectangle"):
        compute_structure_map(x, valid_mask=holed)
    empty = mask.clone()
    empty[0] = False
    with pytest.raises(ValueError, match="image 0 has no valid cell"):
        uniform_structure_map(x, valid_mask=empty)


def test_valid_cells_take_cells_more_than_half_covered():
    # 128 px input, 8 x 8 grid of 16 px cells. 96 rows: 6 cells; 100: cell 6 is a quarter
    # covered (out); 104: its centre, not inside (out); 105: more than half (in); 1: one cell.
    cells = valid_cells([(96, 128), (100, 128), (104, 128), (105, 40), (1, 1)], (128, 128), (8, 8))
    assert cells.shape == (5, 1, 8, 8) and cells.dtype == torch.bool
    assert cells[:, 0].any(dim=2).sum(dim=1).tolist() == [6, 6, 6, 7, 1]  # valid rows
    assert cells[:, 0].any(dim=1).sum(dim=1).tolist() == [8, 8, 8, 2, 1]  # valid columns
    assert valid_rectangles(cells, cells.shape)[3] == (0, 7, 0, 2)
    with pytest.raises(ValueError, match="must lie in"):
        valid_cells([(129, 128)], (128, 128), (8, 8))


@pytest.mark.parametrize("k", [1, 2])
def test_border_cells_take_the_terms_of_their_inner_neighbours(k):
    x = _features(2, 6, 12, 14, seed=7)
    mask = _mask(2, 12, 14, [(0, 12, 0, 14), (0, 9, 0, 14)])  # a full and a landscape image
    out = compute_structure_map(x, radius=2, valid_mask=mask, border_cells=k)
    # Whatever the outer k rings of each valid rectangle hold, W is the same ...
    ring = mask.clone()
    for i, (y1, x1) in enumerate(((12, 14), (9, 14))):
        ring[i, 0, k : y1 - k, k : x1 - k] = False
    noisy = torch.where(ring, 40.0 * torch.randn_like(x), x)
    again = compute_structure_map(noisy, radius=2, valid_mask=mask, border_cells=k)
    torch.testing.assert_close(again.weight, out.weight)
    # ... and every ring cell carries its nearest inner cell's terms.
    inner = compute_structure_map(x[:1, :, k:-k, k:-k], radius=2)
    torch.testing.assert_close(out.E[0, 0, :k, k:-k], inner.E[0, 0, :1].expand(k, -1))
    torch.testing.assert_close(out.D[0, 0, k:-k, :k], inner.D[0, 0, :, :1].expand(-1, k))
    assert out.weight[1, 0, 9:].abs().max() == 0 and out.weight[1].sum() == pytest.approx(1.0)
    # Without it the ring changes W.
    blind = compute_structure_map(noisy, radius=2, valid_mask=mask)
    assert not torch.allclose(
        blind.weight, compute_structure_map(x, radius=2, valid_mask=mask).weight
    )
    with pytest.raises(ValueError, match="border_cells"):
        compute_structure_map(x, border_cells=-1)
    tiny = compute_structure_map(x[:, :, :2, :3], border_cells=k)  # sides too short: kept
    assert tiny.weight.sum(dim=(1, 2, 3)).tolist() == pytest.approx([1.0, 1.0])

"""Behaviour of W(i) (`sard.structure`): formulas, invariances, synthetic geometry, edge cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sard.structure import (
    StructureMap,
    box_pixel_count,
    box_sum,
    compute_structure_map,
    uniform_structure_map,
)
from sard.structure import moments as moments_module
from sard.structure.filters import window_mean

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True, params=moments_module.MOMENTS_PATHS)
def moments_path(request) -> str:
    """Every test here runs on both implementations of the channel moments (both run on CPU;
    by default the CPU takes the chunked one and GPUs the dense one)."""
    with moments_module.forced_moments_path(request.param):
        yield request.param


def _random_features(b=2, c=6, h=12, w=16, seed=0, device="cpu") -> torch.Tensor:
    """Smooth-ish random features with per-channel offsets, like real embeddings."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, h, w, generator=g)
    x = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False) + 0.3 * x
    return (x + 3.0 * torch.randn(1, c, 1, 1, generator=g)).to(device)


def _reference(x: torch.Tensor, radius: int, sigma: float):
    """Float64 E, C, D written the slow, obvious way (conv2d Sobel, eigvalsh, window loops)."""
    b, c, h, w = x.shape
    f = x.double() - x.double().mean(dim=(2, 3), keepdim=True)
    padded = F.pad(f, (1, 1, 1, 1), mode="replicate").reshape(b * c, 1, h + 2, w + 2)
    kx = torch.tensor([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=torch.float64) / 8
    gx = F.conv2d(padded, kx[None, None]).reshape(b, c, h, w)
    gy = F.conv2d(padded, kx.t()[None, None]).reshape(b, c, h, w)
    j = torch.stack([(gx * gx).sum(1), (gy * gy).sum(1), (gx * gy).sum(1)], 1)
    rad = max(1, math.ceil(3 * sigma))
    t = torch.arange(-rad, rad + 1, dtype=torch.float64)
    g1 = torch.exp(-0.5 * (t / sigma) ** 2) if sigma > 0 else (t == 0).double()
    g1 /= g1.sum()
    jp = F.pad(j.reshape(b * 3, 1, h, w), (rad,) * 4, mode="replicate")
    a, d, off = F.conv2d(jp, (g1[:, None] * g1[None, :])[None, None]).reshape(b, 3, h, w).unbind(1)
    mat = torch.stack([torch.stack([a, off], -1), torch.stack([off, d], -1)], -2)
    ev = torch.linalg.eigvalsh(mat).clamp(min=0)
    edge, corner = ev[..., 1] - ev[..., 0], (ev[..., 1] * ev[..., 0]).sqrt()
    dens = torch.zeros(b, h, w, dtype=torch.float64)
    for y in range(h):
        for xx in range(w):
            win = f[
                :, :, max(0, y - radius) : y + radius + 1, max(0, xx - radius) : xx + radius + 1
            ]
            dens[:, y, xx] = win.var(dim=(2, 3), unbiased=False).mean(1)
    return edge[:, None], corner[:, None], dens[:, None]


def _close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-4) -> None:
    """Equal up to rtol relative to the largest magnitude (maps have exact zeros)."""
    scale = expected.abs().max().item()
    torch.testing.assert_close(
        actual.double().cpu(), expected.double().cpu(), rtol=0, atol=rtol * scale + 1e-30
    )


@pytest.mark.parametrize("radius,sigma", [(2, 1.0), (1, 0.0), (30, 0.7)])
def test_matches_float64_reference(radius, sigma):
    x = _random_features()
    out = compute_structure_map(x, radius=radius, sigma=sigma)
    edge, corner, dens = _reference(x, radius, sigma)
    _close(out.E, edge)
    _close(out.C, corner)
    _close(out.D, dens)
    # And the combination, from the reference terms.
    score = sum(
        beta * term / term.mean(dim=(2, 3), keepdim=True)
        for beta, term in ((2.0, edge), (1.0, corner), (1.0, dens))
    )
    _close(out.weight, score / score.sum(dim=(2, 3), keepdim=True))


@pytest.mark.parametrize("device", DEVICES)
def test_weight_is_a_distribution(device):
    x = _random_features(b=3, device=device)
    for kwargs in ({}, {"beta_e": 0.0}, {"radius": 0, "sigma": 0.0}):
        w = compute_structure_map(x, **kwargs).weight
        assert w.shape == (3, 1, 12, 16) and w.dtype == torch.float32 and w.device == x.device
        assert bool((w >= 0).all())
        torch.testing.assert_close(w.sum(dim=(2, 3)).cpu(), torch.ones(3, 1))
        assert w.max() > 1.3 * w.min()  # structured input gives a non-uniform map


def test_invariant_to_global_scale_and_channel_permutation():
    x = _random_features(c=9)
    ref = compute_structure_map(x)
    for scale in (1e-3, 7.0, 1e3):
        _close(compute_structure_map(x * scale).weight, ref.weight)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(1))
    permuted = compute_structure_map(x[:, perm])
    for name in ("weight", "E", "C", "D"):
        _close(getattr(permuted, name), getattr(ref, name))


@pytest.mark.parametrize(
    "transform",
    [
        lambda t: torch.rot90(t, 1, dims=(2, 3)),
        lambda t: torch.rot90(t, 2, dims=(2, 3)),
        lambda t: torch.rot90(t, 3, dims=(2, 3)),
        lambda t: torch.flip(t, dims=(3,)),
        lambda t: torch.flip(t, dims=(2,)),
        lambda t: t.transpose(2, 3),
    ],
    ids=["rot90", "rot180", "rot270", "flip_x", "flip_y", "transpose"],
)
def test_equivariant_to_rotations_and_flips(transform):
    x = _random_features(h=11, w=14)  # non-square, odd: catches swapped axes and off-by-ones
    ref = compute_structure_map(x, radius=3)
    moved = compute_structure_map(transform(x).contiguous(), radius=3)
    for name in ("weight", "E", "C", "D"):
        _close(getattr(moved, name), transform(getattr(ref, name)))


def _interior(t: torch.Tensor, margin: int) -> torch.Tensor:
    return t[..., margin:-margin, margin:-margin]


def test_step_edge_makes_E_dominate_C_along_the_edge():
    h = w = 24
    x = torch.zeros(1, 4, h, w)
    x[:, :, :, w // 2 :] = torch.tensor([1.0, -2.0, 0.5, 3.0]).view(1, 4, 1, 1)
    out = compute_structure_map(x, sigma=1.0)
    edge_cols = out.E[0, 0, 4:-4, w // 2 - 1 : w // 2 + 1]
    corner_cols = out.C[0, 0, 4:-4, w // 2 - 1 : w // 2 + 1]
    assert bool((edge_cols > 100 * corner_cols + 1e-12).all())
    # E peaks on the edge, and W is largest there too.
    assert out.E[0, 0, h // 2].argmax().item() in (w // 2 - 1, w // 2)
    assert out.weight[0, 0, h // 2].argmax().item() in (w // 2 - 1, w // 2)
    assert out.E[0, 0, :, :4].max() == 0 and out.C.max() < 1e-3 * out.E.max()


@pytest.mark.parametrize("kind", ["L", "X"])
def test_junction_makes_C_peak_at_the_junction(kind):
    h = w = 25
    y0 = x0 = 12
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    if kind == "L":  # one bright quadrant: an L-shaped corner at (y0, x0)
        pattern = ((ys >= y0) & (xs >= x0)).float()
    else:  # checkerboard quadrants: an X-junction
        pattern = ((ys >= y0) ^ (xs >= x0)).float()
    x = torch.stack([pattern, 2 * pattern + 1, -pattern], 0)[None]
    out = compute_structure_map(x)
    c_map = out.C[0, 0]
    peak_y, peak_x = divmod(int(c_map.argmax()), w)
    assert abs(peak_y - (y0 - 0.5)) <= 1.5 and abs(peak_x - (x0 - 0.5)) <= 1.5
    # Far along both edges, C is tiny compared with its peak while E is not.
    for y, xx in ((y0, w - 3), (h - 3, x0)):
        assert c_map[y, xx] < 1e-3 * c_map.max()
        assert out.E[0, 0, y, xx] > 0.1 * out.E.max()


def test_textured_region_gets_higher_density_than_flat_one():
    h, w, r = 20, 40, 3
    g = torch.Generator().manual_seed(3)
    x = torch.zeros(1, 5, h, w)
    x[:, :, :, : w // 2] = torch.randn(1, 5, h, w // 2, generator=g)
    out = compute_structure_map(x, radius=r)
    textured = out.D[0, 0, :, : w // 2 - r - 1]
    flat = out.D[0, 0, :, w // 2 + r + 1 :]
    assert flat.max() < 1e-5 * textured.mean()  # zero up to float32 rounding
    assert textured.mean() > 0.8 and textured.min() > 0.3  # unit-variance noise
    assert out.weight[0, 0, :, : w // 2].sum() > 0.9


@pytest.mark.parametrize(
    "dtype,tolerance", [(torch.float16, 5e-3), (torch.bfloat16, 4e-2)], ids=["fp16", "bf16"]
)
@pytest.mark.parametrize("device", DEVICES)
def test_low_precision_input_matches_float32(dtype, tolerance, device):
    """Stated tolerance: |W_low - W_fp32| <= tolerance * max W_fp32 (fp16 5e-3, bf16 4e-2)."""
    x = _random_features(device=device)
    low = x.to(dtype)
    out = compute_structure_map(low)
    for name in ("weight", "E", "C", "D"):
        assert getattr(out, name).dtype == torch.float32
    # Computed in float32: identical to feeding the rounded values as float32 ...
    _close(out.weight, compute_structure_map(low.float()).weight, rtol=1e-5)
    # ... and within the stated tolerance of the unrounded input.
    _close(out.weight, compute_structure_map(x).weight, rtol=tolerance)


def test_instance_count_density_on_hand_made_ids():
    ids = torch.tensor(
        [
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [2, 2, 0, 0, 3, 3],
            [2, 2, 0, 0, 3, 3],
            [2, 2, 0, 0, 0, -1],
        ]
    )[None]
    x = _random_features(b=1, c=2, h=5, w=6)
    out = compute_structure_map(x, radius=1, instance_ids=ids)
    expected = torch.tensor(
        [
            [1, 1, 1, 1, 0, 0],
            [2, 2, 2, 2, 1, 1],
            [2, 2, 2, 2, 1, 1],
            [1, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1],
        ],
        dtype=torch.float32,
    )
    torch.testing.assert_close(out.D[0, 0], expected)
    # The weight uses D / mean(D); the instance-free corner keeps only its E and C share.
    only_d = compute_structure_map(x, radius=1, instance_ids=ids, beta_e=0.0, beta_c=0.0)
    torch.testing.assert_close(only_d.weight[0, 0], expected / expected.sum())


def test_instance_count_density_at_higher_resolution_and_large_radius():
    ids = torch.zeros(1, 8, 8, dtype=torch.int64)
    ids[0, 0, 0] = 5  # one pixel of a tiny instance: its 2x2 cell still counts it
    ids[0, 7, 4:] = 9
    x = _random_features(b=1, c=3, h=4, w=4)
    dens = compute_structure_map(x, radius=0, instance_ids=ids).D[0, 0]
    expected = torch.zeros(4, 4)
    expected[0, 0] = 1
    expected[3, 2:] = 1
    torch.testing.assert_close(dens, expected)
    whole = compute_structure_map(x, radius=50, instance_ids=ids).D
    assert bool((whole == 2).all())
    none = compute_structure_map(x, instance_ids=torch.zeros(1, 4, 4, dtype=torch.int32))
    assert none.D.abs().max() == 0 and bool(torch.isfinite(none.weight).all())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "make",
    [
        lambda d: torch.zeros(2, 4, 9, 7, device=d),
        lambda d: torch.ones(2, 4, 9, 7, device=d) * torch.arange(4.0, device=d).view(1, 4, 1, 1),
        lambda d: torch.full((1, 3, 9, 7), 0.1, device=d, dtype=torch.float16),
        lambda d: torch.full((1, 1, 1, 1), 3.0, device=d),
    ],
    ids=["zeros", "per-channel-constant", "fp16-constant", "1x1"],
)
def test_degenerate_features_give_uniform_weight(make, device):
    x = make(device)
    out = compute_structure_map(x)
    h, w = x.shape[-2:]
    for name in ("weight", "E", "C", "D"):
        assert bool(torch.isfinite(getattr(out, name)).all())
    torch.testing.assert_close(out.weight, torch.full_like(out.weight, 1.0 / (h * w)))
    assert out.E.abs().max() == 0 and out.C.abs().max() == 0 and out.D.abs().max() == 0


def test_one_flat_image_in_batch_does_not_affect_the_other():
    x = _random_features(b=2)
    mixed = x.clone()
    mixed[1] = 0.0
    out = compute_structure_map(mixed)
    _close(out.weight[0], compute_structure_map(x[:1]).weight[0])
    torch.testing.assert_close(out.weight[1], torch.full_like(out.weight[1], 1 / (12 * 16)))


def test_beta_ablations():
    x = _random_features()
    full = compute_structure_map(x)

    def proportional(weight, term):
        _close(weight, term / term.sum(dim=(2, 3), keepdim=True))

    proportional(compute_structure_map(x, beta_c=0.0, beta_d=0.0).weight, full.E)
    proportional(compute_structure_map(x, beta_e=0.0, beta_d=0.0).weight, full.C)
    proportional(compute_structure_map(x, beta_e=0.0, beta_c=0.0).weight, full.D)
    e_hat = full.E / full.E.mean(dim=(2, 3), keepdim=True)
    c_hat = full.C / full.C.mean(dim=(2, 3), keepdim=True)
    proportional(compute_structure_map(x, beta_d=0.0).weight, 2 * e_hat + c_hat)
    # Only the ratios of the betas matter.
    _close(compute_structure_map(x, beta_e=6.0, beta_c=3.0, beta_d=3.0).weight, full.weight)
    zero = compute_structure_map(x, beta_e=0.0, beta_c=0.0, beta_d=0.0).weight
    torch.testing.assert_close(zero, torch.full_like(zero, 1 / (12 * 16)))


def test_reweighted_equals_recomputing_with_other_betas():
    x = _random_features()
    ids = torch.randint(0, 5, (2, 24, 32), generator=torch.Generator().manual_seed(3))
    for kwargs in ({}, {"instance_ids": ids, "radius": 2}):
        full = compute_structure_map(x, **kwargs)
        for betas in ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (2.0, 1.0, 0.0)):
            fresh = compute_structure_map(
                x, **kwargs, beta_e=betas[0], beta_c=betas[1], beta_d=betas[2]
            ).weight
            torch.testing.assert_close(full.reweighted(*betas), fresh, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="beta_c"):
        full.reweighted(1.0, -1.0, 0.0)
    with pytest.raises(ValueError, match="uniform"):
        uniform_structure_map(x).reweighted(2.0, 1.0, 1.0)


def test_uniform_structure_map():
    x = _random_features(b=2, h=5, w=7).half()
    out = uniform_structure_map(x)
    assert isinstance(out, StructureMap)
    torch.testing.assert_close(out.weight, torch.full((2, 1, 5, 7), 1 / 35))
    assert out.E.abs().max() == 0 and out.D.shape == (2, 1, 5, 7)


def test_chunking_does_not_change_the_result(monkeypatch):
    x = _random_features(b=3, c=7, h=10, w=9)
    whole = compute_structure_map(x, radius=2)
    # 200 elements per chunk: one image, two channels at a time (7 = 2+2+2+1) ...
    for name in ("_CPU_CHUNK_ELEMENTS", "_DENSE_CHUNK_ELEMENTS"):
        monkeypatch.setattr(moments_module, name, 200)
    split = compute_structure_map(x, radius=2)
    # ... and 2 images of all channels per chunk, the last chunk holding one.
    for name in ("_CPU_CHUNK_ELEMENTS", "_DENSE_CHUNK_ELEMENTS"):
        monkeypatch.setattr(moments_module, name, 7 * 90 * 2)
    pairs = compute_structure_map(x, radius=2)
    for other in (split, pairs):
        for name in ("weight", "E", "C", "D"):
            _close(getattr(other, name), getattr(whole, name), rtol=1e-5)


def test_moments_path_per_device_and_forced():
    with moments_module.forced_moments_path(None):
        assert moments_module.moments_path(torch.device("cpu")) == "chunked"
        assert moments_module.moments_path(torch.device("cuda", 0)) == "dense"
        assert moments_module.moments_path(torch.device("meta")) == "dense"
        with moments_module.forced_moments_path("dense"):
            assert moments_module.moments_path(torch.device("cpu")) == "dense"
        assert moments_module.moments_path(torch.device("cpu")) == "chunked"
    with pytest.raises(ValueError, match="chunked"):
        with moments_module.forced_moments_path("fast"):
            pass


@pytest.mark.parametrize("shape", [(3, 7, 10, 9), (1, 2, 1, 1), (2, 5, 3, 17)])
@pytest.mark.parametrize("radius", [None, 0, 2, 30])
def test_dense_and_chunked_moments_agree(shape, radius):
    x = (_random_features(*shape) * 4.0).half()  # fp16 input: both read it as float32
    paths = {}
    for path in moments_module.MOMENTS_PATHS:
        with moments_module.forced_moments_path(path):
            paths[path] = moments_module.channel_moments(x, radius)
    assert paths["dense"].shape == (shape[0], 5, *shape[2:])
    _close(paths["dense"], paths["chunked"], rtol=1e-5)
    if radius is None:
        assert paths["dense"][:, moments_module.MEAN_SQ].abs().max() == 0


@pytest.mark.parametrize("h,w", [(6, 9), (5, 8)])  # odd and even widths take different paths
@pytest.mark.parametrize("radius", [0, 1, 3, 5, 40])
def test_box_sum_count_and_mean_match_brute_force(radius, h, w):
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(radius))
    fast = box_sum(x, radius)
    count = box_pixel_count(h, w, radius, "cpu")
    torch.testing.assert_close(window_mean(x, radius), fast / count, atol=1e-6, rtol=1e-5)
    for y in range(h):
        for xx in range(w):
            win = x[..., max(0, y - radius) : y + radius + 1, max(0, xx - radius) : xx + radius + 1]
            torch.testing.assert_close(fast[..., y, xx], win.sum(dim=(2, 3)), atol=1e-5, rtol=1e-5)
            assert count[0, 0, y, xx] == win.shape[-1] * win.shape[-2]


def test_no_autograd_graph_and_inputs_untouched():
    x = _random_features().requires_grad_(True)
    before = x.detach().clone()
    out = compute_structure_map(x)
    assert out.weight.grad_fn is None and not out.weight.requires_grad
    assert torch.equal(x.detach(), before)


@pytest.mark.parametrize(
    "kwargs,error",
    [
        ({"features": torch.zeros(4, 8, 8)}, ValueError),
        ({"features": torch.zeros(1, 2, 8, 8, dtype=torch.int64)}, TypeError),
        ({"features": torch.zeros(0, 2, 8, 8)}, ValueError),
        ({"beta_e": -1.0}, ValueError),
        ({"beta_d": float("nan")}, ValueError),
        ({"radius": -1}, ValueError),
        ({"radius": 2.5}, ValueError),
        ({"sigma": -0.5}, ValueError),
        ({"eps": 0.0}, ValueError),
        ({"instance_ids": torch.zeros(2, 8, 8, dtype=torch.int64)}, ValueError),
        ({"instance_ids": torch.zeros(1, 8, 8)}, TypeError),
        ({"instance_ids": torch.zeros(1, 1, 8, 8, dtype=torch.int64)}, ValueError),
    ],
)
def test_bad_arguments_raise(kwargs, error):
    args = {"features": torch.randn(1, 2, 8, 8)}
    args.update(kwargs)
    features = args.pop("features")
    with pytest.raises(error):
        compute_structure_map(features, **args)


def test_non_finite_features_raise():
    x = _random_features()
    x[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        compute_structure_map(x)

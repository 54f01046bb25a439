r"""The structure importance map W(i) computed from teacher features F (B, C, H, W).

These are this project's definitions (the paper's summary lost its equations). All maps are
float32 (B, 1, H, W); "pixel" means a feature-map cell; every step is per image.

1. Gradients. f_c = F_c - F_c(0, 0) (a per-channel shift, which no quantity below depends on;
   it only conditions float32). Sobel derivatives with replicate padding (f outside the image
   takes the nearest border value), scaled so that a unit ramp has gradient 1, s = (1, 2, 1):
       g_x(y, x) = (1/8) sum_{t=-1..1} s_t [f_c(y+t, x+1) - f_c(y+t, x-1)],
       g_y(y, x) = (1/8) sum_{t=-1..1} s_t [f_c(y+1, x+t) - f_c(y-1, x+t)].
2. Structure tensor, summed over channels, then integrated by a separable Gaussian G_sigma
   (std ``sigma`` pixels, taps on [-ceil(3 sigma), ceil(3 sigma)] normalised to 1, replicate
   padding; sigma = 0 skips it):
       J = G_sigma * sum_c [[g_x^2, g_x g_y], [g_x g_y, g_y^2]] = [[a, b], [b, d]].
3. Eigenvalues in closed form, clamped at 0:
       lambda_{1,2} = max(0, (a + d)/2 +- hypot((a - d)/2, b)),
       E = lambda_1 - lambda_2   (oriented boundaries, facets),
       C = sqrt(lambda_1 lambda_2)   (junctions, corners).
4. Density. N(i) is the (2r+1)x(2r+1) window around i clipped to the image (out-of-image pixels
   are left out, not padded) and |N(i)| its true pixel count; mean_N is the average over it:
       D(i) = (1/C) sum_c [ mean_N(f_c^2) - mean_N(f_c)^2 ]_+
   i.e. the local variance averaged over channels. With ``instance_ids`` D is instead the
   number of distinct ids > 0 present in the window; ids <= 0 (background, ignore) are never
   counted (see `instance_count_density` for id maps finer than the features).
5. Combination. With m_T the spatial mean of term T over the image and the floor
   phi = eps * mean_{c,i} f_c(i)^2 (f as in step 1; relative to the features' spread, so that W
   does not change when F is scaled; phi = eps for the id-count D):
       T^ = T / (m_T + phi)  if m_T > phi,  else 0   (a flat term contributes nothing),
       S = beta_e E^ + beta_c C^ + beta_d D^,
       W(i) = S(i) / sum_j S(j),  or 1/(H W) everywhere when sum_j S(j) = 0.
   The betas are relative weights: (2, 1, 1) is the paper's default; zeros give the ablations
   E only, C only, D only, E + C. `uniform_structure_map` is the W = 1/(H W) baseline.

W is invariant to a global scale and to permutations of the channels, and equivariant to 90
degree rotations and flips of the feature map (all filters and borders are symmetric).

Valid regions. With ``valid_mask`` (B, 1, H, W) bool, one axis-aligned rectangle of valid
cells per image (a resized image zero-padded to the square input; see `valid_region`), every
step above runs on that rectangle as if it were the whole map: replicate padding at its edge,
density windows clipped to it, the means m_T, the floor phi and the sum over j taken over its
cells only. So the image/padding edge is no structure, padded cells never enter a window, and
W(i) = 0 exactly outside the rectangle and sums to 1 inside it (1/|valid| each when S = 0).
E, C, D are 0 outside. For ``instance_ids``, padding holds no instance, so counting ids in
windows over the whole grid gives the clipped counts.

Border cells. ``border_cells`` = k > 0 computes E, C, D on the (valid) rectangle shrunk by k
cells on every side and gives each of the k outer rings the terms of the nearest cell inside
(replicate), before step 5. An encoder's zero-padded convolutions (SAM's and EfficientSAM's
neck) and SAM's zero-padded attention windows make the outermost cells' features differ for no
reason in the scene, which E, C and D would read as structure; k = 1 keeps those cells' loss
weight but estimates it from their neighbours. A side of n <= 2k cells keeps (n - 1) // 2.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .filters import gaussian_blur_replicate, window_mean
from .instance_density import instance_count_density
from .moments import GXX, GXY, MEAN_SQ, SQ, channel_moments
from .valid_region import valid_rectangles


@dataclass
class StructureMap:
    """W(i) and its ingredients, each float32 (B, 1, H, W) on the features' device.

    ``weight`` is >= 0 and sums to 1 over (H, W) for every image; ``E``, ``C``, ``D`` are the
    raw (unnormalised) terms of the module docstring and ``floors`` (B, 3, 1, 1) their floors
    phi (None for the uniform map, which has no terms).
    """

    weight: torch.Tensor
    E: torch.Tensor
    C: torch.Tensor
    D: torch.Tensor
    floors: torch.Tensor | None = None
    valid_mask: torch.Tensor | None = None

    def reweighted(self, beta_e: float, beta_c: float, beta_d: float) -> torch.Tensor:
        """W (B, 1, H, W) for other betas from the same terms, which do not depend on them:
        equal to ``compute_structure_map(F, beta_e=.., beta_c=.., beta_d=..).weight``."""
        if self.floors is None:
            raise ValueError("a uniform structure map has no E, C, D terms to reweight")
        _check_betas(beta_e, beta_c, beta_d)
        terms = torch.cat([self.E, self.C, self.D], dim=1)
        return _combine(terms, self.floors, (beta_e, beta_c, beta_d), self.valid_mask)


def _check_features(features: torch.Tensor) -> None:
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"features must be a torch.Tensor, got {type(features).__name__}")
    if features.dim() != 4:
        raise ValueError(f"features must be (B, C, H, W), got shape {tuple(features.shape)}")
    if not features.dtype.is_floating_point:
        raise TypeError(f"features must be a floating tensor, got {features.dtype}")
    if features.numel() == 0:
        raise ValueError(f"features must not be empty, got shape {tuple(features.shape)}")


def _check_number(name: str, value: float, *, positive: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        kind = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number {kind}, got {value}")


def _eigen_measures(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """E and C from the integrated structure tensor (B, 3, H, W) ordered (a, d, b)."""
    a, d, b = tensor[:, 0:1], tensor[:, 1:2], tensor[:, 2:3]
    root = torch.hypot((a - d) * 0.5, b)
    centre = (a + d) * 0.5
    lambda1 = (centre + root).clamp_(min=0.0)
    lambda2 = (centre - root).clamp_(min=0.0)
    return lambda1 - lambda2, torch.sqrt(lambda1 * lambda2)


def _check_betas(beta_e: float, beta_c: float, beta_d: float) -> None:
    for name, value in (("beta_e", beta_e), ("beta_c", beta_c), ("beta_d", beta_d)):
        _check_number(name, value)


def _combine(
    terms: torch.Tensor,
    floors: torch.Tensor,
    betas: tuple[float, float, float],
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Step 5 for terms (B, 3, H, W) = (E, C, D) with floors (B, 3, 1, 1): W (B, 1, H, W).

    All three terms are normalised in one go (few ops: on a GPU W's cost is op launches). With
    ``valid`` (B, 1, H, W) bool the terms must be 0 outside it; means run over valid cells.
    """
    h, w = terms.shape[-2:]
    if valid is None:
        mean = terms.mean(dim=(2, 3), keepdim=True)
        fallback = torch.full_like(terms[:, :1], 1.0 / (h * w))
    else:
        cells = valid.float()
        count = cells.sum(dim=(2, 3), keepdim=True)
        mean = terms.sum(dim=(2, 3), keepdim=True) / count
        fallback = cells / count
    # T / (m_T + phi), or 0 for a flat term (m_T <= phi).
    scale = torch.where(mean > floors, (mean + floors).reciprocal(), 0.0)
    normalised = terms * scale
    beta_e, beta_c, beta_d = betas
    score = normalised[:, 0:1] * beta_e + normalised[:, 1:2] * beta_c + normalised[:, 2:3] * beta_d
    total = score.sum(dim=(2, 3), keepdim=True)
    # S / sum S per image; uniform (over the valid cells) for images whose S sums to 0.
    weight = score / total.clamp(min=torch.finfo(score.dtype).tiny)
    return torch.where(total > 0, weight, fallback)


def _terms(
    features: torch.Tensor,
    radius: int,
    sigma: float,
    eps: float,
    density: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 1-4 on a whole map: terms (B, 3, H, W) = (E, C, D) and floors (B, 3, 1, 1).

    ``density`` (B, 1, H, W): a D given from outside (the instance count), floor eps.
    """
    c = features.shape[1]
    moments = channel_moments(features, None if density is not None else radius)
    if not bool(torch.isfinite(moments).all()):
        raise ValueError("features contain NaN or Inf (or overflow float32 when squared)")
    tensor = gaussian_blur_replicate(moments[:, GXX : GXY + 1], sigma)
    edge, corner = _eigen_measures(tensor)
    sq = moments[:, SQ : SQ + 1]
    floor = eps * sq.mean(dim=(2, 3), keepdim=True) / c
    if density is None:
        mean_sq = moments[:, MEAN_SQ : MEAN_SQ + 1]
        density = (window_mean(sq, radius) - mean_sq).clamp_(min=0.0) / c
        density_floor = floor
    else:
        density_floor = torch.full_like(floor, eps)
    floors = torch.cat([floor, floor, density_floor], dim=1)
    return torch.cat([edge, corner, density], dim=1), floors


def _valid_or_none(valid_mask: torch.Tensor | None, shape) -> torch.Tensor | None:
    """The checked mask, or None when it is absent or marks every cell (nothing to leave out)."""
    if valid_mask is None:
        return None
    valid_rectangles(valid_mask, shape)  # shape, dtype and one rectangle per image
    return None if bool(valid_mask.all()) else valid_mask


@torch.no_grad()
def compute_structure_map(
    features: torch.Tensor,
    *,
    beta_e: float = 2.0,
    beta_c: float = 1.0,
    beta_d: float = 1.0,
    radius: int = 7,
    sigma: float = 1.0,
    instance_ids: torch.Tensor | None = None,
    eps: float = 1e-6,
    valid_mask: torch.Tensor | None = None,
    border_cells: int = 0,
) -> StructureMap:
    """W(i), E, C, D of teacher ``features`` (B, C, H, W) as in the module docstring.

    Any device; float32/16/bfloat16 input, computed in float32; no autograd. ``radius`` is r of
    the density window; ``sigma`` the structure tensor's integration scale; ``instance_ids``
    (B, Hi, Wi) integer switches D to the instance count; ``eps`` is the relative floor;
    ``valid_mask`` (B, 1, H, W) bool, one rectangle per image, restricts everything to the
    valid cells (module docstring; W = 0 outside); ``border_cells`` replicates the terms of
    the nearest inner cell into that many outer rings (module docstring). E, C and D are always
    computed (a zero beta only drops the term from W). Raises ValueError/TypeError on malformed
    input and ValueError on non-finite features.
    """
    _check_features(features)
    _check_betas(beta_e, beta_c, beta_d)
    _check_number("sigma", sigma)
    _check_number("eps", eps, positive=True)
    if isinstance(radius, bool) or not isinstance(radius, numbers.Integral) or radius < 0:
        raise ValueError(f"radius must be an int >= 0, got {radius!r}")
    radius = int(radius)
    if isinstance(border_cells, bool) or not isinstance(border_cells, numbers.Integral):
        raise ValueError(f"border_cells must be an int >= 0, got {border_cells!r}")
    if border_cells < 0:
        raise ValueError(f"border_cells must be an int >= 0, got {border_cells!r}")
    b, c, h, w = features.shape
    if instance_ids is not None and instance_ids.shape[0] != b:
        raise ValueError(
            f"instance_ids has batch {instance_ids.shape[0]} but features have batch {b}"
        )
    valid = _valid_or_none(valid_mask, features.shape)
    density = None
    if instance_ids is not None:
        density = instance_count_density(instance_ids.to(features.device), (h, w), radius)
    if valid is None and border_cells == 0:
        terms, floors = _terms(features, radius, sigma, eps, density)
    else:
        if valid is not None:
            valid = valid.to(features.device)
            rects = valid_rectangles(valid, features.shape)
        else:
            rects = [(0, h, 0, w)] * b
        terms = torch.zeros(b, 3, h, w, dtype=torch.float32, device=features.device)
        floors = torch.empty(b, 3, 1, 1, dtype=torch.float32, device=features.device)
        # One call per distinct rectangle: a batch of one aspect ratio is one call.
        groups: dict = {}
        for i, rect in enumerate(rects):
            groups.setdefault(rect, []).append(i)
        for (y0, y1, x0, x1), members in groups.items():
            idx = torch.tensor(members, device=features.device)
            ky = min(border_cells, (y1 - y0 - 1) // 2)
            kx = min(border_cells, (x1 - x0 - 1) // 2)
            inner = (slice(None), slice(None), slice(y0 + ky, y1 - ky), slice(x0 + kx, x1 - kx))
            crop = features[idx][inner]
            crop_density = None if density is None else density[idx][inner]
            t, f = _terms(crop, radius, sigma, eps, crop_density)
            if ky or kx:  # the outer rings take the terms of the nearest inner cell
                t = F.pad(t, (kx, kx, ky, ky), mode="replicate")
            terms[idx, :, y0:y1, x0:x1] = t
            floors[idx] = f
    weight = _combine(terms, floors, (beta_e, beta_c, beta_d), valid)
    return StructureMap(
        weight=weight,
        E=terms[:, 0:1],
        C=terms[:, 1:2],
        D=terms[:, 2:3],
        floors=floors,
        valid_mask=valid,
    )


@torch.no_grad()
def uniform_structure_map(
    features: torch.Tensor, valid_mask: torch.Tensor | None = None
) -> StructureMap:
    """The uniform baseline: W = 1/(H W) everywhere, or 1/|valid| on the ``valid_mask`` cells
    and 0 outside; E, C, D are zeros (not computed)."""
    _check_features(features)
    b, _, h, w = features.shape
    zeros = torch.zeros(b, 1, h, w, dtype=torch.float32, device=features.device)
    valid = _valid_or_none(valid_mask, features.shape)
    if valid is None:
        weight = torch.full_like(zeros, 1.0 / (h * w))
    else:
        cells = valid.to(features.device).float()
        weight = cells / cells.sum(dim=(2, 3), keepdim=True)
    return StructureMap(weight=weight, E=zeros, C=zeros.clone(), D=zeros.clone(), valid_mask=valid)

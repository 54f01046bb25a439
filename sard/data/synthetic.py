"""Synthetic RockFrag-style images: densely packed, irregular rock fragments with instance masks.

One image is made in four steps (all sizes scale with ``image_size / 256``):

1. Packing. Fragment diameters d are drawn from a truncated power law p(d) ~ d^-a on
   [min_size, max_size] and placed largest first on free space (a disc of radius r goes where the
   distance to occupied space is >= 0.7 r), until the canvas is full. The canvas is larger than
   the image so fragments are cut by the image border like in a photograph.
2. Cells. Every pixel goes to the seed minimising the power distance |p - c|^2 - r^2 (a power
   diagram: straight, angular edges), after warping pixel positions with smooth noise so edges
   are irregular. A fraction 1 - density of cells become voids.
3. Gaps. Pixels closer than a spatially varying gap width to a cell edge become dark contact
   gaps; each fragment keeps its largest 4-connected piece; pieces under ``min_area`` pixels are
   not annotated and are drawn as fines.
4. Shading. Per fragment: a rock colour, 2-5 planar facets lit from one direction, darkening
   towards the edges, grain texture and mineral speckles. Gaps and voids: dark with fines.
   Then uneven illumination, a slight blur and sensor noise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Dict, Tuple

import cv2
import numpy as np
from scipy.spatial import cKDTree

# Rock base colours (RGB) an image draws its main lithology from.
ROCK_PALETTE = np.array(
    [
        [128, 124, 118],
        [142, 126, 106],
        [150, 116, 98],
        [96, 96, 100],
        [160, 152, 140],
        [118, 110, 96],
        [136, 132, 128],
    ],
    dtype=np.float64,
)
PLACEMENT_OVERLAP = 0.7  # a new disc needs free space of at least this fraction of its radius
FILL_OVERSAMPLE = 1.8  # diameters drawn cover this multiple of the canvas area
DIST_KEY_SCALE = 4.0  # free-space distances are sorted as integers in 1/4 px


@dataclass
class SynthConfig:
    """Generator options; sizes in pixels at the chosen ``image_size`` (None = scaled default)."""

    image_size: int = 256
    density: float = 0.93  # fraction of packing cells that hold a fragment (others are voids)
    min_size: float | None = None  # smallest fragment diameter (default max(3, S / 64))
    max_size: float | None = None  # largest fragment diameter (default S / 6)
    size_exponent: float = 2.3  # a in p(d) ~ d^-a: larger means more tiny fragments
    gap_width: Tuple[float, float] = (0.5, 1.8)  # contact gap half-width range at S = 256
    min_area: int = 6  # smaller fragments are drawn as fines and not annotated
    extra: Dict[str, float] = field(default_factory=dict)

    def sizes(self) -> Tuple[float, float]:
        """(min_size, max_size) resolved against the image size."""
        lo = self.min_size if self.min_size is not None else max(3.0, self.image_size / 64)
        hi = self.max_size if self.max_size is not None else self.image_size / 6
        if not 1.0 <= lo <= hi:
            raise ValueError(f"need 1 <= min_size <= max_size, got {lo} and {hi}")
        return float(lo), float(hi)

    def validate(self) -> None:
        """Raise ValueError for options that cannot produce an image."""
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32, got {self.image_size}")
        if not 0.0 < self.density <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {self.density}")
        self.sizes()

    def as_dict(self) -> Dict[str, object]:
        """JSON-ready options, sizes resolved."""
        out = asdict(self)
        out["min_size"], out["max_size"] = self.sizes()
        return out


def _smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to unit standard deviation."""
    noise = rng.standard_normal(shape).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigmaX=max(sigma, 0.3))
    return noise / max(float(noise.std()), 1e-6)


def _power_law(rng: np.random.Generator, n: int, lo: float, hi: float, a: float) -> np.ndarray:
    """n samples of p(d) ~ d^-a on [lo, hi] by inverse CDF."""
    u = rng.random(n)
    if abs(a - 1.0) < 1e-6:
        return lo * (hi / lo) ** u
    e = 1.0 - a
    return (lo**e + u * (hi**e - lo**e)) ** (1.0 / e)


def _place_discs(rng, size: int, lo: float, hi: float, a: float):
    """Centres (n, 2) xy and radii (n,) of discs packed largest first into a size x size canvas."""
    mean_area = np.mean(np.pi * _power_law(rng, 2000, lo, hi, a) ** 2 / 4)
    count = int(FILL_OVERSAMPLE * size * size / mean_area) + 1
    diameters = np.sort(_power_law(rng, count, lo, hi, a))[::-1]
    free = np.ones((size, size), dtype=np.uint8)
    centres, radii = [], []
    # Random numbers drawn up front: per-call generator overhead dominates this loop otherwise.
    picks, offsets = rng.random(len(diameters)), rng.random((len(diameters), 2)) - 0.5
    needles = -np.ceil(PLACEMENT_OVERLAP * diameters / 2 * DIST_KEY_SCALE).astype(np.int16)
    smallest = PLACEMENT_OVERLAP * lo / 2 * DIST_KEY_SCALE
    order, keys, stale = None, None, 0
    for i, d in enumerate(diameters):
        # Recomputing the free-space distance after every disc is exact but slow for hundreds of
        # small discs; refreshing every few placements only lets small discs overlap a bit more
        # (the power diagram below splits overlaps anyway).
        if order is None or stale >= 2 + len(centres) // 10:
            dist = cv2.distanceTransform(free, cv2.DIST_L2, 3)
            # Quarter-pixel int16 keys: numpy radix-sorts them, far faster than sorting floats.
            flat_keys = (np.minimum(dist.ravel(), 8000) * DIST_KEY_SCALE).astype(np.int16)
            order = np.argsort(-flat_keys, kind="stable")
            keys = -flat_keys[order]
            stale = 0
            if -int(keys[0]) < smallest:
                break  # not even the smallest fragment fits anywhere
        count = int(np.searchsorted(keys, needles[i], side="right"))
        if count == 0:
            continue
        y, x = divmod(int(order[int(picks[i] * count)]), size)
        if not free[y, x]:
            continue
        cv2.circle(free, (x, y), max(1, int(round(d * 0.45))), 0, thickness=-1)
        centres.append((x + offsets[i, 0], y + offsets[i, 1]))
        radii.append(d / 2)
        stale += 1
    return np.asarray(centres, dtype=np.float64), np.asarray(radii, dtype=np.float64)


def _power_cells(rng, size: int, margin: int, centres, radii, scale: float) -> np.ndarray:
    """(size, size) int32 cell ids of the power diagram, on noise-warped pixel positions of
    the image window [margin, margin + size) of the packing canvas.

    Each seed only competes within a window of 2.5 r + 8 px around it (cells of a dense packing
    do not reach further); pixels no window covers fall back to an exact k-nearest search.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + margin
    warps = []
    for _ in range(2):
        warp = 1.2 * scale * _smooth_noise(rng, (size, size), 2.0 * scale)
        warps.append(warp + 2.5 * scale * _smooth_noise(rng, (size, size), 8.0 * scale))
    px, py = xx + warps[0], yy + warps[1]
    best = np.full((size, size), np.inf, dtype=np.float32)
    cells = np.full((size, size), -1, dtype=np.int32)
    for i, ((cx, cy), r) in enumerate(zip(centres, radii)):
        reach = 2.5 * r + 8.0 * scale
        x0, x1 = max(0, int(cx - margin - reach)), min(size, int(cx - margin + reach) + 1)
        y0, y1 = max(0, int(cy - margin - reach)), min(size, int(cy - margin + reach) + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        power = (px[y0:y1, x0:x1] - cx) ** 2 + (py[y0:y1, x0:x1] - cy) ** 2 - r * r
        better = power < best[y0:y1, x0:x1]
        best[y0:y1, x0:x1][better] = power[better]
        cells[y0:y1, x0:x1][better] = i
    missing = cells < 0
    if missing.any():
        pts = np.stack([px[missing], py[missing]], axis=1).astype(np.float64)
        k = min(6, len(centres))
        _, idx = cKDTree(centres).query(pts, k=k)
        idx = idx.reshape(len(pts), k)
        power = ((pts[:, None, :] - centres[idx]) ** 2).sum(-1) - radii[idx] ** 2
        cells[missing] = idx[np.arange(len(pts)), np.argmin(power, axis=1)]
    return cells


def _cell_edges(cells: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour is another cell: a 4-connected separating line."""
    edge = np.zeros(cells.shape, dtype=bool)
    edge[:, :-1] |= cells[:, :-1] != cells[:, 1:]
    edge[:-1, :] |= cells[:-1, :] != cells[1:, :]
    return edge


def _fragments(rng, cells: np.ndarray, cfg: SynthConfig, scale: float):
    """Instance ids (H, W) int32 (0 = gap, void or fines) from the cropped cell map."""
    n_cells = int(cells.max()) + 1
    solid = rng.random(n_cells) < cfg.density
    edges = _cell_edges(cells)
    dist = cv2.distanceTransform((~edges).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    g_lo, g_hi = (v * scale for v in cfg.gap_width)
    gap = g_lo + (g_hi - g_lo) * (0.5 + 0.5 * np.tanh(_smooth_noise(rng, cells.shape, 6 * scale)))
    body = (dist > gap) & solid[cells]
    n_comp, comp, stats, _ = cv2.connectedComponentsWithStats(body.astype(np.uint8), connectivity=4)
    comp_cell = np.full(n_comp, -1, dtype=np.int64)
    comp_cell[comp[body]] = cells[body]
    areas = stats[:, cv2.CC_STAT_AREA].astype(np.int64)
    order = np.argsort(-areas[1:], kind="stable") + 1
    _, first = np.unique(comp_cell[order], return_index=True)  # largest piece of every cell
    keep = np.zeros(n_comp, dtype=bool)
    keep[order[first]] = True
    keep &= areas >= cfg.min_area
    keep[0] = False
    new_id = np.zeros(n_comp, dtype=np.int32)
    new_id[keep] = np.arange(1, int(keep.sum()) + 1)
    return new_id[comp]


def _facet_ids(rng, shape: Tuple[int, int], spacing: float) -> np.ndarray:
    """Voronoi cells of one jittered seed per grid square of side ``spacing`` (Worley noise):
    each pixel only checks the seeds of the 3 x 3 squares around it."""
    h, w = shape
    gh, gw = int(h / spacing) + 3, int(w / spacing) + 3
    seeds = (np.stack(np.mgrid[0:gh, 0:gw], axis=-1) - 1 + rng.random((gh, gw, 2))) * spacing
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gy, gx = (yy // spacing).astype(np.int64) + 1, (xx // spacing).astype(np.int64) + 1
    best = np.full(shape, np.inf, dtype=np.float32)
    ids = np.zeros(shape, dtype=np.int64)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            sy, sx = gy + dy, gx + dx
            d2 = (seeds[sy, sx, 0] - yy) ** 2 + (seeds[sy, sx, 1] - xx) ** 2
            better = d2 < best
            best[better] = d2[better]
            ids[better] = (sy * gw + sx)[better]
    return ids


def _facet_shading(rng, instances: np.ndarray, scale: float) -> np.ndarray:
    """Per-pixel brightness factor of planar facets lit from one direction (~0.45..1.25)."""
    azimuth = rng.uniform(0, 2 * np.pi)
    light = np.array([math.cos(azimuth), math.sin(azimuth), 1.6])
    light /= np.linalg.norm(light)
    facet = _facet_ids(rng, instances.shape, 7.7 * scale)
    key = instances.astype(np.int64) * (int(facet.max()) + 1) + facet
    uniq, inverse = np.unique(key.ravel(), return_inverse=True)
    tilt = rng.normal(0.0, 0.6, size=(len(uniq), 2))
    normals = np.concatenate([tilt, np.ones((len(uniq), 1))], axis=1)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    lambert = np.clip(normals @ light, 0.0, 1.0)
    return (0.45 + 0.8 * lambert)[inverse].reshape(instances.shape)


def _rock_layer(rng, instances: np.ndarray, base: np.ndarray, scale: float) -> np.ndarray:
    """(H, W, 3) float colours of the fragments: colour x facets x rim x grain texture."""
    n = int(instances.max())
    colours = base * rng.uniform(0.7, 1.25, size=(n + 1, 1))
    colours *= 1.0 + rng.normal(0, 0.015, size=(n + 1, 3))  # slight tint per fragment
    other = rng.random(n + 1) < 0.08  # a second lithology in the pile
    colours[other] = ROCK_PALETTE[rng.integers(len(ROCK_PALETTE), size=int(other.sum()))]
    colours[other] *= rng.uniform(0.6, 1.1, size=(int(other.sum()), 1))
    inside = instances > 0
    edge_dist = cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, 3)
    rim = 1.0 - 0.35 * np.exp(-edge_dist / scale)  # edges turn away from the light
    shade = _facet_shading(rng, instances, scale) * rim
    roughness = rng.uniform(0.03, 0.09, size=n + 1)[instances]
    grain = 1.0 + roughness * _smooth_noise(rng, inside.shape, 0.7)
    grain += 0.05 * _smooth_noise(rng, inside.shape, 3.0 * scale)
    speckle = (rng.random(inside.shape) < 0.012) * rng.choice([-0.25, 0.2], size=inside.shape)
    grain += cv2.GaussianBlur(speckle.astype(np.float32), (0, 0), 0.5)
    return colours[instances] * (shade * grain)[..., None]


def _fines_layer(rng, inside: np.ndarray, base: np.ndarray, scale: float) -> np.ndarray:
    """(H, W, 3) float colours between fragments: fine particles, in shadow near fragments."""
    gap_depth = cv2.distanceTransform((~inside).astype(np.uint8), cv2.DIST_L2, 3)
    shadow = 1.0 - np.exp(-gap_depth / (2.5 * scale))  # narrow contact gaps stay dark
    particles = 0.5 + 0.35 * _smooth_noise(rng, inside.shape, 0.8 * scale)
    particles += 0.2 * _smooth_noise(rng, inside.shape, 2.5 * scale)
    level = 0.1 + 0.55 * np.clip(particles, 0.0, 1.0) * shadow
    return base[None, None, :] * level[..., None]


def render_image(rng: np.random.Generator, cfg: SynthConfig) -> Tuple[np.ndarray, np.ndarray]:
    """One synthetic image: ((S, S, 3) uint8 RGB, (S, S) int32 instance ids, 0 = none)."""
    cfg.validate()
    size, scale = cfg.image_size, cfg.image_size / 256.0
    lo, hi = cfg.sizes()
    margin = int(math.ceil(hi / 2)) + 2
    canvas = size + 2 * margin
    centres, radii = _place_discs(rng, canvas, lo, hi, cfg.size_exponent)
    cells = _power_cells(rng, size, margin, centres, radii, scale)
    _, cells = np.unique(cells, return_inverse=True)
    instances = _fragments(rng, cells.reshape(size, size), cfg, scale)

    base = ROCK_PALETTE[rng.integers(len(ROCK_PALETTE))]
    inside = instances > 0
    rock = _rock_layer(rng, instances, base, scale)
    background = _fines_layer(rng, inside, base, scale)
    image = np.where(inside[..., None], rock, background)

    yy, xx = np.mgrid[0:size, 0:size] / size
    gx, gy = rng.normal(0, 0.12, size=2)
    light = 1.0 + gx * (xx - 0.5) + gy * (yy - 0.5) - 0.18 * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2)
    image = image * light[..., None]
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 0.55 * max(scale, 1.0))
    image += rng.normal(0, 2.5, size=image.shape)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), instances

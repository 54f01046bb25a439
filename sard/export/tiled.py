"""Automatic masks on images far larger than the model input: overlapping tiles, each object once.

``TiledMaskGenerator(generator, tile, overlap).generate(image)`` runs any generator with
``generate(image) -> SAM-style records`` (``SardAutomaticMaskGenerator``, SAM's own, a test
oracle) on ``tile`` x ``tile`` windows at native resolution and merges the records:

1. Windows (``tile_boxes``): along each axis n = ceil((L - T) / (T - O)) + 1 starts spread
   evenly from 0 to L - T, so neighbours share at least O pixels; a side L <= T is one window.
2. A mask that comes within ``edge_margin`` px of a window side lying inside the image is cut
   by that window and dropped: the object is taken from a window that holds it whole. Every
   object whose extent is at most O - 2 * edge_margin px lies whole in some window (the one
   whose core, the window minus half the overlap on inner sides, holds its centre), so it
   is found; larger objects may be lost, and are counted (``last_stats``) and warned about.
3. An object whole in several windows is found in each; those copies are merged: candidates
   are ranked by (centre inside the window's core first, then score) and one that overlaps an
   already kept mask *from another window* by more than ``dedup_overlap`` of the smaller of
   the two, |A ∩ B| / min(|A|, |B|), is dropped. The smaller-mask ratio, not IoU, because two
   windows rarely give an object the same outline (context differs): a copy that lost a rim in
   one window is still a copy. Masks of the same window are never compared (the generator
   already suppressed its duplicates), so with one window the output is the generator's own.

Records keep the generator's keys, moved to image coordinates (``bbox``, ``point_coords``,
``crop_box``); ``segmentation`` follows ``output_mode`` as in SAM's generator. Memory: each
candidate is held as the mask of its bounding box, never as a full-image array.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
import torch
from segment_anything.utils.amg import mask_to_rle_pytorch, rle_to_mask

from sard.amg_settings import OUTPUT_MODES

logger = logging.getLogger(__name__)

Box = Tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)


def tile_starts(length: int, tile: int, overlap: int) -> List[int]:
    """Window starts along one side: 0, ..., length - tile, evenly spread (rounded) so that
    neighbouring windows share at least ``overlap`` px; ``[0]`` when ``length <= tile``."""
    if tile < 1:
        raise ValueError(f"tile must be >= 1 px, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap must be in [0, tile = {tile}), got {overlap}")
    if length <= tile:
        return [0]
    count = math.ceil((length - tile) / (tile - overlap)) + 1
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def tile_boxes(hw: Sequence[int], tile: int, overlap: int) -> List[Box]:
    """Windows (x0, y0, x1, y1) covering an (H, W) image, row by row."""
    h, w = (int(v) for v in hw)
    return [
        (x, y, min(x + tile, w), min(y + tile, h))
        for y in tile_starts(h, tile, overlap)
        for x in tile_starts(w, tile, overlap)
    ]


def tile_cores(hw: Sequence[int], boxes: Sequence[Box]) -> List[Box]:
    """Each window's core: its part nearer to it than to any neighbour along each axis (the
    seam between two overlapping windows is the middle of their overlap). Cores partition the
    image."""
    h, w = (int(v) for v in hw)

    def bounds(starts: List[int], ends: List[int], length: int) -> Dict[int, Tuple[float, float]]:
        out = {}
        for i, s in enumerate(starts):
            lo = 0.0 if i == 0 else (s + ends[i - 1]) / 2
            hi = float(length) if i == len(starts) - 1 else (starts[i + 1] + ends[i]) / 2
            out[s] = (lo, hi)
        return out

    xs = sorted({(b[0], b[2]) for b in boxes})
    ys = sorted({(b[1], b[3]) for b in boxes})
    bx = bounds([s for s, _ in xs], [e for _, e in xs], w)
    by = bounds([s for s, _ in ys], [e for _, e in ys], h)
    return [(bx[b[0]][0], by[b[1]][0], bx[b[0]][1], by[b[1]][1]) for b in boxes]


def record_mask(segmentation: Any) -> np.ndarray:
    """A record's mask as (h, w) bool: a bool array, SAM's uncompressed RLE or a COCO RLE."""
    if isinstance(segmentation, np.ndarray):
        return segmentation.astype(bool, copy=False)
    counts = segmentation["counts"]
    if isinstance(counts, list):
        return rle_to_mask(segmentation)
    rle = {"size": segmentation["size"], "counts": counts}
    if isinstance(counts, str):
        rle["counts"] = counts.encode()
    return mask_util.decode(rle).astype(bool)


def encode_full(crop: np.ndarray, box: Box, hw: Sequence[int], output_mode: str) -> Any:
    """The crop mask placed at ``box`` in an (H, W) frame, in ``output_mode``'s format."""
    full = np.zeros(tuple(int(v) for v in hw), dtype=bool)
    full[box[1] : box[3], box[0] : box[2]] = crop
    if output_mode == "binary_mask":
        return full
    if output_mode == "uncompressed_rle":
        return mask_to_rle_pytorch(torch.from_numpy(full)[None])[0]
    rle = mask_util.encode(np.asfortranarray(full))
    rle["counts"] = rle["counts"].decode("utf-8")
    return rle


@dataclass
class Candidate:
    """One mask of one window, in image coordinates: tight box (x1, y1 exclusive) + its crop."""

    window: int
    order: int
    box: Box
    crop: np.ndarray
    score: float
    owned: bool
    record: Dict[str, Any]

    @property
    def area(self) -> int:
        return int(self.crop.sum())


@dataclass
class TilingStats:
    """What merging did on the last image: windows, masks found, dropped at window sides (cut),
    merged as copies of an object found whole elsewhere, kept. Objects seen only cut (pieces
    covered by no kept mask; overlapping pieces from neighbouring windows are one object, its
    extent that of their union): ``lost`` those larger than the overlap keeps whole (the tiling
    could not find them whole), with their union boxes and largest extent in px; ``unmatched``
    the smaller ones (the generator saw them cut but missed them where they lay whole);
    ``generator_counts``: the generator's ``last_counts`` summed over windows, if it has them."""

    windows: int = 0
    found: int = 0
    cut: int = 0
    merged: int = 0
    kept: int = 0
    lost: int = 0
    lost_max_extent: int = 0
    lost_boxes: List[Box] = field(default_factory=list)
    unmatched: int = 0
    generator_counts: Dict[str, Any] = field(default_factory=dict)

    def add_generator_counts(self, counts: Dict[str, Any]) -> None:
        """Sum a generator's per-window ``last_counts`` (the maximum for ``max_*`` keys)."""
        for key, value in counts.items():
            if value is None:
                self.generator_counts.setdefault(key, None)
                continue
            old = self.generator_counts.get(key)
            if old is None:
                self.generator_counts[key] = value
            else:
                self.generator_counts[key] = (
                    max(old, value) if key.startswith("max") else old + value
                )


def _boxes_overlap(boxes: np.ndarray, box: Box) -> np.ndarray:
    """(N,) bool: which of (N, 4) boxes (x1, y1 exclusive) share an area with ``box``."""
    return (
        (boxes[:, 0] < box[2])
        & (boxes[:, 2] > box[0])
        & (boxes[:, 1] < box[3])
        & (boxes[:, 3] > box[1])
    )


def _intersection(a: Candidate, b: Candidate) -> int:
    """|A ∩ B| of two candidates' masks, through the overlap of their boxes."""
    x0, y0 = max(a.box[0], b.box[0]), max(a.box[1], b.box[1])
    x1, y1 = min(a.box[2], b.box[2]), min(a.box[3], b.box[3])
    if x1 <= x0 or y1 <= y0:
        return 0
    sa = a.crop[y0 - a.box[1] : y1 - a.box[1], x0 - a.box[0] : x1 - a.box[0]]
    sb = b.crop[y0 - b.box[1] : y1 - b.box[1], x0 - b.box[0] : x1 - b.box[0]]
    return int(np.logical_and(sa, sb).sum())


def overlap_of_smaller(a: Candidate, b: Candidate) -> float:
    """|A ∩ B| / min(|A|, |B|) of two candidates' masks."""
    inter = _intersection(a, b)
    return inter / float(min(a.area, b.area)) if inter else 0.0


def covered_fraction(a: Candidate, by: Candidate) -> float:
    """|a ∩ by| / |a|."""
    return _intersection(a, by) / float(max(a.area, 1))


class TiledMaskGenerator:
    """Overlapping windows of ``tile`` px sharing >= ``overlap`` px, each object kept once (see
    the module doc). ``generator`` needs ``generate(image) -> records`` with a ``segmentation``
    (bool array or RLE) per record; ``predicted_iou`` (or ``score``) ranks copies."""

    def __init__(
        self,
        generator: Any,
        tile: int = 1024,
        overlap: int = 256,
        edge_margin: int = 2,
        dedup_overlap: float = 0.5,
        output_mode: str = "coco_rle",
    ) -> None:
        if tile < 1 or not 0 <= overlap < tile:
            raise ValueError(f"need tile >= 1 and 0 <= overlap < tile, got {tile} and {overlap}")
        if edge_margin < 1:
            raise ValueError(
                f"edge_margin must be >= 1 px (a mask on the side is cut), got {edge_margin}"
            )
        if 2 * edge_margin >= overlap and overlap > 0:
            raise ValueError(
                f"tile overlap {overlap} px leaves no room for whole objects with edge_margin "
                f"{edge_margin} px on both sides; use an overlap above {2 * edge_margin}"
            )
        if not 0.0 < dedup_overlap <= 1.0:
            raise ValueError(f"dedup_overlap must be in (0, 1], got {dedup_overlap}")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
        self.generator = generator
        self.tile = int(tile)
        self.overlap = int(overlap)
        self.edge_margin = int(edge_margin)
        self.dedup_overlap = float(dedup_overlap)
        self.output_mode = output_mode
        self.last_stats = TilingStats()

    @property
    def max_whole_extent(self) -> int:
        """Objects up to this many px across are always found whole in some window."""
        return self.overlap - 2 * self.edge_margin

    def generate(
        self,
        image: np.ndarray,
        progress: Optional[Callable[[Sequence[Box]], Sequence[Box]]] = None,
    ) -> List[Dict[str, Any]]:
        """(H, W, 3) image -> records over the whole image. ``progress`` wraps the list of
        windows (e.g. ``lambda w: tqdm(w, desc="tiles")``) to show one step per window."""
        hw = tuple(int(v) for v in image.shape[:2])
        boxes = tile_boxes(hw, self.tile, self.overlap)
        cores = tile_cores(hw, boxes)
        stats = TilingStats(windows=len(boxes))
        whole, cut = [], []
        index = {b: i for i, b in enumerate(boxes)}
        for box in progress(boxes) if progress else boxes:
            window = index[box]
            records = self.generator.generate(image[box[1] : box[3], box[0] : box[2]])
            stats.add_generator_counts(getattr(self.generator, "last_counts", {}))
            for order, record in enumerate(records):
                cand = self._candidate(record, window, order, box, cores[window])
                if cand is None:
                    continue
                stats.found += 1
                (cut if self._is_cut(cand.box, box, hw) else whole).append(cand)
        kept = self._merge(whole, stats)
        self._count_lost(cut, kept, stats)
        stats.cut = len(cut)
        stats.kept = len(kept)
        self.last_stats = stats
        if stats.lost:
            logger.warning(
                "%d object(s) up to %d px across were seen only cut by tile sides: a tile "
                "overlap of %d px keeps objects up to %d px whole; if they are real objects, "
                "raise it above %d px",
                stats.lost,
                stats.lost_max_extent,
                self.overlap,
                self.max_whole_extent,
                stats.lost_max_extent + 2 * self.edge_margin,
            )
        kept.sort(key=lambda c: (c.window, c.order))
        return [self._output(c, boxes[c.window], hw) for c in kept]

    def _candidate(
        self, record: Dict[str, Any], window: int, order: int, box: Box, core: Tuple
    ) -> Optional[Candidate]:
        mask = record_mask(record["segmentation"])
        expected = (box[3] - box[1], box[2] - box[0])
        if mask.shape != expected:
            raise ValueError(
                f"the generator returned a {mask.shape} mask for a {expected} tile; it must "
                "return masks of the image it is given"
            )
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            return None
        local = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
        crop = mask[local[1] : local[3], local[0] : local[2]]
        glob = (local[0] + box[0], local[1] + box[1], local[2] + box[0], local[3] + box[1])
        cx, cy = (glob[0] + glob[2]) / 2, (glob[1] + glob[3]) / 2
        owned = core[0] <= cx < core[2] and core[1] <= cy < core[3]
        score = float(record.get("predicted_iou", record.get("score", 0.0)))
        return Candidate(window, order, glob, crop, score, owned, record)

    def _is_cut(self, obj: Box, window: Box, hw: Tuple[int, int]) -> bool:
        """True when the mask comes within edge_margin px of a window side inside the image."""
        m = self.edge_margin
        h, w = hw
        return bool(
            (window[0] > 0 and obj[0] < window[0] + m)
            or (window[1] > 0 and obj[1] < window[1] + m)
            or (window[2] < w and obj[2] > window[2] - m)
            or (window[3] < h and obj[3] > window[3] - m)
        )

    def _merge(self, whole: List[Candidate], stats: TilingStats) -> List[Candidate]:
        """Greedy: owner windows first, then by score; drop copies from other windows."""
        ranked = sorted(whole, key=lambda c: (not c.owned, -c.score, c.window, c.order))
        kept: List[Candidate] = []
        kept_boxes = np.zeros((0, 4), dtype=np.int64)
        kept_windows = np.zeros(0, dtype=np.int64)
        for cand in ranked:
            b = np.asarray(cand.box)
            near = np.flatnonzero((kept_windows != cand.window) & _boxes_overlap(kept_boxes, b))
            if any(overlap_of_smaller(cand, kept[j]) > self.dedup_overlap for j in near):
                stats.merged += 1
                continue
            kept.append(cand)
            kept_boxes = np.vstack([kept_boxes, b[None]])
            kept_windows = np.append(kept_windows, cand.window)
        return kept

    def _count_lost(self, cut: List[Candidate], kept: List[Candidate], stats: TilingStats) -> None:
        """Cut masks that no kept mask covers by half are pieces of objects seen only cut;
        pieces that overlap each other (seen from neighbouring windows) are one object, whose
        extent is that of their union (see ``TilingStats``)."""
        boxes = np.asarray([c.box for c in kept], dtype=np.int64).reshape(-1, 4)
        pieces = []
        for cand in cut:
            near = np.flatnonzero(_boxes_overlap(boxes, cand.box))
            if not any(covered_fraction(cand, kept[j]) >= 0.5 for j in near):
                pieces.append(cand)
        parent = list(range(len(pieces)))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        piece_boxes = np.asarray([c.box for c in pieces], dtype=np.int64).reshape(-1, 4)
        for i, cand in enumerate(pieces):
            for j in np.flatnonzero(_boxes_overlap(piece_boxes[:i], cand.box)):
                if pieces[j].window != cand.window and covered_fraction(cand, pieces[j]) > 0:
                    parent[root(i)] = root(int(j))
        groups: Dict[int, List[int]] = {}
        for i in range(len(pieces)):
            groups.setdefault(root(i), []).append(i)
        for members in groups.values():
            b = piece_boxes[members]
            union = (int(b[:, 0].min()), int(b[:, 1].min()), int(b[:, 2].max()), int(b[:, 3].max()))
            extent = max(union[2] - union[0], union[3] - union[1])
            if extent <= self.max_whole_extent:
                stats.unmatched += 1
                continue
            stats.lost += 1
            stats.lost_max_extent = max(stats.lost_max_extent, extent)
            stats.lost_boxes.append(union)

    def _output(self, cand: Candidate, window: Box, hw: Tuple[int, int]) -> Dict[str, Any]:
        """The generator's record moved from window to image coordinates."""
        dx, dy = window[0], window[1]
        out = dict(cand.record)
        out["segmentation"] = encode_full(cand.crop, cand.box, hw, self.output_mode)
        out["area"] = cand.area
        if "bbox" in out:
            x, y, w, h = out["bbox"]
            out["bbox"] = [x + dx, y + dy, w, h]
        if "point_coords" in out:
            out["point_coords"] = [[p[0] + dx, p[1] + dy] for p in out["point_coords"]]
        if "crop_box" in out:
            x, y, w, h = out["crop_box"]
            out["crop_box"] = [x + dx, y + dy, w, h]
        return out

"""Cut a COCO instance split into square tiles at native resolution.

Large microscopy or remote-sensing images hold objects a few pixels wide; resizing a whole
1024 px image to a 128-256 px model input erases them, while training at full size costs
16-64x more per step. Tiling keeps every pixel at its original scale: each image is covered by
``tile`` x ``tile`` windows on a regular grid with step ``tile``; where the size is not a
multiple of ``tile`` the last window is aligned to the image edge (it overlaps its neighbour,
so no pixel is dropped and no padding is invented). Images smaller than ``tile`` on a side keep
that side whole.

Each instance is clipped to each window it touches; a clipped piece with fewer than
``min_area`` pixels is dropped (a sliver of an object cut by the border carries no shape).
Tiles are named ``<image stem>__y<top>_x<left>.png``; the COCO file records the source image
and offset of each tile under ``"tile_of"``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Tuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from .converters import mask_annotation, write_coco_split
from .image_io import read_image
from .masks import decode_segmentation


def tile_starts(length: int, tile: int) -> List[int]:
    """Window starts covering ``[0, length)`` with step ``tile``, the last one flush with the end.

    ``length <= tile`` gives ``[0]`` (one window holding the whole side).
    """
    if tile <= 0:
        raise ValueError(f"tile must be positive, got {tile}")
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, tile))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def _instance_crops(anns: List[dict], height: int, width: int) -> List[Tuple[dict, int, int, Any]]:
    """[(annotation, top, left, bool mask inside its bounding box)], empty masks left out.

    Instances are decoded one at a time and only their box is kept, so memory grows with the
    objects' area, not with (instances x image area) - large images hold thousands of objects.
    """
    crops = []
    for ann in anns:
        mask = decode_segmentation(ann["segmentation"], height, width)
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size:
            box = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].copy()
            crops.append((ann, int(rows[0]), int(cols[0]), box))
    return crops


def _pieces_in_window(crops, top: int, left: int, shape: Tuple[int, int], min_area: int):
    """Yield (annotation, bool mask of the window's ``shape``) for each instance with at least
    ``min_area`` pixels inside the window at (top, left), in annotation order."""
    bottom, right = top + shape[0], left + shape[1]
    for ann, r0, c0, box in crops:
        r1, c1 = r0 + box.shape[0], c0 + box.shape[1]
        y0, y1, x0, x1 = max(r0, top), min(r1, bottom), max(c0, left), min(c1, right)
        if y0 >= y1 or x0 >= x1:
            continue
        inside = box[y0 - r0 : y1 - r0, x0 - c0 : x1 - c0]
        if int(inside.sum()) < min_area:
            continue
        piece = np.zeros(shape, dtype=bool)
        piece[y0 - top : y1 - top, x0 - left : x1 - left] = inside
        yield ann, piece


def tile_coco_split(
    json_file: str,
    image_root: str,
    out_dir: str,
    split: str,
    tile: int,
    *,
    min_area: int = 4,
    progress: bool = True,
) -> Dict[str, Any]:
    """Write ``out_dir/<split>.json`` and ``out_dir/<split>/*.png`` tiles; returns statistics.

    Categories are copied unchanged; ``iscrowd`` annotations are clipped like the others.
    """
    if min_area < 1:
        raise ValueError(f"min_area must be at least 1, got {min_area}")
    with open(json_file, encoding="utf-8") as f:
        coco = json.load(f)
    per_image: Dict[Any, List[dict]] = {img["id"]: [] for img in coco["images"]}
    for ann in coco["annotations"]:
        per_image[ann["image_id"]].append(ann)
    image_dir = os.path.join(out_dir, split)
    os.makedirs(image_dir, exist_ok=True)
    images: List[dict] = []
    annotations: List[dict] = []
    for source in tqdm(coco["images"], desc=f"tiles {split}", unit="img", disable=not progress):
        pixels = read_image(os.path.join(image_root, source["file_name"]))
        height, width = pixels.shape[:2]
        crops = _instance_crops(per_image[source["id"]], height, width)
        stem = os.path.splitext(os.path.basename(source["file_name"]))[0]
        for top in tile_starts(height, tile):
            for left in tile_starts(width, tile):
                crop = pixels[top : top + tile, left : left + tile]
                image_id = len(images) + 1
                file_name = f"{stem}__y{top}_x{left}.png"
                Image.fromarray(np.ascontiguousarray(crop)).save(os.path.join(image_dir, file_name))
                images.append(
                    {
                        "id": image_id,
                        "file_name": file_name,
                        "height": int(crop.shape[0]),
                        "width": int(crop.shape[1]),
                        "tile_of": {"image_id": source["id"], "top": top, "left": left},
                    }
                )
                for ann, piece in _pieces_in_window(crops, top, left, crop.shape[:2], min_area):
                    record = mask_annotation(
                        piece, len(annotations) + 1, image_id, ann["category_id"]
                    )
                    record["iscrowd"] = int(ann.get("iscrowd", 0))
                    annotations.append(record)
    return write_coco_split(
        out_dir,
        split,
        images,
        annotations,
        coco["categories"],
        f"{tile} px tiles of {json_file}",
    )

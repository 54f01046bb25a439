"""Load a COCO instance JSON into detectron2's standard dataset dicts, checking it as it goes.

Output, one dict per image (in JSON order)::

    {"file_name": image_root/file_name, "height": H, "width": W, "image_id": id,
     "annotations": [{"bbox": [x, y, w, h], "bbox_mode": XYWH_ABS, "segmentation": RLE or
                      polygons, "category_id": contiguous 0-based, "iscrowd": 0, "area": px}]}

Fatal (raise DatasetError naming the file): invalid JSON, not a COCO instances file, images
missing file_name/height/width, ids that are not integers or strings, duplicate image or
category ids, missing image files, a file_name that leaves the image root (absolute, or with
``..`` climbing out of it; allowed only with ``allow_outside_root=True``), no categories, and no
usable instance at all.
Counted warnings (the item is fixed or skipped): annotations pointing at an unknown image or
category, category ids that are not integers, crowd annotations, empty / zero-area / wrongly
sized masks, RLE masks whose counts are corrupt (they would crash pycocotools), degenerate
polygons, polygons or boxes out of the image (clipped), zero-area or missing boxes (recomputed
from the mask), duplicate annotation ids, images without instances (kept).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Tuple

from .catalog import BOX_MODE_XYWH_ABS
from .masks import (
    clip_polygon,
    rle_problem,
    segmentation_area,
    segmentation_bbox,
    to_compressed_rle,
)
from .problems import DatasetError, ProblemLog

REQUIRED_KEYS = ("images", "annotations", "categories")
MAX_MASK_PIXELS = 2**32 - 1  # pycocotools stores sizes and run lengths as uint32
OUTSIDE_ROOT_OPT_IN = (
    "allow_outside_root=True (register_rockfrag(..., allow_outside_root=True), "
    "tools/validate_dataset.py --allow-outside-root)"
)


def _is_id(value: Any) -> bool:
    """COCO ids are integers (strings are tolerated); a list or a dict is not an id."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def image_path(image_root: str, file_name: Any, allow_outside_root: bool = False) -> str:
    """``image_root/file_name``; raises DatasetError when ``file_name`` is not a relative path
    inside the root (absolute, or climbing out with ``..``) unless ``allow_outside_root``."""
    if not isinstance(file_name, str) or not file_name.strip() or "\x00" in file_name:
        raise DatasetError(f"file_name {file_name!r} is not a file name")
    if not allow_outside_root:
        parts = os.path.normpath(file_name).split(os.sep)
        if os.path.isabs(file_name) or parts[0] == "..":
            where = "is an absolute path" if os.path.isabs(file_name) else "climbs out with '..'"
            raise DatasetError(
                f"file_name {file_name!r} {where}, outside the image root {image_root}; "
                f"make it relative to the root, or opt in with {OUTSIDE_ROOT_OPT_IN}"
            )
    return os.path.join(image_root, file_name)


def read_coco_json(json_file: str) -> Dict[str, Any]:
    """Parse ``json_file`` and check the top-level COCO structure; raises DatasetError."""
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"COCO json not found: {json_file}")
    try:
        with open(json_file, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise DatasetError(f"{json_file}: not valid JSON ({err})") from err
    except UnicodeDecodeError as err:
        raise DatasetError(f"{json_file}: not a UTF-8 text file ({err})") from err
    if not isinstance(data, dict):
        raise DatasetError(f"{json_file}: not a COCO file (top level is {type(data).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise DatasetError(f"{json_file}: not a COCO instances file: missing key(s) {missing}")
    for key in REQUIRED_KEYS:
        if not isinstance(data[key], list):
            raise DatasetError(f"{json_file}: '{key}' must be a list")
    return data


def parse_categories(data: Dict[str, Any], log: ProblemLog) -> Tuple[Dict[int, int], List[str]]:
    """COCO category id -> contiguous 0-based id (ids sorted), and the class names."""
    seen: Dict[int, str] = {}
    if not data["categories"]:
        log.error('\'categories\' is empty: add at least one, e.g. {"id": 1, "name": "grain"}')
    for index, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat:
            log.error(f"categories[{index}] has no 'id'")
            continue
        if not isinstance(cat["id"], int) or isinstance(cat["id"], bool):
            log.error(f"categories[{index}] has id {cat['id']!r}; category ids must be integers")
            continue
        if cat["id"] in seen:
            log.error(f"duplicate category id {cat['id']}")
            continue
        seen[cat["id"]] = str(cat.get("name", cat["id"]))
    ids = sorted(seen)
    return {cid: i for i, cid in enumerate(ids)}, [seen[cid] for cid in ids]


def _parse_images(
    data: Dict[str, Any],
    image_root: str,
    log: ProblemLog,
    check_files: bool,
    allow_outside_root: bool = False,
):
    images: Dict[Any, Dict[str, Any]] = {}
    if not data["images"]:
        log.error("'images' is empty: the dataset has no image to learn from")
    for index, img in enumerate(data["images"]):
        if not isinstance(img, dict) or any(k not in img for k in ("id", "file_name")):
            log.error(f"images[{index}] lacks 'id' or 'file_name'")
            continue
        if not _is_id(img["id"]):
            log.error(f"images[{index}] has id {img['id']!r}; image ids must be integers")
            continue
        height, width = img.get("height"), img.get("width")
        if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
            log.error(f"image {img['file_name']!r}: missing or invalid height/width")
            continue
        if height * width > MAX_MASK_PIXELS:
            log.error(
                f"image {img['file_name']!r}: {width}x{height} is more pixels than COCO masks "
                f"can hold ({MAX_MASK_PIXELS}: pycocotools counts in 32 bits); check the JSON's "
                "height and width, or tile the image (datasets/prepare_tiles.py)"
            )
            continue
        if img["id"] in images:
            log.error(f"duplicate image id {img['id']!r} ({img['file_name']!r})")
            continue
        try:
            path = image_path(image_root, img["file_name"], allow_outside_root)
        except DatasetError as err:
            log.error(f"images[{index}] (id {img['id']!r}): {err}")
            continue
        if check_files and not os.path.isfile(path):
            log.error(f"missing image file {path}")
        images[img["id"]] = {
            "file_name": path,
            "height": height,
            "width": width,
            "image_id": img["id"],
            "annotations": [],
        }
    return images


def _valid_polygons(seg: List[Any], height: int, width: int, ann_ref: str, log: ProblemLog):
    kept = []
    for poly in seg:
        if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
            log.warn("degenerate polygons dropped (fewer than 3 points)", ann_ref)
            continue
        if not all(_is_finite(v) for v in poly):
            log.warn("polygons with non-numeric coordinates dropped", ann_ref)
            continue
        xs, ys = poly[0::2], poly[1::2]
        if min(xs) < 0 or min(ys) < 0 or max(xs) > width or max(ys) > height:
            log.warn("polygons extending outside the image clipped", ann_ref)
            # Clipped here, before any rasterising: far-away vertices (1e8, 1e30) would make
            # pycocotools allocate gigabytes or crash.
            poly = clip_polygon([float(v) for v in poly], height, width)
            if len(poly) < 6:
                continue
        kept.append([float(v) for v in poly])
    return kept


def _check_box(bbox: Any, height: int, width: int, ann_ref: str, log: ProblemLog):
    """Valid (clipped) XYWH box or None when missing/degenerate."""
    if bbox is None:
        log.warn("boxes missing, computed from the mask", ann_ref)
        return None
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_finite, bbox))):
        log.warn("malformed boxes replaced by the mask's box", ann_ref)
        return None
    x0, y0, w, h = (float(v) for v in bbox)
    x1, y1 = x0 + w, y0 + h
    cx0, cy0, cx1, cy1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))
    if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
        log.warn("boxes out of the image bounds clipped", ann_ref)
    if cx1 - cx0 <= 0 or cy1 - cy0 <= 0:
        log.warn("zero-area boxes replaced by the mask's box", ann_ref)
        return None
    return [cx0, cy0, cx1 - cx0, cy1 - cy0]


def _is_finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _parse_annotation(ann, img, cat_map, log: ProblemLog) -> Dict[str, Any] | None:
    height, width = img["height"], img["width"]
    ann_ref = f"annotation {ann.get('id')} of {os.path.basename(img['file_name'])}"
    if ann.get("iscrowd", 0):
        log.warn("crowd annotations skipped", ann_ref)
        return None
    seg = ann.get("segmentation")
    if isinstance(seg, dict):
        size = seg.get("size")
        if (
            not isinstance(size, (list, tuple))
            or list(size) != [height, width]
            or ("counts" not in seg)
        ):
            log.warn("RLE masks whose size differs from the image skipped", ann_ref)
            return None
        problem = rle_problem(seg, height, width)
        if problem is not None:
            log.warn("RLE masks with corrupt counts skipped", f"{ann_ref}: {problem}")
            return None
    elif isinstance(seg, list) and seg:
        seg = _valid_polygons(seg, height, width, ann_ref, log)
        if not seg:
            log.warn("annotations with no usable polygon skipped", ann_ref)
            return None
    else:
        log.warn("annotations without a mask skipped", ann_ref)
        return None
    area = segmentation_area(seg, height, width)
    if area <= 0:
        log.warn("annotations with an empty (zero-area) mask skipped", ann_ref)
        return None
    bbox = _check_box(ann.get("bbox"), height, width, ann_ref, log)
    if bbox is None:
        bbox = segmentation_bbox(seg, height, width)
    if isinstance(seg, dict) and isinstance(seg["counts"], list):
        rle = to_compressed_rle(seg, height, width)
        seg = {"size": list(rle["size"]), "counts": rle["counts"].decode()}
    return {
        "bbox": bbox,
        "bbox_mode": BOX_MODE_XYWH_ABS,
        "segmentation": seg,
        "category_id": cat_map[ann["category_id"]],
        "iscrowd": 0,
        "area": area,
    }


def parse_coco_instances(
    json_file: str,
    image_root: str,
    log: ProblemLog,
    *,
    check_files: bool = True,
    allow_outside_root: bool = False,
) -> Tuple[List[Dict[str, Any]], List[str], Dict[int, int]]:
    """Dataset dicts, class names and the category id map, recording every problem in ``log``
    (never raises for content problems; structural ones raise from :func:`read_coco_json`)."""
    data = read_coco_json(json_file)
    cat_map, class_names = parse_categories(data, log)
    images = _parse_images(data, image_root, log, check_files, allow_outside_root)
    ann_ids = set()
    for index, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann or "category_id" not in ann:
            log.warn("annotations without image_id/category_id skipped", f"annotations[{index}]")
            continue
        if not _is_id(ann["image_id"]):
            log.warn(
                "annotations whose image_id is not an integer skipped",
                f"annotations[{index}]: image_id {ann['image_id']!r}",
            )
            continue
        if not isinstance(ann["category_id"], int) or isinstance(ann["category_id"], bool):
            log.warn(
                "annotations whose category_id is not an integer skipped",
                f"annotations[{index}]: category_id {ann['category_id']!r}",
            )
            continue
        if "id" in ann and _is_id(ann["id"]):
            if ann["id"] in ann_ids:
                log.warn("duplicate annotation ids (kept)", f"id {ann['id']}")
            ann_ids.add(ann["id"])
        img = images.get(ann["image_id"])
        if img is None:
            log.warn(
                "annotations pointing at an unknown image skipped", f"image_id {ann['image_id']!r}"
            )
            continue
        if ann["category_id"] not in cat_map:
            log.warn(
                "annotations with an unknown category skipped",
                f"category_id {ann['category_id']!r}",
            )
            continue
        parsed = _parse_annotation(ann, img, cat_map, log)
        if parsed is not None:
            img["annotations"].append(parsed)
    for img in images.values():
        if not img["annotations"]:
            log.warn("images without instances (kept)", os.path.basename(img["file_name"]))
    if images and not any(img["annotations"] for img in images.values()):
        log.error(
            f"no usable instance: none of the {len(data['annotations'])} annotation(s) could be "
            "used (see the warnings for why each was skipped)"
        )
    return list(images.values()), class_names, cat_map


def load_coco_instances(
    json_file: str,
    image_root: str,
    *,
    dataset_name: str | None = None,
    check_files: bool = True,
    allow_outside_root: bool = False,
) -> List[Dict[str, Any]]:
    """Load ``json_file`` (see module docstring); raise DatasetError on fatal problems, log
    counted warnings for the rest. With ``dataset_name`` the metadata's ``thing_classes`` and
    ``thing_dataset_id_to_contiguous_id`` are filled (or checked against what is set).
    ``allow_outside_root`` accepts file_names outside ``image_root`` (absolute or ``../``)."""
    log = ProblemLog(source=json_file)
    dicts, class_names, cat_map = parse_coco_instances(
        json_file, image_root, log, check_files=check_files, allow_outside_root=allow_outside_root
    )
    log.raise_if_fatal()
    log.emit_warnings()
    if dataset_name is not None:
        _set_class_metadata(dataset_name, json_file, class_names, cat_map)
    return dicts


def _set_class_metadata(
    dataset_name: str, json_file: str, class_names: List[str], cat_map: Dict[int, int]
) -> None:
    from .catalog import MetadataCatalog

    meta = MetadataCatalog.get(dataset_name)
    known = meta.get("thing_classes")
    if known is not None and list(known) != class_names:
        raise DatasetError(
            f"{json_file}: categories {class_names} differ from the thing_classes {list(known)} "
            f"registered for dataset '{dataset_name}'"
        )
    if known is None:
        meta.thing_classes = class_names
    if meta.get("thing_dataset_id_to_contiguous_id") is None:
        meta.thing_dataset_id_to_contiguous_id = dict(cat_map)

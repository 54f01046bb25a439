"""Real annotations -> COCO instance JSON: integer label images and GeoJSON polygons.

Both converters write ``<out_dir>/<split>/<image files>`` (copied unchanged; the loader converts
grayscale/RGBA/16-bit when reading) and ``<out_dir>/<split>.json`` with RLE masks, tight XYWH
boxes and ``info.statistics`` (instances per image, median area, tiny fraction). Problems are
errors naming the file and the reason, or counted warnings where skipping is safe.
"""

from __future__ import annotations

import json
import os
import shutil
from glob import glob
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util

from .image_io import image_size, read_image, read_label_image
from .masks import encode_mask, polygons_to_rle
from .problems import DatasetError, ProblemLog
from .stats import instance_statistics

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


def write_coco_split(
    out_dir: str,
    split: str,
    images: List[dict],
    annotations: List[dict],
    categories: List[dict],
    description: str,
) -> Dict[str, Any]:
    """Write ``<out_dir>/<split>.json`` with statistics in ``info``; returns the statistics."""
    per_image: Dict[Any, List[float]] = {img["id"]: [] for img in images}
    for ann in annotations:
        per_image[ann["image_id"]].append(ann["area"])
    stats = instance_statistics(
        list(per_image.values()), [img["height"] * img["width"] for img in images]
    )
    coco = {
        "info": {"description": description, "split": split, "statistics": stats},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{split}.json"), "w", encoding="utf-8") as f:
        json.dump(coco, f)
    return stats


def copy_images(image_paths: Sequence[str], image_dir: str) -> List[str]:
    """Copy every image into ``image_dir`` and return their file names; two inputs with the
    same file name are an error raised before anything is copied (the second would silently
    overwrite the first)."""
    seen: Dict[str, str] = {}
    for image_path in image_paths:
        file_name = os.path.basename(image_path)
        if file_name in seen:
            raise DatasetError(
                f"two images share the file name {file_name!r}: {seen[file_name]} "
                f"and {image_path}; rename one"
            )
        seen[file_name] = image_path
    os.makedirs(image_dir, exist_ok=True)
    for file_name, image_path in seen.items():
        shutil.copyfile(image_path, os.path.join(image_dir, file_name))
    return list(seen)


def mask_annotation(mask: np.ndarray, ann_id: int, image_id: int, category_id: int) -> dict:
    """COCO annotation of one non-empty bool mask (RLE, tight XYWH box, pixel area)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    box = [
        float(cols[0]),
        float(rows[0]),
        float(cols[-1] - cols[0] + 1),
        float(rows[-1] - rows[0] + 1),
    ]
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": encode_mask(mask),
        "area": int(mask.sum()),
        "bbox": box,
        "iscrowd": 0,
    }


def label_image_masks(labels: np.ndarray) -> List[Tuple[int, np.ndarray]]:
    """[(label value, bool mask)] for every value > 0, in increasing value order."""
    values, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape)
    return [(int(v), inverse == i) for i, v in enumerate(values) if v > 0]


def find_label_pairs(directory: str, mask_suffix: str = "_mask") -> List[Tuple[str, str]]:
    """(image, label image) pairs: ``X<mask_suffix>.{png,tif,tiff}`` with ``X.<image ext>``."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"label-image directory not found: {directory}")
    pairs, missing = [], []
    for ext in (".png", ".tif", ".tiff"):
        for label_path in sorted(glob(os.path.join(directory, f"*{mask_suffix}{ext}"))):
            stem = os.path.basename(label_path)[: -len(mask_suffix + ext)]
            found = [os.path.join(directory, stem + e) for e in IMAGE_EXTENSIONS]
            found = [p for p in found if os.path.isfile(p) and p != label_path]
            if not found:
                missing.append(label_path)
            else:
                pairs.append((found[0], label_path))
    if missing:
        raise DatasetError(
            f"no image found next to label file(s) {missing[:5]} (looked for "
            f"the same name without '{mask_suffix}' and extensions {IMAGE_EXTENSIONS})"
        )
    if not pairs:
        raise DatasetError(f"{directory}: no label images named *{mask_suffix}.png/.tif found")
    return sorted(pairs)


def labels_to_coco(
    pairs: Sequence[Tuple[str, str]],
    out_dir: str,
    split: str,
    *,
    category_name: str = "grain",
    min_area: int = 1,
    description: str = "",
) -> Dict[str, Any]:
    """Integer label images (0 = background, k = instance k) -> ``<out_dir>/<split>.json``.

    Every distinct value k > 0 becomes one instance (kept whole even if it has several
    connected pieces, so decoding the JSON gives back exactly ``labels == k``); instances
    smaller than ``min_area`` pixels are skipped with a counted warning.
    """
    log = ProblemLog(source=f"labels_to_coco({split})")
    # Every pair is read and checked before anything is written: a bad file in the middle
    # leaves no half-converted split behind.
    images, annotations = [], []
    for image_id, (image_path, label_path) in enumerate(pairs, start=1):
        read_image(image_path)  # fails early, naming the file, if it is unreadable
        labels = read_label_image(label_path)
        if labels.shape != image_size(image_path):
            raise DatasetError(
                f"{label_path}: label size {labels.shape} differs from image "
                f"{image_path} of size {image_size(image_path)}"
            )
        images.append({"id": image_id, "height": labels.shape[0], "width": labels.shape[1]})
        count = 0
        for value, mask in label_image_masks(labels):
            if mask.sum() < min_area:
                log.warn(f"instances smaller than {min_area} px skipped", f"{label_path} k={value}")
                continue
            annotations.append(mask_annotation(mask, len(annotations) + 1, image_id, 1))
            count += 1
        if count == 0:
            log.warn("images without instances (kept)", label_path)
    names = copy_images([image for image, _ in pairs], os.path.join(out_dir, split))
    for image, file_name in zip(images, names):
        image["file_name"] = file_name
    log.emit_warnings()
    categories = [{"id": 1, "name": category_name, "supercategory": category_name}]
    return write_coco_split(
        out_dir,
        split,
        images,
        annotations,
        categories,
        description or "converted from label images",
    )


def _ring_to_flat(ring: Any, negate_y: bool) -> List[float] | None:
    """[[x, y(, z)], ...] -> [x0, y0, x1, y1, ...] or None when it has < 3 distinct points."""
    try:
        pts = [(float(p[0]), -float(p[1]) if negate_y else float(p[1])) for p in ring]
    except (TypeError, ValueError, IndexError, KeyError):
        return None
    if len(pts) > 1 and pts[0] == pts[-1]:
        pts = pts[:-1]  # GeoJSON rings repeat the first point at the end
    if len(set(pts)) < 3 or not all(np.isfinite(v) for p in pts for v in p):
        return None
    return [v for p in pts for v in p]


def _valid_parts(shell: List[float], holes: List[List[float]], log: ProblemLog, ref: str):
    """[(shell, holes)] of the polygon, repaired with shapely's ``make_valid`` when it is
    invalid (self-intersecting, or holes crossing the shell); counted when repaired."""
    from shapely import make_valid
    from shapely.geometry import Polygon

    def pairs(flat: List[float]) -> List[Tuple[float, float]]:
        return list(zip(flat[0::2], flat[1::2]))

    polygon = Polygon(pairs(shell), [pairs(h) for h in holes])
    if polygon.is_valid:
        return [(shell, holes)]
    log.warn("self-intersecting or otherwise invalid polygons repaired (shapely make_valid)", ref)
    repaired = make_valid(polygon)
    pieces = getattr(repaired, "geoms", [repaired])
    parts = []
    for piece in pieces:  # a GeometryCollection may also hold lines and points: dropped
        for poly in getattr(piece, "geoms", [piece]):
            if poly.geom_type != "Polygon" or poly.is_empty:
                continue
            flat = [v for xy in list(poly.exterior.coords)[:-1] for v in xy]
            inner = [[v for xy in list(r.coords)[:-1] for v in xy] for r in poly.interiors]
            parts.append((flat, inner))
    return parts


def _polygon_mask(rings: Any, height: int, width: int, negate_y: bool, log: ProblemLog, ref: str):
    """Outer ring minus holes, rasterised (pixel (r, c) covers [c, c+1) x [r, r+1)); invalid
    polygons are repaired first and far-away vertices clipped (``polygons_to_rle``)."""
    flats = [_ring_to_flat(r, negate_y) for r in rings] if isinstance(rings, list) else []
    if not flats or flats[0] is None:
        log.warn("polygons with fewer than 3 points skipped", ref)
        return None
    for flat in flats:
        if flat is not None and (
            min(flat[0::2]) < 0
            or min(flat[1::2]) < 0
            or max(flat[0::2]) > width
            or max(flat[1::2]) > height
        ):
            log.warn("polygons extending outside the image clipped", ref)
            break
    mask = np.zeros((height, width), dtype=bool)
    for shell, holes in _valid_parts(flats[0], [h for h in flats[1:] if h is not None], log, ref):
        part = mask_util.decode(polygons_to_rle([shell], height, width)) > 0
        for hole in holes:
            part &= ~(mask_util.decode(polygons_to_rle([hole], height, width)) > 0)
        mask |= part
    return mask


# Names of geographic (longitude/latitude) coordinate systems, as GeoJSON "crs" members give
# them ("urn:ogc:def:crs:OGC:1.3:CRS84", "EPSG:4326", "urn:ogc:def:crs:EPSG::4269", ...).
GEOGRAPHIC_CRS_MARKERS = ("CRS84", "CRS83", "CRS27", "4326", "4269", "4258", "4283", "4167", "4674")
PIXEL_OPT_IN = "--pixel-coordinates (pixel_coordinates=True)"


def _crs_name(crs: Any) -> str:
    """A readable name of a GeoJSON 2008 "crs" member (named, EPSG-coded or linked)."""
    props = crs.get("properties") if isinstance(crs, dict) else None
    if isinstance(props, dict):
        for key in ("name", "code", "href"):
            if key in props:
                return str(props[key])
    return json.dumps(crs)[:80]


def check_pixel_crs(data: Dict[str, Any], path: str, pixel_coordinates: bool) -> None:
    """Refuse a GeoJSON whose "crs" says its coordinates are geographic or map coordinates.

    SARD reads GeoJSON coordinates as image pixels. A declared CRS means they are degrees or
    metres, which read as pixels would give nonsense masks without any error; the user must
    export pixel coordinates, or say with ``pixel_coordinates`` that they are pixels anyway.
    """
    crs = data.get("crs")
    if crs is None or pixel_coordinates:
        return
    name = _crs_name(crs)
    geographic = any(marker in name.upper() for marker in GEOGRAPHIC_CRS_MARKERS)
    kind = "geographic longitude/latitude" if geographic else "map coordinates"
    raise DatasetError(
        f"{path}: declares crs {name!r} ({kind}), but SARD reads coordinates as image pixels; "
        f"export the annotations in pixel coordinates, or pass {PIXEL_OPT_IN} if they are "
        "pixels anyway"
    )


def _feature_geometry(feature: Any, path: str, index: int):
    """(geometry type, coordinates, properties) of a Feature; DatasetError when it is not one."""
    if not isinstance(feature, dict):
        raise DatasetError(
            f"{path}: feature {index} is a {type(feature).__name__}, not a GeoJSON Feature "
            'object ({"type": "Feature", "geometry": ..., "properties": ...})'
        )
    geometry = feature.get("geometry")
    if geometry is None:
        return None, None, {}
    if not isinstance(geometry, dict):
        raise DatasetError(
            f"{path}: feature {index} has a geometry that is a {type(geometry).__name__}, not "
            'a GeoJSON geometry object ({"type": "Polygon", "coordinates": ...})'
        )
    props = feature.get("properties")
    if props is not None and not isinstance(props, dict):
        raise DatasetError(
            f"{path}: feature {index} has properties that are a {type(props).__name__}, "
            "not an object"
        )
    return geometry.get("type"), geometry.get("coordinates"), props or {}


def geojson_feature_masks(
    geojson_path: str,
    height: int,
    width: int,
    *,
    category_property: str | None,
    default_category: str,
    negate_y: bool,
    log: ProblemLog,
    pixel_coordinates: bool = False,
) -> List[Tuple[str, np.ndarray]]:
    """[(category name, bool mask)] of the Polygon/MultiPolygon features of a FeatureCollection.

    Raises DatasetError for a file that is not a FeatureCollection, a feature or geometry that
    is not an object, and a declared geographic or map "crs" (see :func:`check_pixel_crs`).
    """
    try:
        with open(geojson_path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"GeoJSON file not found: {geojson_path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{geojson_path}: not valid JSON ({err})") from err
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        raise DatasetError(f"{geojson_path}: not a GeoJSON FeatureCollection")
    if not isinstance(data.get("features"), list):
        raise DatasetError(f"{geojson_path}: 'features' must be a list")
    check_pixel_crs(data, geojson_path, pixel_coordinates)
    out = []
    for index, feature in enumerate(data["features"]):
        ref = f"{os.path.basename(geojson_path)} feature {index}"
        kind, coords, props = _feature_geometry(feature, geojson_path, index)
        if kind == "Polygon":
            polygons = [coords]
        elif kind == "MultiPolygon" and isinstance(coords, list):
            polygons = coords
        else:
            log.warn("features that are not Polygon/MultiPolygon skipped", f"{ref}: {kind}")
            continue
        mask = np.zeros((height, width), dtype=bool)
        for rings in polygons:
            part = _polygon_mask(rings, height, width, negate_y, log, ref)
            if part is not None:
                mask |= part
        if not mask.any():
            log.warn("features with an empty mask (outside the image or degenerate) skipped", ref)
            continue
        name = (
            str(props.get(category_property, default_category))
            if category_property
            else default_category
        )
        out.append((name, mask))
    return out


def geojson_to_coco(
    items: Sequence[Tuple[str, str]],
    out_dir: str,
    split: str,
    *,
    category_property: str | None = None,
    default_category: str = "grain",
    negate_y: bool = False,
    pixel_coordinates: bool = False,
) -> Dict[str, Any]:
    """(GeoJSON, image) pairs -> ``<out_dir>/<split>.json``; categories sorted by name.

    Coordinates are pixels, x to the right and y down (``negate_y`` for tools that export
    image space with y up, as QGIS does for an ungeoreferenced raster). A file declaring a
    "crs" is refused unless ``pixel_coordinates`` says its coordinates are pixels anyway.
    Invalid (self-intersecting) polygons are repaired with shapely's ``make_valid`` and counted.
    Every GeoJSON is read before anything is written.
    """
    log = ProblemLog(source=f"geojson_to_coco({split})")
    per_image, names = [], set()
    for geojson_path, image_path in items:
        read_image(image_path)
        height, width = image_size(image_path)
        masks = geojson_feature_masks(
            geojson_path,
            height,
            width,
            category_property=category_property,
            default_category=default_category,
            negate_y=negate_y,
            log=log,
            pixel_coordinates=pixel_coordinates,
        )
        if not masks:
            log.warn("images without instances (kept)", image_path)
        per_image.append((image_path, height, width, masks))
        names.update(name for name, _ in masks)
    cat_ids = {name: i for i, name in enumerate(sorted(names) or [default_category], start=1)}
    file_names = copy_images([item[0] for item in per_image], os.path.join(out_dir, split))
    images, annotations = [], []
    for image_id, (image_path, height, width, masks) in enumerate(per_image, start=1):
        file_name = file_names[image_id - 1]
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        for name, mask in masks:
            annotations.append(mask_annotation(mask, len(annotations) + 1, image_id, cat_ids[name]))
    log.emit_warnings()
    categories = [{"id": i, "name": n, "supercategory": n} for n, i in cat_ids.items()]
    return write_coco_split(
        out_dir, split, images, annotations, categories, "converted from GeoJSON polygons"
    )

"""Check a dataset up front and summarise it: images, instances, sizes, problems.

Fatal problems (the dataset cannot be trained on as given): invalid or non-COCO JSON,
duplicate or malformed image/category ids, images without file_name/size, file_names leaving the
image root, no categories, no usable instance, missing or unreadable images (NaN pixels, too
large to decode), images whose real size differs from the JSON. Everything the loader fixes or
skips is listed as counted warnings, as are images that will be converted (grayscale, RGBA,
16-bit).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from .coco import parse_coco_instances
from .image_io import ImageReadError, read_image
from .problems import DatasetError, ProblemLog
from .stats import format_statistics, instance_statistics, size_histogram

PER_IMAGE_BIN_EDGES = (0, 1, 10, 50, 100, 200, 500, float("inf"))
CONVERTED_MODES = {
    "L": "grayscale",
    "LA": "grayscale+alpha",
    "RGBA": "RGBA",
    "P": "palette",
    "I;16": "16-bit",
    "I;16B": "16-bit",
    "I;16L": "16-bit",
    "I": "32-bit int",
    "F": "float",
    "1": "1-bit",
    "CMYK": "CMYK",
}


@dataclass
class ValidationReport:
    """Outcome of :func:`validate_coco_dataset`."""

    source: str
    fatal: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    stats: Dict[str, Any] = field(default_factory=dict)
    class_counts: Dict[str, int] = field(default_factory=dict)
    size_hist: List[Tuple[str, int]] = field(default_factory=list)
    per_image_hist: List[Tuple[str, int]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no fatal problem was found."""
        return not self.fatal


def _per_image_histogram(counts: List[int]) -> List[Tuple[str, int]]:
    values = np.asarray(counts)
    rows = []
    for lo, hi in zip(PER_IMAGE_BIN_EDGES[:-1], PER_IMAGE_BIN_EDGES[1:]):
        label = (
            (f"{lo:g}" if hi == lo + 1 else f"{lo:g}-{hi - 1:g}")
            if np.isfinite(hi)
            else f">={lo:g}"
        )
        rows.append((label, int(np.sum((values >= lo) & (values < hi)))))
    return rows


def _check_pixels(dicts: List[dict], log: ProblemLog, progress: bool) -> None:
    """Decode every existing image; record unreadable ones and size mismatches as fatal."""
    for d in tqdm(dicts, desc="reading images", unit="img", disable=not progress):
        path = d["file_name"]
        if not os.path.isfile(path):
            continue  # already reported by the loader
        try:
            pixels = read_image(path)
        except ImageReadError as err:
            log.error(str(err))
            continue
        with Image.open(path) as img:
            mode = img.mode
        if mode in CONVERTED_MODES:
            log.warn(f"{CONVERTED_MODES[mode]} images converted to RGB on reading", path)
        if pixels.shape[:2] != (d["height"], d["width"]):
            log.error(
                f"{path}: image is {pixels.shape[1]}x{pixels.shape[0]}, the JSON says "
                f"{d['width']}x{d['height']}"
            )


def validate_coco_dataset(
    json_file: str,
    image_root: str,
    *,
    read_images: bool = True,
    progress: bool = True,
    allow_outside_root: bool = False,
) -> ValidationReport:
    """Load ``json_file`` recording every problem, optionally decode all images, summarise.

    ``allow_outside_root`` accepts file_names outside ``image_root`` (as the loader does)."""
    log = ProblemLog(source=json_file)
    report = ValidationReport(source=json_file)
    try:
        dicts, classes, _ = parse_coco_instances(
            json_file, image_root, log, check_files=True, allow_outside_root=allow_outside_root
        )
    except (DatasetError, FileNotFoundError) as err:
        report.fatal.append(str(err))
        return report
    if read_images:
        _check_pixels(dicts, log, progress)
    report.fatal = list(log.fatal)
    report.warnings = log.warning_lines()
    areas = [[a["area"] for a in d["annotations"]] for d in dicts]
    report.stats = instance_statistics(areas, [d["height"] * d["width"] for d in dicts])
    counts = Counter(a["category_id"] for d in dicts for a in d["annotations"])
    report.class_counts = {name: counts.get(i, 0) for i, name in enumerate(classes)}
    report.size_hist = size_histogram([x for a in areas for x in a])
    report.per_image_hist = _per_image_histogram([len(a) for a in areas])
    return report


def _bar_rows(rows: List[Tuple[str, int]], width: int = 40) -> List[str]:
    peak = max([c for _, c in rows] + [1])
    return [
        f"  {label:>12} {count:7d} {'#' * int(round(width * count / peak))}"
        for label, count in rows
    ]


def format_report(report: ValidationReport) -> str:
    """Human-readable multi-line summary."""
    lines = [f"dataset: {report.source}"]
    if report.stats:
        lines.append("summary: " + format_statistics(report.stats))
        lines.append("classes: " + ", ".join(f"{k}={v}" for k, v in report.class_counts.items()))
        lines.append("object size (sqrt(area)):")
        lines.extend(_bar_rows(report.size_hist))
        lines.append("objects per image:")
        lines.extend(_bar_rows(report.per_image_hist))
    lines.append(f"problems: {len(report.fatal)} fatal, {len(report.warnings)} kind(s) of warning")
    lines.extend(f"  FATAL {m}" for m in report.fatal[:50])
    if len(report.fatal) > 50:
        lines.append(f"  ... and {len(report.fatal) - 50} more fatal problems")
    lines.extend(f"  warning: {w}" for w in report.warnings)
    lines.append("result: " + ("OK" if report.ok else "FAILED (fatal problems above)"))
    return "\n".join(lines)


def resolve_dataset(name_or_json: str, image_root: str | None = None) -> Tuple[str, str]:
    """(json_file, image_root) from a JSON path or a registered dataset name.

    For a JSON path without ``image_root``: the sibling folder named after the JSON's stem
    (``train.json`` -> ``train/``) if it exists, else the JSON's folder.
    """
    if name_or_json.endswith(".json") or os.path.isfile(name_or_json):
        if image_root is None:
            stem_dir = os.path.splitext(name_or_json)[0]
            image_root = stem_dir if os.path.isdir(stem_dir) else os.path.dirname(name_or_json)
        return name_or_json, image_root
    from .catalog import DatasetCatalog, MetadataCatalog

    if name_or_json not in DatasetCatalog.list():
        known = ", ".join(sorted(DatasetCatalog.list())) or "none"
        raise KeyError(
            f"{name_or_json!r} is neither a JSON file nor a registered dataset "
            f"(registered: {known})"
        )
    meta = MetadataCatalog.get(name_or_json)
    if meta.get("json_file") is None:
        raise KeyError(
            f"dataset {name_or_json!r} has no json_file in its metadata (only COCO "
            "instance datasets and their semantic views can be validated)"
        )
    return meta.json_file, image_root or meta.image_root

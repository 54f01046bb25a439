"""Semantic-segmentation datasets in detectron2's layouts, and a semantic view of instances.

Dataset dicts: {"file_name", "sem_seg_file_name", "height", "width", "image_id"}; label maps
hold train ids 0..K-1 with 255 = ignore.

* Cityscapes: ``cityscapes/leftImg8bit/<split>/<city>/*_leftImg8bit.png`` and
  ``cityscapes/gtFine/<split>/<city>/*_gtFine_labelTrainIds.png`` (19 classes).
* ADE20K: ``ADEChallengeData2016/images/{training,validation}/*.jpg`` and
  ``ADEChallengeData2016/annotations_detectron2/{training,validation}/*.png`` (150 classes;
  the official annotations minus one, 0 -> 255).
* RockFrag semantic view: an instance dataset's dicts keep their ``annotations`` and gain
  ``"sem_seg_from_instances": {"boundary_width": b}``; the mapper renders the label map with
  :func:`instances_to_semantic` (0 background, 1 + category for instance pixels, and with b > 0
  a last class "boundary" for instance pixels within b pixels of another label).
"""

from __future__ import annotations

import os
from glob import glob
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image
from scipy import ndimage

from .image_io import image_size
from .masks import decode_segmentation
from .problems import DatasetError

IGNORE_LABEL = 255

# fmt: off
CITYSCAPES_CLASSES = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
]

# Cityscapes label id -> train id (ids not listed map to 255), from the official label table.
CITYSCAPES_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
    26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}

ADE20K_CLASSES = [
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug",
    "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning",
    "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel", "pole",
    "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van",
    "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool",
    "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle",
    "lake", "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase",
    "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
]
# fmt: on


def _require_dir(path: str, what: str) -> None:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} directory not found: {path}")


def load_cityscapes_semantic(image_dir: str, gt_dir: str) -> List[Dict[str, Any]]:
    """Cityscapes fine semantic dicts: every ``<city>/*_leftImg8bit.png`` under ``image_dir``
    paired with ``<city>/*_gtFine_labelTrainIds.png`` under ``gt_dir`` (missing ones fatal)."""
    _require_dir(image_dir, "Cityscapes image")
    _require_dir(gt_dir, "Cityscapes gtFine")
    images = sorted(glob(os.path.join(image_dir, "*", "*_leftImg8bit.png")))
    if not images:
        raise DatasetError(f"{image_dir}: no */*_leftImg8bit.png images found")

    def label_of(path: str) -> Tuple[str, str]:
        city = os.path.basename(os.path.dirname(path))
        stem = os.path.basename(path)[: -len("_leftImg8bit.png")]
        return stem, os.path.join(gt_dir, city, stem + "_gtFine_labelTrainIds.png")

    hint = "create *_labelTrainIds.png with datasets/prepare_cityscapes_sem_seg.py"
    return _paired_dicts(images, gt_dir, label_of, hint)


def load_ade20k_semantic(image_dir: str, gt_dir: str) -> List[Dict[str, Any]]:
    """ADE20K dicts: ``image_dir/*.jpg`` paired with ``gt_dir/<stem>.png`` (missing ones fatal)."""
    _require_dir(image_dir, "ADE20K image")
    _require_dir(gt_dir, "ADE20K annotations_detectron2")
    images = sorted(glob(os.path.join(image_dir, "*.jpg")))
    if not images:
        raise DatasetError(f"{image_dir}: no *.jpg images found")

    def label_of(path: str) -> Tuple[str, str]:
        stem = os.path.splitext(os.path.basename(path))[0]
        return stem, os.path.join(gt_dir, stem + ".png")

    hint = "create annotations_detectron2 with datasets/prepare_ade20k_sem_seg.py"
    return _paired_dicts(images, gt_dir, label_of, hint)


def _paired_dicts(
    images: List[str], gt_dir: str, label_of: Callable[[str], Tuple[str, str]], hint: str
) -> List[Dict[str, Any]]:
    """One dict per image, ``label_of(image) -> (image_id, label path)``; a DatasetError (with
    ``hint``, how to make them) when any label file is missing."""
    dicts, missing = [], []
    for path in images:
        stem, gt = label_of(path)
        if not os.path.isfile(gt):
            missing.append(gt)
            continue
        dicts.append(_semantic_dict(path, gt, stem))
    if missing:
        raise DatasetError(
            f"{gt_dir}: {len(missing)} label file(s) missing, e.g. {missing[0]} ({hint})"
        )
    return dicts


def _semantic_dict(image_path: str, gt_path: str, image_id: str) -> Dict[str, Any]:
    # Header-only read keeps loading cheap; the mapper checks the label has the same size.
    height, width = image_size(image_path)
    return {
        "file_name": image_path,
        "sem_seg_file_name": gt_path,
        "height": height,
        "width": width,
        "image_id": image_id,
    }


def cityscapes_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map a Cityscapes ``*_labelIds.png`` array to train ids (uint8, 255 = ignore)."""
    table = np.full(256, IGNORE_LABEL, dtype=np.uint8)
    for label_id, train_id in CITYSCAPES_ID_TO_TRAIN_ID.items():
        table[label_id] = train_id
    return table[np.clip(label_ids, 0, 255).astype(np.int64)]


def ade20k_to_train_ids(annotation: np.ndarray) -> np.ndarray:
    """Official ADE20K annotation (0 = other, 1..150) -> train ids 0..149, 0 -> 255."""
    return (annotation.astype(np.int64) - 1).astype(np.uint8)  # 0 - 1 wraps to 255


def read_sem_seg(path: str, height: int, width: int) -> np.ndarray:
    """Read a label PNG as (H, W) int64 and check it matches the image size."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"semantic label file not found: {path}")
    labels = np.asarray(Image.open(path))
    if labels.ndim != 2:
        raise DatasetError(f"{path}: semantic label must be single-channel, got {labels.shape}")
    if labels.shape != (height, width):
        raise DatasetError(
            f"{path}: label size {labels.shape} differs from the image size {(height, width)}"
        )
    return labels.astype(np.int64)


def instances_to_semantic(
    annotations: Sequence[Dict[str, Any]],
    height: int,
    width: int,
    boundary_width: int = 0,
    num_thing_classes: int = 1,
) -> np.ndarray:
    """Render instance annotations to a label map (int64, (H, W)).

    label = 0 for background, 1 + category_id for instance pixels (later instances win where
    they overlap) and, when ``boundary_width`` b > 0, ``1 + num_thing_classes`` for instance
    pixels whose (2b+1)x(2b+1) neighbourhood holds a different instance or background: the
    contact and outline pixels that separate touching fragments.
    """
    classes = np.zeros((height, width), dtype=np.int64)
    instance_ids = np.zeros((height, width), dtype=np.int32)
    for index, ann in enumerate(annotations, start=1):
        mask = decode_segmentation(ann["segmentation"], height, width)
        classes[mask] = 1 + int(ann["category_id"])
        instance_ids[mask] = index
    if boundary_width > 0 and len(annotations) > 0:
        size = 2 * boundary_width + 1
        # Pad with 0 (background) so objects touching the image border get an outline too.
        high = ndimage.maximum_filter(instance_ids, size=size, mode="constant", cval=0)
        low = ndimage.minimum_filter(instance_ids, size=size, mode="constant", cval=0)
        boundary = (high != low) & (instance_ids > 0)
        classes[boundary] = 1 + num_thing_classes
    return classes


def semantic_view_classes(thing_classes: Sequence[str], boundary_width: int) -> List[str]:
    """stuff_classes of the semantic view: background, each thing class, [boundary]."""
    return ["background", *thing_classes] + (["boundary"] if boundary_width > 0 else [])

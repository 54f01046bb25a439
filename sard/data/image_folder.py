"""A folder of images as an unlabeled dataset (label-free distillation).

``register_image_folder(name, folder)`` registers every image file directly inside ``folder``
(by suffix, sorted by name; sub-folders are not searched) as a dataset of records::

    {"file_name": <folder>/<name>, "image_id": <name>, "height": H, "width": W,
     "annotations": [], "unlabeled": True}

Sizes come from the file headers (nothing is decoded at registration). Such records carry no
instances: with ``MODEL.SARD.PSEUDO_LABELS.ENABLED`` the teacher segments each image during
training and its masks give the prompts and the task-loss targets
(``sard.distill.pseudo_labels``); without it, training on them is refused in one line
(:func:`unlabeled_error`). They cannot be evaluated (there is nothing to compare with).
"""

from __future__ import annotations

import os
from typing import Dict, List

from .catalog import DatasetCatalog, MetadataCatalog
from .image_io import image_size
from .problems import DatasetError

UNLABELED_KEY = "unlabeled"  # record key: True for an image without annotations to train on
UNLABELED_EVALUATOR = "unlabeled"  # evaluator_type of a folder dataset: nothing to evaluate
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
ENABLE_KEY = "MODEL.SARD.PSEUDO_LABELS.ENABLED"


def image_files(folder: str) -> List[str]:
    """Names of the image files directly inside ``folder``, sorted."""
    return sorted(
        name
        for name in os.listdir(folder)
        if name.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(folder, name))
    )


def is_image_folder(path: str) -> bool:
    """A folder holding at least one image file (by suffix)."""
    return os.path.isdir(path) and bool(image_files(path))


def check_image_folder(folder: str) -> None:
    """``folder`` exists and holds images; otherwise a one-line error saying so."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder {folder!r} does not exist")
    if not image_files(folder):
        raise DatasetError(
            f"{folder} holds no image file (looked for {', '.join(IMAGE_SUFFIXES)} directly "
            "inside it; sub-folders are not searched)"
        )


def load_image_folder(folder: str) -> List[Dict]:
    """One unlabeled record per image of ``folder`` (see the module docstring)."""
    check_image_folder(folder)
    records = []
    for name in image_files(folder):
        path = os.path.join(folder, name)
        height, width = image_size(path)  # a broken file is named here, before training
        records.append(
            {
                "file_name": path,
                "image_id": name,
                "height": int(height),
                "width": int(width),
                "annotations": [],
                UNLABELED_KEY: True,
            }
        )
    return records


def register_image_folder(name: str, folder: str) -> None:
    """Register the images of ``folder`` as the unlabeled dataset ``name`` (lazy: the files are
    listed on ``DatasetCatalog.get(name)``). Metadata: image_root, unlabeled=True,
    evaluator_type="unlabeled"."""
    folder = os.fspath(folder)
    check_image_folder(folder)
    DatasetCatalog.register(name, lambda: load_image_folder(folder))
    MetadataCatalog.get(name).set(
        image_root=folder, unlabeled=True, evaluator_type=UNLABELED_EVALUATOR
    )


def is_unlabeled_record(record: Dict) -> bool:
    """True for a record of an image folder (no annotations; pseudo-labels give them)."""
    return bool(record.get(UNLABELED_KEY, False))


def unlabeled_error(key: str, entry: str) -> DatasetError:
    """The one-line error for training on an image folder without pseudo-labels."""
    return DatasetError(
        f"{key}: {entry!r} is a folder of images, i.e. an unlabeled dataset: set {ENABLE_KEY} "
        "True to train on it label-free (the teacher segments every image and its masks give "
        "the prompts and targets), or give a COCO instances file instead (my_rocks/train.json "
        "with its images in my_rocks/train/)"
    )

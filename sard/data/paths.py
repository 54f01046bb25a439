"""Your data by path: ``DATASETS.TRAIN`` / ``DATASETS.TEST`` entries that are files or folders.

An entry is, in this order:

* a registered dataset name (``rockfrag_synth_train``): used as is;
* a path ending in ``.json``: a COCO instances file whose images are in the folder beside it
  named after the file's stem (``my_rocks/train.json`` -> ``my_rocks/train/``, the RockFrag
  layout of datasets/README.md). It is checked by the dataset validator (JSON, ids, every image
  file present; pixels are decoded later, when read) and registered under the path itself, as
  instances for promptable students and as their semantic view for semantic students;
* a folder of images (DATASETS.TRAIN only): an unlabeled dataset (``sard.data.image_folder``),
  registered under the path itself; training on it needs ``MODEL.SARD.PSEUDO_LABELS.ENABLED``
  (label-free distillation), else a one-line error says what to set;
* anything else: an error that says which of these was expected.
"""

from __future__ import annotations

import os
from typing import Iterable, List

from .catalog import DatasetCatalog, MetadataCatalog
from .image_folder import IMAGE_SUFFIXES, is_image_folder, register_image_folder, unlabeled_error
from .problems import DatasetError

__all__ = ["IMAGE_SUFFIXES", "dataset_folder_name", "image_folder_of", "register_dataset_paths"]


def image_folder_of(json_file: str) -> str:
    """``a/b/train.json`` -> ``a/b/train``: where the images of a COCO file are expected."""
    return os.path.splitext(json_file)[0]


def dataset_folder_name(name: str) -> str:
    """A file-name-safe name for a dataset: the name itself, or for a path entry its folder and
    stem (``data/my_rocks/val.json`` -> ``my_rocks_val``)."""
    if not (name.lower().endswith(".json") or os.sep in name or "/" in name):
        return name
    stem = os.path.splitext(os.path.basename(name.rstrip("/")))[0]
    parent = os.path.basename(os.path.dirname(os.path.abspath(name.rstrip("/"))))
    return f"{parent}_{stem}" if parent else stem


def _register_coco_path(key: str, entry: str, semantic: bool) -> None:
    from .register import register_rockfrag, register_rockfrag_semantic
    from .validate import validate_coco_dataset

    if not os.path.isfile(entry):
        raise FileNotFoundError(f"{key}: {entry!r} does not exist (a COCO instances .json file)")
    image_root = image_folder_of(entry)
    if not os.path.isdir(image_root):
        raise FileNotFoundError(
            f"{key}: the images of {entry} are expected in {image_root}/ (the folder beside the "
            "file, named after it), which does not exist"
        )
    report = validate_coco_dataset(entry, image_root, read_images=False, progress=False)
    if not report.ok:
        shown = "; ".join(report.fatal[:3])
        more = f" (and {len(report.fatal) - 3} more)" if len(report.fatal) > 3 else ""
        raise DatasetError(
            f"{key}: {entry} is not usable: {shown}{more}. Run `python "
            f"tools/validate_dataset.py {entry}` for the full report."
        )
    if semantic:
        register_rockfrag_semantic(entry, entry, image_root)
    else:
        register_rockfrag(entry, entry, image_root)


def _register_folder_path(key: str, entry: str, semantic: bool, unlabeled_ok: bool) -> None:
    if not is_image_folder(entry):
        raise DatasetError(
            f"{key}: {entry!r} is a folder without image files (give a folder of images, a COCO "
            ".json file or a registered dataset name)"
        )
    if not key.endswith("TRAIN"):
        raise DatasetError(
            f"{key}: {entry!r} is a folder of images without labels, which cannot be evaluated; "
            "give a COCO instances file (my_rocks/val.json with its images in my_rocks/val/)"
        )
    if not unlabeled_ok:
        raise unlabeled_error(key, entry)
    if semantic:
        raise DatasetError(
            f"{key}: {entry!r} is a folder of images: label-free training needs a promptable "
            "pair (MODEL.TEACHER/STUDENT.FAMILY sam or efficient_sam)"
        )
    register_image_folder(entry, entry)


def _registered_as_other_kind(entry: str, semantic: bool) -> bool:
    """Whether ``entry``, a COCO path registered by this module, was registered as instances
    when ``semantic`` is wanted, or the other way round (names registered by users are kept)."""
    from .register import SEMANTIC_EVALUATOR

    if not entry.lower().endswith(".json"):
        return False
    kind = MetadataCatalog.get(entry).get("evaluator_type", None)
    return kind is not None and (kind == SEMANTIC_EVALUATOR) != semantic


def register_dataset_paths(
    key: str, entries: Iterable[str], *, semantic: bool, unlabeled_ok: bool = False
) -> List[str]:
    """Register every path entry of ``key`` (e.g. "DATASETS.TRAIN"); returns the entries.

    ``unlabeled_ok``: folders of images are accepted as unlabeled datasets (the config enables
    pseudo-labels); otherwise a folder is refused with the key to set.
    Idempotent: an entry already registered (a name, or a path registered before) is kept;
    a COCO path registered before for the other kind of pair is registered again for this one.
    """
    entries = [str(e) for e in entries]
    for entry in entries:
        if entry in DatasetCatalog.list():
            if not _registered_as_other_kind(entry, semantic):
                continue
            # A COCO path registered for the other kind of pair earlier in this process (a
            # promptable run, then a semantic one, on the same file): this config's view wins.
            DatasetCatalog.remove(entry)
            MetadataCatalog.remove(entry)
        if entry.lower().endswith(".json"):
            _register_coco_path(key, entry, semantic)
        elif os.path.isdir(entry):
            _register_folder_path(key, entry, semantic, unlabeled_ok)
        else:
            known = ", ".join(sorted(DatasetCatalog.list())) or "none"
            raise DatasetError(
                f"{key}: {entry!r} is neither a registered dataset (registered: {known}), nor a "
                "COCO .json file, nor a folder of images"
            )
    return entries

"""Registering datasets in the catalogs, and the built-in names under ``DETECTRON2_DATASETS``.

Built-in names (registered on ``import sard.data`` only when their files exist; only
existence checks run, nothing is read)::

    rockfrag_synth_{train,val,test}      <root>/rockfrag_synth/{split}.json + {split}/
    gravel_fh_{train,test}               <root>/gravel_fh/{split}.json + {split}/
    mnfinder_{train,val,test}            <root>/mnfinder/{split}.json + {split}/
    <each of the above>_sem              semantic view (background, classes, boundary)
    cityscapes_fine_sem_seg_{train,val}  <root>/cityscapes/{leftImg8bit,gtFine}/{split}
    ade20k_sem_seg_{train,val}           <root>/ADEChallengeData2016/{images,annotations_detectron2}

<root> is ``$DETECTRON2_DATASETS`` or ``./datasets``. Names already in the catalog (for
example detectron2's own Cityscapes/ADE20K registrations) are left untouched.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Sequence

from .catalog import DatasetCatalog, MetadataCatalog
from .coco import load_coco_instances
from .semantic import (
    ADE20K_CLASSES,
    CITYSCAPES_CLASSES,
    IGNORE_LABEL,
    load_ade20k_semantic,
    load_cityscapes_semantic,
    semantic_view_classes,
)

PROMPTABLE_EVALUATOR = "sard_promptable"
SEMANTIC_EVALUATOR = "sem_seg"
# Width in pixels of the "boundary" class of the built-in semantic views.
DEFAULT_BOUNDARY_WIDTH = 1

# name prefix -> (folder under the root, splits, thing classes)
BUILTIN_INSTANCE_SETS = {
    # Your own RockFrag-style COCO data, laid out like the synthetic set (datasets/README.md).
    "rockfrag": ("rockfrag", ("train", "val", "test"), ["fragment"]),
    "rockfrag_synth": ("rockfrag_synth", ("train", "val", "test"), ["fragment"]),
    "gravel_fh": ("gravel_fh", ("train", "test"), ["grain"]),
    "mnfinder": ("mnfinder", ("train", "val", "test"), ["nucleus", "micronucleus"]),
}


def datasets_root(root: str | None = None) -> str:
    """``root`` if given, else ``$DETECTRON2_DATASETS``, else ``./datasets``."""
    return root if root is not None else os.environ.get("DETECTRON2_DATASETS", "datasets")


def register_rockfrag(
    name: str,
    json_file: str,
    image_root: str,
    *,
    allow_outside_root: bool = False,
    **metadata: Any,
) -> None:
    """Register a COCO instance dataset; loading is lazy (on ``DatasetCatalog.get(name)``).

    Metadata: json_file, image_root, evaluator_type="sard_promptable" plus ``metadata``;
    thing_classes come from the JSON at first load unless given here (then they are checked).
    ``allow_outside_root=True`` accepts image file_names outside ``image_root`` (absolute
    paths, ``../``); by default they are refused, so a JSON cannot make training open any file.
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    DatasetCatalog.register(
        name,
        lambda: load_coco_instances(
            json_file, image_root, dataset_name=name, allow_outside_root=allow_outside_root
        ),
    )
    MetadataCatalog.get(name).set(
        json_file=json_file,
        image_root=image_root,
        evaluator_type=metadata.pop("evaluator_type", PROMPTABLE_EVALUATOR),
        **metadata,
    )


def register_rockfrag_semantic(
    name: str,
    json_file: str,
    image_root: str,
    *,
    thing_classes: Sequence[str] | None = None,
    boundary_width: int = DEFAULT_BOUNDARY_WIDTH,
    allow_outside_root: bool = False,
    **metadata: Any,
) -> None:
    """Register the semantic view of a COCO instance dataset (see ``sard.data.semantic``).

    Classes: ["background", *thing_classes] (+ ["boundary"] when boundary_width > 0);
    evaluator_type "sem_seg", ignore_label 255. Without ``thing_classes`` the stuff classes
    are set from the JSON's categories at first load. ``allow_outside_root``: as in
    :func:`register_rockfrag`.
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)

    def load() -> List[Dict[str, Any]]:
        dicts = load_coco_instances(json_file, image_root, allow_outside_root=allow_outside_root)
        meta = MetadataCatalog.get(name)
        if meta.get("stuff_classes") is None:
            from .coco import read_coco_json

            cats = sorted(read_coco_json(json_file)["categories"], key=lambda c: c["id"])
            meta.stuff_classes = semantic_view_classes([c["name"] for c in cats], boundary_width)
        num_things = len(meta.stuff_classes) - 1 - (1 if boundary_width > 0 else 0)
        spec = {"boundary_width": boundary_width, "num_thing_classes": num_things}
        return [{**d, "sem_seg_from_instances": spec} for d in dicts]

    DatasetCatalog.register(name, load)
    extra: Dict[str, Any] = {}
    if thing_classes is not None:
        extra["stuff_classes"] = semantic_view_classes(list(thing_classes), boundary_width)
    MetadataCatalog.get(name).set(
        json_file=json_file,
        image_root=image_root,
        evaluator_type=SEMANTIC_EVALUATOR,
        ignore_label=IGNORE_LABEL,
        boundary_width=boundary_width,
        **extra,
        **metadata,
    )


def register_cityscapes_semantic(name: str, image_dir: str, gt_dir: str) -> None:
    """Register a Cityscapes fine semantic split (labelTrainIds, 19 classes)."""
    _register_semantic_folders(
        name, image_dir, gt_dir, load_cityscapes_semantic, CITYSCAPES_CLASSES
    )


def register_ade20k_semantic(name: str, image_dir: str, gt_dir: str) -> None:
    """Register an ADE20K (SceneParsing, 150 classes) split in detectron2's layout."""
    _register_semantic_folders(name, image_dir, gt_dir, load_ade20k_semantic, ADE20K_CLASSES)


def _register_semantic_folders(
    name: str, image_dir: str, gt_dir: str, load: Callable, classes: Sequence[str]
) -> None:
    """Register ``load(image_dir, gt_dir)`` (read lazily) as ``name``, with its classes."""
    DatasetCatalog.register(name, lambda: load(image_dir, gt_dir))
    MetadataCatalog.get(name).set(
        image_dir=image_dir,
        gt_dir=gt_dir,
        stuff_classes=list(classes),
        evaluator_type=SEMANTIC_EVALUATOR,
        ignore_label=IGNORE_LABEL,
    )


def _builtin_specs(root: str):
    """(name, register function, args, kwargs, paths that must exist) for every built-in."""
    for prefix, (folder, splits, classes) in BUILTIN_INSTANCE_SETS.items():
        for split in splits:
            json_file = os.path.join(root, folder, f"{split}.json")
            image_root = os.path.join(root, folder, split)
            paths = (json_file, image_root)
            # The same COCO file, as instances and as a semantic map.
            for name, register in (
                (f"{prefix}_{split}", register_rockfrag),
                (f"{prefix}_sem_{split}", register_rockfrag_semantic),
            ):
                yield name, register, paths, {"thing_classes": list(classes)}, paths
    for split in ("train", "val"):
        image_dir = os.path.join(root, "cityscapes", "leftImg8bit", split)
        gt_dir = os.path.join(root, "cityscapes", "gtFine", split)
        yield (
            f"cityscapes_fine_sem_seg_{split}",
            register_cityscapes_semantic,
            (image_dir, gt_dir),
            {},
            (image_dir, gt_dir),
        )
    for split, folder in (("train", "training"), ("val", "validation")):
        base = os.path.join(root, "ADEChallengeData2016")
        image_dir = os.path.join(base, "images", folder)
        gt_dir = os.path.join(base, "annotations_detectron2", folder)
        yield (
            f"ade20k_sem_seg_{split}",
            register_ade20k_semantic,
            (image_dir, gt_dir),
            {},
            (image_dir, gt_dir),
        )


def register_builtin_datasets(root: str | None = None) -> List[str]:
    """Register every built-in dataset whose files exist under ``datasets_root(root)``.

    Cheap (existence checks only) and idempotent: names already registered are skipped.
    Returns the names registered by this call.
    """
    root = datasets_root(root)
    registered = []
    existing = set(DatasetCatalog.list())
    for name, register, args, kwargs, paths in _builtin_specs(root):
        if name in existing or not all(os.path.exists(p) for p in paths):
            continue
        register(name, *args, **kwargs)
        registered.append(name)
    return registered

"""Config -> dataset records, mapper, evaluator, distiller: the parts both engines share."""

from __future__ import annotations

from typing import Dict, List, Sequence

from fvcore.common.config import CfgNode

from sard.distill.build import build_distiller
from sard.config.sard_config import resize_mode
from sard.models.base import is_promptable_family


def is_promptable(cfg: CfgNode) -> bool:
    return is_promptable_family(cfg.MODEL.STUDENT.FAMILY)


def dataset_records(names: Sequence[str]) -> List[Dict]:
    """Concatenate the registered datasets ``names`` (a clear error lists the registered ones)."""
    from sard.data import DatasetCatalog

    records: List[Dict] = []
    for name in names:
        if name not in DatasetCatalog.list():
            known = ", ".join(sorted(DatasetCatalog.list())) or "none"
            raise KeyError(
                f"dataset {name!r} is not registered (registered: {known}). Generate or convert it "
                "first (see datasets/README.md) or register it with sard.data.register_rockfrag."
            )
        records.extend(DatasetCatalog.get(name))
    return records


def training_records(cfg: CfgNode) -> List[Dict]:
    """The records of one training epoch of DATASETS.TRAIN, as both engines train on them.

    Unlabeled records (image folders, ``sard.data.image_folder``) need
    MODEL.SARD.PSEUDO_LABELS.ENABLED (else a one-line error says so); when labelled and
    unlabeled datasets are mixed, PSEUDO_LABELS.UNLABELED_FRACTION > 0 sets the unlabeled share
    of the epoch (``sard.data.mixing``).
    """
    import logging

    from sard.data.image_folder import is_unlabeled_record, unlabeled_error
    from sard.data.mixing import mix_records

    labelled: List[Dict] = []
    unlabeled: List[Dict] = []
    for name in cfg.DATASETS.TRAIN:
        for record in dataset_records([name]):
            if not is_unlabeled_record(record):
                labelled.append(record)
                continue
            if not cfg.MODEL.SARD.PSEUDO_LABELS.ENABLED:
                raise unlabeled_error("DATASETS.TRAIN", name)
            unlabeled.append(record)
    if not unlabeled:
        return labelled
    pseudo = cfg.MODEL.SARD.PSEUDO_LABELS
    mixed = mix_records(labelled, unlabeled, float(pseudo.UNLABELED_FRACTION))
    logging.getLogger(__name__).info(
        "label-free training: %d labelled + %d unlabeled images -> %d samples per epoch, "
        "%.0f%% unlabeled (teacher pseudo-labels)",
        len(labelled),
        len(unlabeled),
        len(mixed),
        100.0 * sum(map(is_unlabeled_record, mixed)) / len(mixed),
    )
    return mixed


def build_mapper(cfg: CfgNode, is_train: bool):
    """The dataset mapper matching the student family (promptable or semantic)."""
    from sard.data import PromptDatasetMapper, SemanticDatasetMapper

    flip = cfg.INPUT.RANDOM_FLIP
    hflip = is_train and flip in ("horizontal", "both")
    vflip = is_train and flip in ("vertical", "both")
    if is_promptable(cfg):
        p = cfg.INPUT.PROMPT
        # TEST.MAX_PROMPTS 0 = every instance (the mapper's None)
        max_prompts = p.MAX_PROMPTS if is_train else (cfg.TEST.MAX_PROMPTS or None)
        return PromptDatasetMapper(
            is_train=is_train,
            image_size=max(int(v) for v in cfg.INPUT.IMAGE_SIZE),
            resize_mode=resize_mode(cfg),
            max_prompts=max_prompts,
            prompt_type=p.TYPE,
            box_jitter=p.BOX_JITTER if is_train else 0.0,
            num_points=p.NUM_POINTS,
            num_neg_points=p.NUM_NEG_POINTS,
            hflip=hflip,
            vflip=vflip,
            scale_jitter=tuple(cfg.INPUT.SCALE_JITTER) if is_train else (1.0, 1.0),
        )
    return SemanticDatasetMapper(
        is_train=is_train,
        image_size=tuple(int(v) for v in cfg.INPUT.IMAGE_SIZE),
        hflip=hflip,
        scale_jitter=tuple(cfg.INPUT.SCALE_JITTER) if is_train else (1.0, 1.0),
    )


def build_evaluator(cfg: CfgNode, dataset_name: str, output_dir: str):
    """mIoU + boundary IoU evaluator for the dataset's kind (promptable instances or semantic)."""
    from sard.data import MetadataCatalog
    from sard.evaluation import PromptableInstanceEvaluator, SemSegBoundaryEvaluator

    if is_promptable(cfg):
        return PromptableInstanceEvaluator(dataset_name=dataset_name, output_dir=output_dir)
    meta = MetadataCatalog.get(dataset_name)
    return SemSegBoundaryEvaluator(
        num_classes=cfg.MODEL.NUM_CLASSES,
        ignore_label=getattr(meta, "ignore_label", 255),
        class_names=getattr(meta, "stuff_classes", None),
        output_dir=output_dir,
    )


def evaluation_output_dir(cfg: CfgNode, dataset_name: str) -> str:
    """OUTPUT_DIR/inference/<dataset> (a path entry is turned into a folder name)."""
    import os

    from sard.data.paths import dataset_folder_name

    return os.path.join(cfg.OUTPUT_DIR, "inference", dataset_folder_name(dataset_name))


def evaluation_records(cfg: CfgNode, dataset_name: str) -> List[Dict]:
    """The images of ``dataset_name`` that both engines evaluate: the first TEST.MAX_IMAGES
    (all when 0)."""
    records = dataset_records([dataset_name])
    limit = int(cfg.TEST.MAX_IMAGES)
    return records[:limit] if limit > 0 else records


def build_inference_model(cfg: CfgNode):
    """The distiller without teacher and head, for evaluation: the student alone runs there,
    so nothing else is built (or randomly initialised, or loaded)."""
    return build_distiller(cfg, inference_only=True)

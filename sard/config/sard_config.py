"""SARD's config keys: ``add_sard_config(cfg)`` adds them to a detectron2 or built-in config.

Every key carries a one-line comment. Paper defaults (CVPR 2026): beta_e=2, beta_c=1, beta_d=1,
r=7, lambda_f=1, lambda_d=0.5, mu=1, alpha=0.5, AdamW, 100 epochs.
"""

from __future__ import annotations

from typing import Any, Dict

from fvcore.common.config import CfgNode

from sard.amg_settings import AmgSettings

# Flat baseline keys of earlier versions and where they live now (an old config names them).
RENAMED_KEYS = {
    "MODEL.SARD.KD_TAU": "MODEL.SARD.KD.TAU",
    "MODEL.SARD.KD_WEIGHT": "MODEL.SARD.KD.WEIGHT",
    "MODEL.SARD.SKD_WEIGHT": "MODEL.SARD.SKD.WEIGHT",
    "MODEL.SARD.CWD_TAU": "MODEL.SARD.CWD.TAU",
    "MODEL.SARD.CWD_WEIGHT": "MODEL.SARD.CWD.WEIGHT",
    "MODEL.SARD.CWD_ON": "MODEL.SARD.CWD.INPUT",  # (YAML reads a key "ON" as true)
    "MODEL.SARD.MGD_ALPHA": "MODEL.SARD.MGD.ALPHA",
    "MODEL.SARD.MGD_LAMBDA": "MODEL.SARD.MGD.LAMBDA",
    "MODEL.SARD.DKD_ALPHA": "MODEL.SARD.DKD.ALPHA",
    "MODEL.SARD.DKD_BETA": "MODEL.SARD.DKD.BETA",
    "MODEL.SARD.DKD_TAU": "MODEL.SARD.DKD.TAU",
    "MODEL.SARD.REVIEWKD_WEIGHT": "MODEL.SARD.REVIEWKD.WEIGHT",
    "MODEL.SARD.REVIEWKD_TAPS": "MODEL.SARD.REVIEWKD.TAPS",
}


def _model_member(CN: type, family: str, size: str, tap: str) -> CfgNode:
    node = CN()
    node.FAMILY = family  # "sam" | "efficient_sam" | "mask2former" | "vit_semantic"
    node.SIZE = size  # family size name, e.g. "vit_h", "ti", "r50", "tiny"
    node.WEIGHTS = ""  # local checkpoint path; "" = random init (with a warning)
    node.ALLOW_UNSAFE_PICKLE = False  # allow checkpoints that need code to unpickle (unsafe)
    node.TAP = tap  # name of the feature tap used for distillation
    # Architecture overrides passed to the family builder, lower-cased (e.g. EMBED_DIM: 64).
    node.ARCH = CN(new_allowed=True)
    return node


def _set_default(node: CfgNode, key: str, value: Any) -> None:
    # detectron2's defaults already hold some keys: never clobber them.
    if key not in node:
        node[key] = value


def add_pseudo_label_config(sard: CfgNode, CN: type) -> None:
    """MODEL.SARD.PSEUDO_LABELS: label-free distillation (``sard.distill.pseudo_labels``).

    The teacher segments every unlabeled training image (a DATASETS.TRAIN folder of images) with
    SAM's automatic mask generator on its own embedding: a grid of point prompts over the model
    input, 3 masks per point, kept when predicted IoU > PRED_IOU_THRESH and stability >=
    STABILITY_SCORE_THRESH, box NMS, then the area filters. Defaults are SAM ViT-H's; a small or
    weak teacher predicts lower IoUs, so lower the thresholds for it.
    """
    p = sard.PSEUDO_LABELS = CN()
    amg = AmgSettings()  # the generator's defaults have one home
    # Train on folders of images: the teacher's masks give the prompts and task-loss targets
    # (computed once per model input and cached with the teacher's taps).
    p.ENABLED = False
    # point grid over the image's valid region (SAM's points_per_side)
    p.POINTS_PER_SIDE = amg.points_per_side
    p.POINTS_PER_BATCH = amg.points_per_batch  # point prompts decoded at once (memory, not results)
    # keep masks whose predicted IoU exceeds this (0 = no filter)
    p.PRED_IOU_THRESH = amg.pred_iou_thresh
    # keep masks with IoU(logits>+off, logits>-off) >= this
    p.STABILITY_SCORE_THRESH = amg.stability_score_thresh
    p.STABILITY_SCORE_OFFSET = amg.stability_score_offset  # the logit offset of the stability score
    # box IoU above which the lower-scored of two masks is dropped
    p.BOX_NMS_THRESH = amg.box_nms_thresh
    # SAM's crop layers (each crop costs one more teacher encoder pass)
    p.CROP_N_LAYERS = amg.crop_n_layers
    # fill holes / remove islands below this many px (SAM's)
    p.MIN_MASK_REGION_AREA = amg.min_mask_region_area
    p.MIN_AREA = 0  # drop masks of fewer model-input pixels (noise specks)
    p.MAX_AREA_FRACTION = 0.5  # drop masks covering more of the image than this (background)
    # Share of training samples drawn from unlabeled datasets when DATASETS.TRAIN mixes
    # labelled and unlabeled ones (0 = each image once per epoch; 0.5 = half and half).
    p.UNLABELED_FRACTION = 0.0


def add_sard_config(cfg: CfgNode) -> None:
    """Add SARD's keys (MODEL.TEACHER/STUDENT/SARD, INPUT.*, SOLVER.*, TEST.*) to ``cfg``."""
    # New nodes take cfg's own class: detectron2's CfgNode refuses to merge into fvcore's.
    CN = type(cfg)
    cfg.MODEL.META_ARCHITECTURE = "SARDDistiller"
    cfg.MODEL.TEACHER = _model_member(CN, "sam", "vit_h", "image_embedding")
    cfg.MODEL.STUDENT = _model_member(CN, "efficient_sam", "ti", "image_embedding")
    cfg.MODEL.NUM_CLASSES = 1  # semantic models: number of classes (no void class)

    s = cfg.MODEL.SARD = CN()
    s.METHOD = "sard"  # a registered method (sard.losses.method_names()) or "none" (scratch)
    s.PROJ_DIM = 256  # D: channels of the shared projection space of L_FC / L_DA
    s.LAMBDA_F = 1.0  # lambda_f: weight of L_FC (feature consistency)
    s.LAMBDA_D = 0.5  # lambda_d: weight of L_DA (distribution alignment)
    s.MU = 1.0  # mu: weight of the task loss (Dice+BCE, or the model's own loss)
    # Linear warm-up of every distillation term over the first N iterations (0 = none); DKD's
    # and ReviewKD's official recipes ramp theirs over the first epochs (e.g. 20 on CIFAR-100).
    s.DISTILL_WARMUP_ITERS = 0
    s.ALPHA = 0.5  # alpha: signal level of the noised teacher in L_DA
    s.DA_ALPHAS = []  # several alphas at once (multi-scale L_DA); [] = just ALPHA
    s.BETA_E = 2.0  # beta_e: weight of edge anisotropy E in S(i)
    s.BETA_C = 1.0  # beta_c: weight of junction strength C in S(i)
    s.BETA_D = 1.0  # beta_d: weight of feature dispersion D in S(i)
    s.RADIUS = 7  # r: dispersion window is (2r+1)^2 feature pixels
    s.SIGMA = 1.0  # sigma: std (feature pixels) of the structure tensor's Gaussian window
    # Outer rings of feature cells whose E, C, D are copied from the nearest inner cell: the
    # encoders' zero-padded convolutions make the border cells' features an artefact (0 = off).
    s.BORDER_CELLS = 0
    s.IOU_LOSS_WEIGHT = 1.0  # MSE on the predicted IoU of promptable students (0 = off)
    # Each registered baseline's own keys: MODEL.SARD.<METHOD>.<KEY> (e.g. MODEL.SARD.CWD.TAU),
    # declared with a comment beside the method's loss (sard/losses/*.py, register_method).
    from sard.losses.registry import registered_methods

    for method in registered_methods().values():
        if method.node:
            node = s[method.node] = CN()
            for key, (default, _comment) in method.keys.items():
                node[key] = default
    # Promptable task loss: "dice_bce" (the paper's Dice + BCE) or "focal_dice" (SAM's 20:1
    # focal + Dice: easy background pixels stop pulling every logit down).
    s.TASK_LOSS = "dice_bce"
    # Promptable models: 3 candidate masks, best supervised, picked by predicted IoU ("always"),
    # SAM's single mask ("never"), or SAM's rule ("auto": 3 only for lone-point prompts).
    s.MULTIMASK_OUTPUT = "always"
    s.CACHE = CN()
    s.CACHE.ENABLED = False  # cache teacher taps (fp16) per input image: later epochs skip it
    s.CACHE.DIR = ""  # "" = in memory; else a directory for on-disk cache files
    add_pseudo_label_config(s, CN)

    _set_default(cfg.INPUT, "IMAGE_SIZE", (1024, 1024))  # model input (H, W); square for SAM
    _set_default(cfg.INPUT, "RESIZE_MODE", "")  # "" = student family's; "longest_pad"|"stretch"
    _set_default(cfg.INPUT, "SCALE_JITTER", (1.0, 1.0))  # random rescale range (training)
    cfg.INPUT.PROMPT = CN()
    cfg.INPUT.PROMPT.TYPE = "box"  # "box" | "point" | "box+point"
    cfg.INPUT.PROMPT.MAX_PROMPTS = 64  # prompts (instances) sampled per training image
    cfg.INPUT.PROMPT.BOX_JITTER = 0.1  # box corner noise, fraction of box side (training)
    cfg.INPUT.PROMPT.NUM_POINTS = 1  # positive points per prompt
    cfg.INPUT.PROMPT.NUM_NEG_POINTS = 0  # negative points per prompt

    _set_default(cfg.SOLVER, "OPTIMIZER", "ADAMW")  # only AdamW is supported by SARD
    _set_default(cfg.SOLVER, "MAX_EPOCHS", 0)  # > 0 overrides MAX_ITER: epochs * images / batch
    _set_default(cfg.SOLVER, "POLY_LR_POWER", 0.9)  # exponent of WarmupPolyLR
    _set_default(cfg.SOLVER, "LOG_PERIOD", 20)  # iterations between metric logs
    # SOLVER.AMP.ENABLED's autocast dtype: "" = float16 with a GradScaler on CUDA, bfloat16 on
    # the CPU; "bfloat16" (no GradScaler) or "float16" (CUDA only) to choose.
    _set_default(cfg.SOLVER.AMP, "DTYPE", "")

    _set_default(cfg.TEST, "MAX_PROMPTS", 0)  # prompts per test image; 0 = every instance
    _set_default(cfg.TEST, "PROMPT_CHUNK", 64)  # prompts decoded at once at evaluation
    _set_default(cfg.TEST, "MAX_IMAGES", 0)  # evaluate on the first N images; 0 = all


# compute_structure_map's settings; each is read from the MODEL.SARD key of its name in capitals.
STRUCTURE_MAP_SETTINGS = ("beta_e", "beta_c", "beta_d", "radius", "sigma", "border_cells")


def structure_map_kwargs(sard: CfgNode) -> Dict[str, Any]:
    """``sard.structure.compute_structure_map``'s settings from MODEL.SARD (``sard``): beta_e,
    beta_c, beta_d, radius, sigma and border_cells, the one reading of those keys."""
    return {name: sard[name.upper()] for name in STRUCTURE_MAP_SETTINGS}


def resize_mode(cfg: CfgNode) -> str:
    """How a promptable student's mapper resizes images: INPUT.RESIZE_MODE, or when it is ""
    the student family's own ("stretch" for EfficientSAM, "longest_pad" for SAM)."""
    if cfg.INPUT.RESIZE_MODE:
        return cfg.INPUT.RESIZE_MODE
    return "stretch" if cfg.MODEL.STUDENT.FAMILY == "efficient_sam" else "longest_pad"

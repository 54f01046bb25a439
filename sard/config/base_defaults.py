"""The subset of detectron2's default config that SARD reads, with detectron2's names and defaults.

The built-in engine (no detectron2) starts from this node; with detectron2 the project starts from
``detectron2.config.get_cfg()`` instead. Either way ``add_sard_config`` then adds SARD's keys, so
one YAML file loads under both engines as long as it only uses keys defined here or by
``add_sard_config`` (an unknown key is an error naming the key, as in detectron2).
"""

from __future__ import annotations

from fvcore.common.config import CfgNode


def base_config() -> CfgNode:
    """Return a fresh node with detectron2-compatible keys (a subset of detectron2's defaults)."""
    _C = CfgNode()
    _C.VERSION = 2

    _C.MODEL = CfgNode()
    _C.MODEL.META_ARCHITECTURE = "SARDDistiller"  # detectron2 meta-architecture registry name
    _C.MODEL.DEVICE = "cuda"  # falls back to "cpu" with a warning when CUDA is absent
    _C.MODEL.WEIGHTS = ""  # checkpoint of the whole distiller (or student) to start from

    _C.INPUT = CfgNode()
    _C.INPUT.FORMAT = "RGB"  # images are always fed to models as 0-255 RGB
    _C.INPUT.RANDOM_FLIP = "horizontal"  # "none" | "horizontal" | "vertical" | "both"(SARD only)

    _C.DATASETS = CfgNode()
    _C.DATASETS.TRAIN = ()  # names registered in DatasetCatalog
    _C.DATASETS.TEST = ()

    _C.DATALOADER = CfgNode()
    _C.DATALOADER.NUM_WORKERS = 2  # loader worker processes (0 = load in the main process)

    _C.SOLVER = CfgNode()
    _C.SOLVER.LR_SCHEDULER_NAME = "WarmupCosineLR"  # "WarmupCosineLR" | "WarmupPolyLR"
    _C.SOLVER.MAX_ITER = 40000  # total iterations (see SOLVER.MAX_EPOCHS)
    _C.SOLVER.BASE_LR = 1e-4
    _C.SOLVER.MOMENTUM = 0.9  # unused by AdamW; kept for detectron2 compatibility
    _C.SOLVER.WEIGHT_DECAY = 0.05
    _C.SOLVER.GAMMA = 0.1  # unused by SARD's schedulers; detectron2 compatibility
    _C.SOLVER.STEPS = (30000,)  # unused by SARD's schedulers; detectron2 compatibility
    _C.SOLVER.WARMUP_FACTOR = 1.0 / 1000  # lr multiplier at iteration 0 of the linear warmup
    _C.SOLVER.WARMUP_ITERS = 1000
    _C.SOLVER.WARMUP_METHOD = "linear"
    _C.SOLVER.CHECKPOINT_PERIOD = 5000  # save a checkpoint every N iterations
    _C.SOLVER.IMS_PER_BATCH = 16  # global batch size, split over processes
    _C.SOLVER.CLIP_GRADIENTS = CfgNode()
    _C.SOLVER.CLIP_GRADIENTS.ENABLED = False
    _C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"  # "full_model" | "norm" | "value"
    _C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
    _C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
    _C.SOLVER.AMP = CfgNode()
    _C.SOLVER.AMP.ENABLED = False  # torch.amp autocast + GradScaler (bf16 on CPU)

    _C.TEST = CfgNode()
    _C.TEST.EVAL_PERIOD = 0  # evaluate every N iterations (0 = only at the end)

    _C.OUTPUT_DIR = "./output"
    _C.SEED = -1  # < 0: pick a random seed and log it
    _C.CUDNN_BENCHMARK = False
    return _C

"""Is detectron2 usable? One answer for the whole package.

``import detectron2`` can succeed while the parts SARD uses cannot be imported (its runtime
dependencies such as cloudpickle, omegaconf or antlr4 are missing, or its C++ ops were never
built). Such an install is treated as absent, with the reason kept, so ``import sard.data`` and
the built-in engine keep working and ``--engine detectron2`` can say what is wrong.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import warnings
from typing import Optional

# The detectron2 modules SARD imports (catalogs, config, engine, checkpointer, events).
_USED_MODULES = (
    "detectron2",
    "detectron2.config",
    "detectron2.data",
    "detectron2.structures",
    "detectron2.engine",
    "detectron2.checkpoint",
    "detectron2.utils.events",
)


@functools.lru_cache(maxsize=None)
def detectron2_import_error() -> Optional[str]:
    """None when every detectron2 module SARD uses imports; else why not (one line)."""
    if importlib.util.find_spec("detectron2") is None:
        return "detectron2 is not installed"
    for name in _USED_MODULES:
        try:
            with warnings.catch_warnings():
                # detectron2 scripts a few helpers with torch.jit.script, which recent torch
                # deprecates: a warning users cannot act on, printed before every message.
                warnings.filterwarnings(
                    "ignore", message=r".*torch\.jit\.script.*", category=FutureWarning
                )
                importlib.import_module(name)
        except Exception as err:  # ImportError, or a broken build raising anything else
            return (
                f"detectron2 is installed but `import {name}` failed ({type(err).__name__}: "
                f"{err}); install its runtime dependencies (cloudpickle, omegaconf, "
                "antlr4-python3-runtime==4.9.3) or rebuild it"
            )
    return None


def detectron2_available() -> bool:
    """True when detectron2 and every part of it SARD uses can be imported."""
    return detectron2_import_error() is None

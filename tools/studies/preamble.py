"""Imported by the study tools (quickstart, compare_methods, label_free_study,
structure_weight_stats) before anything else, for side effects that must come first:

- idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE`` unless already set):
  on a busy machine spinning threads made the tiny models' steps several times slower, and the
  variable is read once, when torch starts its thread pool;
- the checkout's root goes first on ``sys.path``, so the tools run from a checkout, uninstalled;
- subnormal floats are flushed to zero before torch starts its worker threads, which inherit the
  (per-thread) flag only when they start: the tools' own trainers (evaluation, W statistics)
  then run flushed on every thread, as the training processes do (``sard.engine.subnormals``).
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sard.engine.subnormals import flush_subnormal_floats  # noqa: E402  (after the path)

flush_subnormal_floats(check=False)

"""Imported by the study tools (quickstart, compare_methods, label_free_study) before anything
else, for two side effects that must come before torch and ``sard`` are imported:

- idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE`` unless already set):
  on a busy machine spinning threads made the tiny models' steps several times slower, and the
  variable is read once, when torch starts its thread pool;
- the checkout's root goes first on ``sys.path``, so the tools run from a checkout, uninstalled.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

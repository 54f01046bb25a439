"""argparse ``type=`` functions for numeric flags: bounds checked, NaN and infinity refused.

``p.add_argument("--grid", type=int_range(1))`` makes ``--grid 0`` fail at parse time with
``argument --grid: must be an integer >= 1, got '0'`` (exit status 2), instead of the value
being silently replaced or crashing later.
"""

from __future__ import annotations

import argparse
import math
from typing import Callable, Optional


def _bounds_text(lo, hi, lo_open: bool, hi_open: bool) -> str:
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi:g}")
    return " and ".join(parts)


def int_range(lo: Optional[int] = None, hi: Optional[int] = None) -> Callable[[str], int]:
    """A parser of integers in [lo, hi] (either bound may be None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or (lo is not None and value < lo) or (hi is not None and value > hi):
            bounds = _bounds_text(lo, hi, False, False)
            raise argparse.ArgumentTypeError(
                f"must be an integer{' ' + bounds if bounds else ''}, got {text!r}"
            )
        return value

    parse.__name__ = "int"
    return parse


def float_range(
    lo: Optional[float] = None,
    hi: Optional[float] = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> Callable[[str], float]:
    """A parser of finite floats in [lo, hi] ((lo, ...) with ``lo_open``, (..., hi) with
    ``hi_open``); NaN and infinity are always refused."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        bad = not math.isfinite(value)
        if not bad and lo is not None:
            bad = value <= lo if lo_open else value < lo
        if not bad and hi is not None:
            bad = value >= hi if hi_open else value > hi
        if bad:
            bounds = _bounds_text(lo, hi, lo_open, hi_open)
            raise argparse.ArgumentTypeError(
                f"must be a finite number{' ' + bounds if bounds else ''}, got {text!r}"
            )
        return value

    parse.__name__ = "float"
    return parse

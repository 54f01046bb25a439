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


def _checked(
    convert: Callable[[str], float],
    fits: Callable[[float], bool],
    noun: str,
    bounds: str,
    name: str,
) -> Callable[[str], float]:
    """A ``type=`` function: ``convert(text)``, refused with "must be NOUN BOUNDS, got 'TEXT'"
    when it raises ValueError or ``fits`` says no; ``name`` is what argparse calls the type."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not fits(value):
            raise argparse.ArgumentTypeError(
                f"must be {noun}{' ' + bounds if bounds else ''}, got {text!r}"
            )
        return value

    parse.__name__ = name
    return parse


def int_range(lo: Optional[int] = None, hi: Optional[int] = None) -> Callable[[str], int]:
    """A parser of integers in [lo, hi] (either bound may be None)."""

    def fits(value: int) -> bool:
        return (lo is None or value >= lo) and (hi is None or value <= hi)

    return _checked(int, fits, "an integer", _bounds_text(lo, hi, False, False), "int")


def float_range(
    lo: Optional[float] = None,
    hi: Optional[float] = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> Callable[[str], float]:
    """A parser of finite floats in [lo, hi] ((lo, ...) with ``lo_open``, (..., hi) with
    ``hi_open``); NaN and infinity are always refused."""

    def fits(value: float) -> bool:
        if not math.isfinite(value):
            return False
        if lo is not None and (value <= lo if lo_open else value < lo):
            return False
        return hi is None or (value < hi if hi_open else value <= hi)

    bounds = _bounds_text(lo, hi, lo_open, hi_open)
    return _checked(float, fits, "a finite number", bounds, "float")

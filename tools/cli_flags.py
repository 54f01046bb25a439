"""Command-line pieces several tools share: flag groups they add alike, the keyword arguments of
a settings object taken from the parsed flags of the same names, and the dataset converters'
parser and closing report.

Tools import it as ``cli_flags`` (a script's own folder, ``tools/``, is first on ``sys.path``;
``datasets/`` scripts put ``tools/`` there themselves, and ``tests/conftest.py`` does for tests).
"""

from __future__ import annotations

import argparse
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

# sard.measure.SIZE_MEASURES, spelled out so that building a parser (--help) imports no sard.
SIZE_MEASURES = ("equivalent_diameter", "minor_axis", "major_axis", "feret_diameter_max")
# The flags of add_measure_flags, named as sard.export.everything.MeasureSettings' fields.
MEASURE_FLAGS = ("min_area", "exclude_border", "size_measure", "basis", "mm_per_px")

Parser = Union[argparse.ArgumentParser, argparse._ArgumentGroup]


def flag_values(args: argparse.Namespace, names: Sequence[str]) -> Dict[str, Any]:
    """``{name: args.<name>}`` for every name in ``names``: the keyword arguments of a settings
    object whose parameters are named as the flags, e.g.
    ``MeasureSettings(**flag_values(args, MEASURE_FLAGS))``."""
    return {name: getattr(args, name) for name in names}


def converter_parser(
    doc: str, src: str, out: str, out_required: bool = True
) -> argparse.ArgumentParser:
    """A dataset converter's parser: its module ``doc`` as the description, ``--src`` (required,
    help ``src``) and ``--out`` (help ``out``; required unless ``out_required`` is False, when
    it defaults to None and the converter derives it)."""
    p = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--src", required=True, help=src)
    p.add_argument("--out", required=out_required, default=None, help=out)
    return p


def add_measure_flags(p: Parser) -> None:
    """--mm-per-px, --min-area, --exclude-border, --size-measure and --basis: how objects become
    a size distribution (``MEASURE_FLAGS``; their checks are ``MeasureSettings``')."""
    p.add_argument("--mm-per-px", type=float, default=None, help="pixel size; sizes then in mm")
    p.add_argument("--min-area", type=int, default=0, help="leave out objects under this many px")
    p.add_argument(
        "--exclude-border",
        action="store_true",
        help="leave objects touching the image border out of the size distribution",
    )
    p.add_argument(
        "--size-measure",
        default="equivalent_diameter",
        choices=SIZE_MEASURES,
        help="the size of the distribution (default %(default)s)",
    )
    p.add_argument(
        "--basis",
        default="number",
        choices=("number", "area"),
        help="weight per object: 1 or its area",
    )


def add_flag_table(p: Parser, table: Sequence[tuple]) -> None:
    """One ``--name`` flag per row ``(name, type, default, help)`` of ``table`` (``name`` with
    underscores, as the namespace attribute and the settings parameter it feeds)."""
    for name, kind, default, text in table:
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=default, help=text)


def add_timing_flags(p: Parser, repeats: int, warmup: Optional[int], what: str) -> None:
    """The benchmarks' timing flags: --repeats (timed ``what``, at least 1) and, unless ``warmup``
    is None, --warmup (untimed ``what`` first, at least 0)."""
    from cli_values import int_range

    text = f"timed {what} (default {repeats})"
    p.add_argument("--repeats", type=int_range(1), default=repeats, help=text)
    if warmup is not None:
        text = f"untimed {what} first (default {warmup})"
        p.add_argument("--warmup", type=int_range(0), default=warmup, help=text)


def print_split_stats(
    stats: Union[Mapping[str, Any], Iterable[Tuple[str, Any]]], out: str, took: str = ""
) -> None:
    """What a dataset converter prints: ``SPLIT: <format_statistics>`` per split, each as soon as
    ``stats`` (a mapping, or (split, statistics) pairs that may be made lazily) yields it, then
    ``wrote OUT`` and ``took`` (e.g. " in 1.2 s")."""
    from sard.data.stats import format_statistics

    for split, split_stats in stats.items() if isinstance(stats, Mapping) else stats:
        print(f"{split:>5}: {format_statistics(split_stats)}")
    print(f"wrote {out}{took}")

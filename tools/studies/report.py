"""A comparison study's report from finished runs: OUT/table.md, OUT/buckets.md, OUT/bars.png.

Written by ``tools/compare_methods.py`` after its runs, and by ``tools/study_report.py`` from
runs gathered out of one or more finished studies, so both give the same tables for the same
runs. A report is described by two strings a study stores in its results.json: ``label`` (the
data set and scale, e.g. "mnfinder (128 px tiles), cpu scale") and ``setup`` (teacher, student,
input size and schedule: what every run of the study shares).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from sard.reporting import box_floor, plot_method_bars, summarise_runs

from .comparison import BASELINES, BUCKET_METRICS, METRICS, comparison_settings, comparison_table


def dataset_label(args: argparse.Namespace) -> str:
    """The dataset as tables and figures name it, e.g. "synth (fragments 24-64 px)"."""
    if args.dataset == "synth" and args.fragment_px:
        return f"synth (fragments {args.fragment_px[0]:g}-{args.fragment_px[1]:g} px)"
    if args.tile:
        return f"{args.dataset} ({args.tile} px tiles)"
    return args.dataset


def label_and_setup(args: argparse.Namespace) -> Tuple[str, str]:
    """(label, setup) of a study from compare_methods' flags, e.g. ("mnfinder (128 px tiles),
    cpu scale", "teacher sam:tiny (...), student sam:tiny (...), 128 px, 4000 iterations x 2
    images x 32 box prompts")."""
    settings = comparison_settings(args)
    setup = (
        f"teacher {settings.teacher.describe()}, student {settings.student.describe()}, "
        f"{args.image_size} px, {args.iters} iterations x {args.batch} images x {args.prompts} "
        "box prompts"
    )
    return f"{dataset_label(args)}, {args.scale} scale", setup


def teacher_versus_floor(teacher: Mapping, floor: Optional[Mapping[str, float]]) -> str:
    """The header's "; +a / +b vs the prompt-box floor: above it" ("" without a floor)."""
    if not floor:
        return ""
    gaps = {m: teacher["metrics"][m] - v for m, v in floor.items()}
    word = "above" if all(g >= 0 for g in gaps.values()) else "BELOW"
    gap = " / ".join(f"{g:+.1f}" for g in gaps.values())
    return f"; {gap} vs the prompt-box floor: {word} it"


def run_seeds(runs: Sequence[Mapping]) -> List[int]:
    """The seeds the runs used, sorted, each once."""
    return sorted({int(r["seed"]) for r in runs})


def study_header(
    label: str, setup: str, teacher: Optional[Mapping], runs: Sequence[Mapping], floor
) -> str:
    """The paragraph above table.md: data, setting, the teacher's scores against the floor,
    the seeds, and how the table's numbers are computed."""
    teacher_part = ""
    if teacher is not None:
        m = teacher["metrics"]
        teacher_part = (
            f" Teacher: mIoU {m['mIoU']:.1f}, bIoU {m['bIoU']:.1f}"
            f"{teacher_versus_floor(teacher, floor)}."
        )
    seeds = " ".join(map(str, run_seeds(runs)))
    return (
        f"{label}: {setup}.{teacher_part} Seeds {seeds}; mean ± std over seeds; Δ: paired "
        "over seeds (± std of the differences, seeds won).\n\n"
    )


def write_report(
    out: Path, label: str, setup: str, teacher: Optional[Mapping], runs: Sequence[Mapping]
) -> Tuple[Dict, Optional[Dict[str, float]], str]:
    """Write OUT/table.md (header + paired comparison with the prompt-box floor),
    OUT/buckets.md (small and crowded objects, when every run has those metrics) and
    OUT/bars.png (mean ± std per method, the teacher dashed, the floor dotted).

    Returns (summary, floor, header + table). The floor is read from the runs' (and the
    teacher's) ``box_*`` metrics; records evaluated on different test sets raise ValueError.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise_runs(runs, METRICS)
    floor = box_floor(([teacher] if teacher is not None else []) + list(runs), METRICS)
    header = study_header(label, setup, teacher, runs, floor)
    table = header + comparison_table(summary, METRICS, BASELINES, floor)
    (out / "table.md").write_text(table)
    buckets = [m for m in BUCKET_METRICS if all(m in r["metrics"] for r in runs)]
    if buckets:
        (out / "buckets.md").write_text(
            "Small: GT area < 16² px; nb3+: touching 3 or more other instances. Δ: paired over "
            "seeds (± std, seeds won).\n\n"
            + comparison_table(
                summarise_runs(runs, buckets),
                buckets,
                BASELINES,  # the same paired columns as table.md
                box_floor(runs, buckets),
            )
        )
    plot_method_bars(
        summary,
        out / "bars.png",
        metrics=METRICS,
        reference={m: teacher["metrics"][m] for m in METRICS} if teacher is not None else None,
        floor=floor,
        title=f"{label}: mean ± std over {len(run_seeds(runs))} seed(s)"
        + ("; dashed: the teacher" if teacher is not None else ""),
    )
    return summary, floor, table

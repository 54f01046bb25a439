"""Runs of one comparison setting gathered from several studies, and the checks that refuse to
mix settings (``tools/study_report.py``).

A source is a study folder written by ``tools/compare_methods.py --out`` or a results.json
file; ``read_source`` turns either into ``{"name", "runs", "teacher", "label", "setup",
"settings", "unfinished"}``. What is checked, and on which records:

- the same (method, seed) in two sources has the same scores;
- label and setup strings, and the recorded flags (less those that only say which runs, where
  and how fast: ``FREE_SETTINGS``), agree among the sources that recorded them;
- teachers with different scores are different teachers;
- config overrides agree key by key, a key one run lacks counting as its own value: teacher
  keys among the distilling runs, the W betas among runs of one method, every other key (the
  seed and method aside) among all runs that recorded overrides;
- prompt-box floors (the test set) agree among the runs that carry them.

What cannot be checked (runs without overrides or floors, sources without a setup) is counted
in ``Merged.unchecked`` for the tool to say.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from sard.reporting.tables import box_floor

from .comparison import METRICS
from .report import label_and_setup
from .study import METHOD_VARIANTS

# compare_methods flags that say which runs, where and how fast, not how they train; the
# teacher's own flags are left to the teacher check (one teacher may be trained in one
# sitting and passed as --teacher-weights in the next).
FREE_SETTINGS = frozenset(
    {
        "methods",
        "seeds",
        "jobs",
        "threads",
        "out",
        "device",
        "latency_prompts",
        "latency_reps",
        "teacher_weights",
        "teacher_init",
        "teacher_iters",
        "teacher_seed",
        "transfer_to",
        "transfer_json",
        "transfer_images",
        "transfer_tile",
        "transfer_image_size",
        "gravel_source",
    }
)
UNSET = "<not set>"
FIX = "report them separately, or leave one of the sources out"


class MergeError(ValueError):
    """Sources that cannot go into one table; the message names them, why, and what to do."""


@dataclass
class Merged:
    """The merged runs (one per method and seed, in table order), the teacher, label, setup,
    and what could not be checked: {what: count}."""

    runs: List[Dict]
    teacher: Optional[Dict]
    label: str
    setup: str
    unchecked: Dict[str, int] = field(default_factory=dict)


def _read_json(path: Path) -> Dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise MergeError(f"{path}: not valid JSON ({e})") from e


def read_source(source: str) -> Dict:
    """One SOURCE (study folder or results file) as a dict of its runs and what it recorded."""
    path = Path(source)
    if path.is_dir() and not (path / "runs").is_dir():
        raise MergeError(f"{source}: not a study folder (no runs/ inside; compare_methods --out)")
    if path.is_dir():
        study = _read_json(path / "results.json") if (path / "results.json").is_file() else {}
        runs, unfinished = [], []
        for run_dir in sorted(p for p in (path / "runs").iterdir() if p.is_dir()):
            record = run_dir / "results.json"
            if record.is_file():
                runs.append(_read_json(record))
            else:
                unfinished.append(run_dir.name)
        # Runs a stopped call had not started have no folder yet: its results.json names them.
        unfinished += [
            name
            for name in study.get("pending", [])
            if name not in unfinished and not (path / "runs" / name / "results.json").is_file()
        ]
        teacher_file = path / "teacher" / "results.json"
        teacher = _read_json(teacher_file) if teacher_file.is_file() else study.get("teacher")
    else:
        study = _read_json(path)
        if not isinstance(study.get("runs"), list):
            raise MergeError(f"{source}: no list of runs under 'runs' (not a study's results)")
        runs, unfinished, teacher = (
            study["runs"],
            list(study.get("pending", [])),
            study.get("teacher"),
        )
    for record in runs:
        missing = [k for k in ("method", "seed", "metrics") if k not in record]
        if missing:
            raise MergeError(f"{source}: a run lacks {missing}")
    label, setup = study.get("label", ""), study.get("setup", "")
    if not setup and study.get("settings"):
        label, setup = recorded_label_and_setup(study["settings"])
    settings = {k: v for k, v in study.get("settings", {}).items() if k not in FREE_SETTINGS}
    return {
        "name": source,
        "runs": runs,
        "teacher": teacher,
        "label": label,
        "setup": setup,
        "settings": settings,
        "methods": list(study.get("settings", {}).get("methods", [])),
        "unfinished": unfinished,
    }


def recorded_label_and_setup(settings: Dict) -> Tuple[str, str]:
    """(label, setup) from the flags a study recorded before it recorded these strings; ("", "")
    when a flag the setup needs is missing (a study of a much older version)."""
    try:
        return label_and_setup(argparse.Namespace(**settings))
    except (AttributeError, KeyError, TypeError, ValueError):
        return "", ""


def agreed(sources: Sequence[Dict], key: str, what: str) -> str:
    """The value of ``key`` that every source holding one agrees on ("" when none holds one)."""
    values = {s["name"]: s[key] for s in sources if s[key]}
    if len(set(map(str, values.values()))) > 1:
        listing = "; ".join(f"{name}: {value!r}" for name, value in values.items())
        raise MergeError(f"the sources have different {what} ({listing}): {FIX}")
    return next(iter(values.values()), "")


def check_settings(sources: Sequence[Dict]) -> None:
    """The recorded flags (less FREE_SETTINGS) agree flag by flag among the sources holding
    them, so a different --lr, --num-train or --scale-jitter is not merged."""
    recorded = [s for s in sources if s["settings"]]
    for s in recorded[1:]:
        a, b = recorded[0]["settings"], s["settings"]
        differing = sorted(k for k in a.keys() | b.keys() if a.get(k, UNSET) != b.get(k, UNSET))
        if differing:
            k = differing[0]
            raise MergeError(
                f"{recorded[0]['name']} and {s['name']} were run with different flags: --"
                f"{k.replace('_', '-')} {a.get(k, UNSET)} vs {b.get(k, UNSET)} (and "
                f"{len(differing) - 1} more): {FIX}"
            )


def same_scores(a: Dict, b: Dict) -> bool:
    """Two metric dicts agree on METRICS (to 1e-6): the same run, or the same teacher."""
    return all(abs(float(a[m]) - float(b[m])) <= 1e-6 for m in METRICS)


def merged_teacher(sources: Sequence[Dict]) -> Optional[Dict]:
    """The sources' teacher record; teachers with different scores are different teachers."""
    found = [(s["name"], s["teacher"]) for s in sources if s["teacher"]]
    for name, teacher in found[1:]:
        a, b = found[0][1]["metrics"], teacher["metrics"]
        if not same_scores(a, b):
            raise MergeError(
                f"the teachers of {found[0][0]} (mIoU {a['mIoU']:.2f}) and {name} "
                f"(mIoU {b['mIoU']:.2f}) differ: their students learned from different "
                f"teachers; {FIX}"
            )
    return found[0][1] if found else None


def _scope(key: str, record: Dict) -> Optional[str]:
    """Which runs a config key is compared among: None (not compared: seed and method), the
    distilling runs (teacher keys), the runs of one method (W betas), or all runs."""
    if key in ("SEED", "MODEL.SARD.METHOD"):
        return None
    if key.startswith("MODEL.TEACHER."):
        return "distil" if METHOD_VARIANTS.get(record["method"], ("",))[0] != "none" else None
    if key.startswith("MODEL.SARD.BETA_"):
        return f"method {record['method']}"
    return "all"


def check_opts(tagged: Sequence[Tuple[str, Dict]]) -> int:
    """MergeError when two runs' config overrides differ in a key compared between them (see
    ``_scope``; a key one of them lacks counts as UNSET, since defaults are left out of the
    overrides); returns how many runs carry no overrides. ``tagged``: (source, run) pairs."""
    with_opts = [(name, r, dict(r["opts"])) for name, r in tagged if r.get("opts")]
    keys = set().union(*(opts for _, _, opts in with_opts))
    for key in sorted(keys):
        first: Dict[str, Tuple[str, str, Dict]] = {}  # scope -> (value, source, run)
        for name, record, opts in with_opts:
            scope = _scope(key, record)
            if scope is None:
                continue
            value = opts.get(key, UNSET)
            value_a, name_a, a = first.setdefault(scope, (value, name, record))
            if value != value_a:
                raise MergeError(
                    f"{a['method']} seed {a['seed']} ({name_a}) and {record['method']} seed "
                    f"{record['seed']} ({name}) were trained with different settings: {key} = "
                    f"{value_a} vs {value}: {FIX}"
                )
    return len(tagged) - len(with_opts)


def check_floors(tagged: Sequence[Tuple[str, Dict]]) -> int:
    """MergeError when runs carry different prompt-box floors (evaluated on different test
    sets); returns how many runs carry none (evaluated before the evaluator reported it)."""
    first: Optional[Tuple[Dict[str, float], str, Dict]] = None
    missing = 0
    for name, record in tagged:
        floor = box_floor([record], METRICS)  # the shared reader of box_* metrics
        if floor is None:
            missing += 1
            continue
        if first is None:
            first = (floor, name, record)
        elif not same_scores(floor, first[0]):
            raise MergeError(
                f"{first[2]['method']} seed {first[2]['seed']} ({first[1]}) and "
                f"{record['method']} seed {record['seed']} ({name}) were evaluated on different "
                f"test sets (prompt-box floor {first[0]} vs {floor}): {FIX}"
            )
    return missing


def method_order(sources: Sequence[Dict]) -> Dict[str, int]:
    """Table order: the methods as the studies listed them (--methods, as compare_methods
    orders its own table), then in METHOD_VARIANTS' order."""
    order: Dict[str, int] = {}
    for method in [m for s in sources for m in s["methods"]] + list(METHOD_VARIANTS):
        order.setdefault(method, len(order))
    return order


def merge(sources: Sequence[Dict]) -> Merged:
    """Check the sources against each other and merge their runs: one per (method, seed), in
    ``method_order``, then by seed."""
    label = agreed(sources, "label", "labels (data set and scale)") or "study"
    setup = agreed(sources, "setup", "setups") or "setup not recorded"
    check_settings(sources)
    teacher = merged_teacher(sources)
    seen: Dict[Tuple[str, int], Tuple[str, Dict]] = {}
    for source in sources:
        for record in source["runs"]:
            key = (str(record["method"]), int(record["seed"]))
            if key in seen:
                name, first = seen[key]
                a, b = first["metrics"], record["metrics"]
                if not same_scores(a, b):
                    raise MergeError(
                        f"{key[0]} seed {key[1]} is in {name} (mIoU {a['mIoU']:.2f}) and in "
                        f"{source['name']} (mIoU {b['mIoU']:.2f}) with different scores: "
                        "leave one of the sources out"
                    )
                continue
            seen[key] = (source["name"], record)
    order = method_order(sources)
    keys = sorted(seen, key=lambda k: (order.get(k[0], len(order)), k[0], k[1]))
    tagged = [seen[k] for k in keys]
    evaluated = ([("teacher", teacher)] if teacher is not None else []) + tagged
    unchecked = {
        "runs without config overrides": check_opts(tagged),
        "runs without a prompt-box floor": check_floors(evaluated),
        "sources without a recorded setup": sum(1 for s in sources if not s["setup"]),
    }
    return Merged(
        [record for _, record in tagged],
        teacher,
        label,
        setup,
        {k: v for k, v in unchecked.items() if v},
    )

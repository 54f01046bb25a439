#!/usr/bin/env python
"""The report of finished comparison runs, gathered from one or more studies, without training.

    python tools/study_report.py output/compare_mnfinder_p4 --out output/report_mnfinder
    python tools/study_report.py output/study_a output/study_b/results.json --out OUT

Each SOURCE is a study folder written by ``tools/compare_methods.py --out`` (its finished runs
under runs/*/results.json, its teacher/results.json, and label and setup from its results.json)
or a results.json file (a study's, or one this tool wrote). Runs of the same setting trained
in several sittings or folders, e.g. more seeds added later into another folder, become one
table: OUT/table.md, OUT/buckets.md, OUT/bars.png and OUT/results.json (every run, the
summary, the prompt-box floor, the teacher, the sources).

Merging refuses what would mix settings, naming the sources: the same (method, seed) with
different scores, studies with different setups or teachers, runs whose recorded config
overrides differ in anything but their seed and method, or test sets with different prompt-box
floors. Runs recorded without their overrides (older result files) cannot be checked: the
tool says how many.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from studies import preamble  # noqa: F401  (before torch and sard: see its docstring)

from studies.report import label_and_setup, write_report
from studies.study import METHOD_VARIANTS, write_results

# Overrides a run's method and seed set: they differ between the runs of one study.
RUN_KEYS = (
    "SEED",
    "MODEL.SARD.METHOD",
    "MODEL.SARD.BETA_E",
    "MODEL.SARD.BETA_C",
    "MODEL.SARD.BETA_D",
)


class MergeError(ValueError):
    """Sources that cannot go into one table; the message names them and why."""


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("sources", nargs="+", help="study folders or results.json files")
    p.add_argument("--out", required=True, help="folder for table.md, buckets.md, bars.png")
    args = p.parse_args(argv)
    for source in args.sources:
        path = Path(source)
        if not (path.is_dir() or path.is_file()):
            p.error(f"{source}: no such study folder or results file")
    return args


def _read_json(path: Path) -> Dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise MergeError(f"{path}: not valid JSON ({e})") from e


def read_source(source: str) -> Dict:
    """{"name", "runs", "teacher" (or None), "label", "setup", "unfinished"} of one SOURCE."""
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
        teacher_file = path / "teacher" / "results.json"
        teacher = _read_json(teacher_file) if teacher_file.is_file() else study.get("teacher")
    else:
        study = _read_json(path)
        if not isinstance(study.get("runs"), list):
            raise MergeError(f"{source}: no list of runs under 'runs' (not a study's results)")
        runs, unfinished, teacher = study["runs"], [], study.get("teacher")
    for record in runs:
        missing = [k for k in ("method", "seed", "metrics") if k not in record]
        if missing:
            raise MergeError(f"{source}: a run lacks {missing}")
    label, setup = study.get("label", ""), study.get("setup", "")
    if not setup and study.get("settings"):
        label, setup = recorded_label_and_setup(study["settings"])
    return {
        "name": source,
        "runs": runs,
        "teacher": teacher,
        "label": label,
        "setup": setup,
        "unfinished": unfinished,
    }


def recorded_label_and_setup(settings: Dict) -> Tuple[str, str]:
    """(label, setup) from the flags a study recorded before it recorded these strings; ("", "")
    when a flag the setup needs is missing (a study of a much older version)."""
    try:
        return label_and_setup(argparse.Namespace(**settings))
    except (AttributeError, KeyError, TypeError, ValueError):
        return "", ""


def _agreed(sources: Sequence[Dict], key: str, what: str) -> str:
    """The value of ``key`` that every source holding one agrees on ("" when none holds one)."""
    values = {s["name"]: s[key] for s in sources if s[key]}
    if len(set(values.values())) > 1:
        listing = "; ".join(f"{name}: {value!r}" for name, value in values.items())
        raise MergeError(f"the sources have different {what} ({listing}): not one study")
    return next(iter(values.values()), "")


def _teacher(sources: Sequence[Dict]) -> Optional[Dict]:
    """The sources' teacher record; teachers with different scores are different teachers."""
    found = [(s["name"], s["teacher"]) for s in sources if s["teacher"]]
    for name, teacher in found[1:]:
        a, b = found[0][1]["metrics"], teacher["metrics"]
        if any(abs(float(a[m]) - float(b[m])) > 1e-6 for m in ("mIoU", "bIoU")):
            raise MergeError(
                f"the teachers of {found[0][0]} (mIoU {a['mIoU']:.2f}) and {name} "
                f"(mIoU {b['mIoU']:.2f}) differ: their students learned from different teachers"
            )
    return found[0][1] if found else None


def _shared_opts(record: Dict) -> Dict[str, str]:
    """The run's config overrides less those its method and seed set."""
    return {k: v for k, v in record.get("opts", []) if k not in RUN_KEYS}


def check_opts(tagged: Sequence[Tuple[str, Dict]]) -> int:
    """MergeError when two runs set a key to different values (the method and seed keys
    aside; a key only some runs set, such as the teacher's, is compared among those); returns
    how many runs carry no overrides. ``tagged``: (source name, run record) pairs."""
    first: Dict[str, Tuple[str, str, Dict]] = {}  # key -> (value, source, record that set it)
    for name, record in tagged:
        for key, value in _shared_opts(record).items():
            if key not in first:
                first[key] = (value, name, record)
                continue
            value_a, name_a, a = first[key]
            if value != value_a:
                raise MergeError(
                    f"{a['method']} seed {a['seed']} ({name_a}) and {record['method']} seed "
                    f"{record['seed']} ({name}) were trained with different settings: {key} = "
                    f"{value_a} vs {value}: not one study"
                )
    return sum(1 for _, record in tagged if not record.get("opts"))


def merge_runs(sources: Sequence[Dict]) -> Tuple[List[Dict], int]:
    """Every distinct (method, seed) run of the sources, in METHOD_VARIANTS order then by seed,
    and the number of runs recorded without overrides. The same run in two sources must have
    the same scores (a report re-read with its study); otherwise MergeError."""
    seen: Dict[Tuple[str, int], Tuple[str, Dict]] = {}
    for source in sources:
        for record in source["runs"]:
            key = (str(record["method"]), int(record["seed"]))
            if key in seen:
                name, first = seen[key]
                a, b = first["metrics"], record["metrics"]
                if any(abs(float(a[m]) - float(b[m])) > 1e-6 for m in ("mIoU", "bIoU")):
                    raise MergeError(
                        f"{key[0]} seed {key[1]} is in {name} (mIoU {a['mIoU']:.2f}) and in "
                        f"{source['name']} (mIoU {b['mIoU']:.2f}) with different scores: "
                        "leave one of the sources out"
                    )
                continue
            seen[key] = (source["name"], record)
    order = {m: i for i, m in enumerate(METHOD_VARIANTS)}
    keys = sorted(seen, key=lambda k: (order.get(k[0], len(order)), k[0], k[1]))
    return [seen[k][1] for k in keys], check_opts([seen[k] for k in keys])


def main(argv: Optional[List[str]] = None) -> Dict:
    """Gather, check, merge and report; returns what OUT/results.json holds."""
    args = parse_args(argv)
    sources = [read_source(s) for s in args.sources]
    for s in sources:
        left = f" ({len(s['unfinished'])} unfinished left out)" if s["unfinished"] else ""
        print(f"{s['name']}: {len(s['runs'])} finished run(s){left}", flush=True)
    label = _agreed(sources, "label", "data sets") or "study"
    setup = _agreed(sources, "setup", "setups") or "setup not recorded"
    teacher = _teacher(sources)
    runs, unchecked = merge_runs(sources)
    if not runs:
        raise SystemExit("no finished run in the sources: nothing to report")
    if unchecked:
        print(
            f"note: {unchecked} of {len(runs)} run(s) carry no config overrides (older results "
            "files): that they share the others' settings is not checked",
            flush=True,
        )
    out = Path(args.out)
    summary, floor, table = write_report(out, label, setup, teacher, runs)
    payload = {
        "label": label,
        "setup": setup,
        "teacher": teacher,
        "runs": runs,
        "summary": summary,
        "box_floor": floor,
        "sources": [s["name"] for s in sources],
    }
    write_results(out, payload)
    print("\n" + table)
    print(f"wrote {out}/table.md, buckets.md, bars.png, results.json")
    return payload


if __name__ == "__main__":
    try:
        main()
    except MergeError as e:
        raise SystemExit(f"study_report: {e}")

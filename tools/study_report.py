#!/usr/bin/env python
"""The report of finished comparison runs, gathered from one or more studies, without training.

    python tools/study_report.py output/compare_mnfinder_p4 --out output/report_mnfinder
    python tools/study_report.py output/study_a output/study_b/results.json --out OUT

Each SOURCE is a study folder written by ``tools/compare_methods.py --out`` (its finished runs
under runs/*/results.json, its teacher/results.json, and what it recorded in results.json) or
a results.json file (a study's, or one this tool wrote). Runs of one setting trained in
several sittings or folders, e.g. seeds added later into another folder, become one table:
OUT/table.md, OUT/buckets.md, OUT/bars.png and OUT/results.json (every run, the summary, the
prompt-box floor, the teacher, the sources).

Merging refuses what would mix settings, naming the sources (``studies/merge.py``): the same
(method, seed) with different scores; different labels, setups, flags or teachers; runs whose
recorded config overrides differ in anything but their seed and method; or different test
sets (prompt-box floors). What older result files did not record cannot be checked: the tool
says how much.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, List, Optional

from studies import preamble  # noqa: F401  (before torch and sard: see its docstring)

from studies.merge import MergeError, merge, read_source
from studies.report import write_report
from studies.study import write_results


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command line -> namespace; every SOURCE exists (a folder or a file)."""
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


def main(argv: Optional[List[str]] = None) -> Dict:
    """Gather, check, merge and report; returns what OUT/results.json holds. Raises
    MergeError (a ValueError) for sources that cannot go into one table."""
    args = parse_args(argv)
    sources = [read_source(s) for s in args.sources]
    for s in sources:
        left = f" ({len(s['unfinished'])} unfinished left out)" if s["unfinished"] else ""
        print(f"{s['name']}: {len(s['runs'])} finished run(s){left}", flush=True)
    merged = merge(sources)
    if not merged.runs:
        raise MergeError("no finished run in the sources: nothing to report")
    for what, count in merged.unchecked.items():
        print(f"note: not checked against the others: {count} {what} (older result files)")
    out = Path(args.out)
    summary, floor, table = write_report(
        out, merged.label, merged.setup, merged.teacher, merged.runs
    )
    payload = {
        "label": merged.label,
        "setup": merged.setup,
        "teacher": merged.teacher,
        "runs": merged.runs,
        "summary": summary,
        "box_floor": floor,
        "sources": [s["name"] for s in sources],
        "unchecked": merged.unchecked,
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

"""Every tool command the READMEs show parses with today's flags and config keys."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from testkit import REPO

RUNNER = os.path.join(REPO, "tests", "readme_commands.py")


def _check(*paths: str) -> list[dict]:
    done = subprocess.run(
        [sys.executable, RUNNER, *paths], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


READMES = [
    "README.md",
    "datasets/README.md",
    "projects/SARD/README.md",
    "weights/README.md",
    *sorted(str(p.relative_to(REPO)) for p in Path(REPO, "docs").glob("**/README.md")),
]


def test_every_readme_command_parses():
    report = _check(*(os.path.join(REPO, r) for r in READMES))
    tools = {r["command"].split()[1] for r in report}
    # The READMEs show commands of these; an extractor that finds none would pass vacuously.
    assert len(report) >= 35 and {"tools/compare_methods.py", "tools/quickstart.py"} <= tools
    assert {"tools/train_net.py", "datasets/prepare_tiles.py"} <= tools
    broken = [f"{r['command']}\n    -> {r['error']}" for r in report if r["error"]]
    assert not broken, "README commands the tools reject:\n" + "\n".join(broken)


def test_renamed_flags_and_keys_are_caught(tmp_path):
    """Each way a README command can drift fails, and a good command in the same text passes:
    a flag, a config key, a check the tool makes after parsing, a flag of a tool whose
    parse_args wraps its argument_parser and of one with argument_parser only, and a flag the
    detectron2 script lacks; a command wrapped over lines in prose counts."""
    text = (
        "Run `python tools/quickstart.py\n  --no-such-flag 3` first.\n\n"
        "```bash\npython tools/train_net.py --config-file configs/tiny/sam_p4_teacher_to_sam_p4_d64"
        ".yaml \\\n    MODEL.SARD.NO_SUCH_KEY 1   # a typo\n"
        "python tools/quickstart.py --teacher-patch 8\n"
        "python tools/predict.py img.png --config-file configs/tiny/sam_p4_teacher_to_sam_p4_d64"
        ".yaml --no-such-flag\n"
        "python tools/prompt_floors.py --json output/x/test.json | tee log\n"
        "DETECTRON2_DATASETS=d python tools/validate_dataset.py d.json --no-such-flag\n"
        'python tools/validate_dataset.py "a[1].json" --no-read-images\n'
        "python projects/SARD/train_net.py --engine sard --config-file configs/tiny/"
        "sam_p4_teacher_to_sam_p4_d64.yaml\n```\n"
        "Usage: `python tools/predict.py IMAGE [--grid N]` is a pattern, not a command.\n"
    )
    readme = tmp_path / "README.md"
    readme.write_text(text)
    errors = {r["command"]: r["error"] for r in _check(str(readme))}
    assert len(errors) == 8, errors
    # a tool with argument_parser() only, after an environment prefix; a quoted [ is no pattern
    assert "--no-such-flag" in errors["python tools/validate_dataset.py d.json --no-such-flag"]
    assert errors['python tools/validate_dataset.py "a[1].json" --no-read-images'] is None
    project = [e for c, e in errors.items() if c.startswith("python projects/")][0]
    assert project and "--engine" in project  # tools/train_net.py's flag, not detectron2's
    assert "--no-such-flag" in errors["python tools/quickstart.py --no-such-flag 3"]
    key_error = [e for c, e in errors.items() if "NO_SUCH_KEY" in c][0]
    assert key_error and "NO_SUCH_KEY" in key_error
    assert "--train-teacher" in errors["python tools/quickstart.py --teacher-patch 8"]
    predict_error = [e for c, e in errors.items() if c.startswith("python tools/predict.py")][0]
    assert predict_error and "--no-such-flag" in predict_error
    assert errors["python tools/prompt_floors.py --json output/x/test.json | tee log"] is None


def test_every_tool_exposes_its_parser():
    """readme_commands checks a command through its tool's parse_args(argv) or
    argument_parser(): a tool with neither (say, a parser built inside main) would leave its
    README commands unchecked."""
    folders = ("tools", "datasets", "projects/SARD")
    scripts = [p for d in folders for p in Path(REPO, d).glob("*.py")]
    tools = [p for p in scripts if 'if __name__ == "__main__":' in p.read_text()]
    assert len(tools) >= 30
    missing = [
        str(p.relative_to(REPO))
        for p in tools
        if not re.search(r"^def (parse_args|argument_parser)\(", p.read_text(), flags=re.M)
    ]
    assert not missing, f"tools without a module-level parse_args or argument_parser: {missing}"

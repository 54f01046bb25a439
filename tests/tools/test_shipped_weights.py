"""Every file under weights/ is the one weights/manifest.json describes (size, SHA-256), and a
shipped teacher, evaluated as its manifest says, gives the scores recorded there."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from testkit import REPO

WEIGHTS = os.path.join(REPO, "weights")
with open(os.path.join(WEIGHTS, "manifest.json"), encoding="utf-8") as _f:
    MANIFEST = json.load(_f)


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_shipped_file_is_the_one_its_manifest_names(name, load_script):
    entry, path = MANIFEST[name], os.path.join(WEIGHTS, name)
    size = os.path.getsize(path)
    limit_bytes = load_script("tools/ship_weights.py").LIMIT_MB * 1e6  # the project's one rule
    assert size == entry["bytes"] and size <= limit_bytes
    with open(path, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == entry["sha256"]
    for key in ("train", "ship", "evaluate", "scores"):
        assert entry[key], (name, key)


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_shipped_teacher_gives_its_recorded_scores(name, load_script, tmp_path, capsys):
    entry = MANIFEST[name]
    quickstart = load_script("tools/quickstart.py")
    argv = [*entry["evaluate"], "--teacher-weights", os.path.join(WEIGHTS, name)]
    payload = quickstart.main([*argv, "--out", str(tmp_path / "eval")])
    teacher = payload["runs"]["teacher"]
    assert teacher["iterations"] == 0  # loaded and evaluated, not trained
    assert "loaded and evaluated: test mIoU" in capsys.readouterr().out
    for metric, value in entry["scores"].items():
        assert teacher["metrics"][metric] == pytest.approx(value, abs=0.05), metric


def test_weights_readme_command_is_the_one_tested():
    """weights/README.md's command is the manifest's evaluation, which the test above runs."""
    import re
    import shlex

    with open(os.path.join(WEIGHTS, "README.md"), encoding="utf-8") as f:
        blocks = re.findall(r"```bash\n(.*?)```", f.read(), flags=re.S)
    commands = [shlex.split(b.replace("\\\n", " ")) for b in blocks]
    assert len(commands) == len(MANIFEST)
    for command, (name, entry) in zip(commands, sorted(MANIFEST.items())):
        assert command[:2] == ["python", "tools/quickstart.py"]
        out = command.index("--out")
        given = command[2:out] + command[out + 2 :]
        assert given == [*entry["evaluate"], "--teacher-weights", f"weights/{name}"]


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_manifest_train_command_trains_a_teacher(name, load_script):
    """The recorded train command parses and trains (the quickstart loads the shipped teacher
    unless told --train-teacher)."""
    import shlex

    command = shlex.split(MANIFEST[name]["train"])
    assert command[:2] == ["python", "tools/quickstart.py"]
    args = load_script("tools/quickstart.py").parse_args(command[2:])
    assert args.teacher_only and args.teacher_weights == "" and args.teacher_iters > 0

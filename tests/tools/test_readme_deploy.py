"""The README's Deploy section runs as written after the quickstart.

Its code blocks are read from README.md and run unchanged (bash blocks with bash, Python blocks
with Python) in a folder laid out as the quickstart leaves the repository: ``configs/`` and
``tools/``, ``output/quickstart/sard/model_final.pth`` (here a random student of the quickstart's
default architecture in the training-checkpoint format, whose automatic masks are small:
tests/sparse_masks.py) and ``output/quickstart/data/synth_128px/test`` (two generated 128 px
images with their COCO file).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from sparse_masks import sparse_mask_model
from testkit import checkout_like, readme_blocks

TOOLS = ("export_student.py", "predict.py", "segment_everything.py", "size_distribution.py")


def deploy_blocks():
    """[(language, code)] of the fenced blocks of the README's "## Deploy" section."""
    return readme_blocks("## Deploy")


@pytest.fixture(scope="module")
def after_quickstart(tmp_path_factory):
    from sard.data.synthetic import SynthConfig
    from sard.data.synthetic_dataset import generate_rockfrag_synth

    root = tmp_path_factory.mktemp("checkout")
    env = checkout_like(root)
    run = root / "output" / "quickstart" / "sard"
    run.mkdir(parents=True)
    student = sparse_mask_model("sam", 128, offset=0.2, patch_size=4, decoder_dim=64)
    state = {f"student.{k}": v for k, v in student.state_dict().items()}
    torch.save({"model": state, "iteration": 179}, run / "model_final.pth")
    generate_rockfrag_synth(
        str(root / "output" / "quickstart" / "data" / "synth_128px"),
        num_images={"test": 2},
        config=SynthConfig(image_size=128),
        seed=0,
        preview=False,
        progress=False,
    )
    return root, env


def test_deploy_section_covers_the_tools_and_the_predictor():
    blocks = deploy_blocks()
    code = "\n".join(c for _, c in blocks)
    for tool in TOOLS:
        assert f"tools/{tool}" in code, tool
    assert any(lang == "python" and "SardPredictor" in c for lang, c in blocks)
    for placeholder in ("image.png", "val.json", "tiny_sam/model_final.pth"):
        assert placeholder not in code


def test_every_deploy_command_runs_as_written(after_quickstart):
    root, env = after_quickstart
    outputs = []
    for language, code in deploy_blocks():
        if language == "bash":
            cmd = ["bash", "-e", "-o", "pipefail", "-c", code]
        elif language == "python":
            cmd = [sys.executable, "-c", code]
        else:
            continue
        res = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, f"{code}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
        outputs.append(res.stdout)
    assert any("(1, 128, 128)" in out for out in outputs)
    quick = root / "output" / "quickstart"
    manifest = json.loads((quick / "onnx" / "manifest.json").read_text())
    assert manifest
    assert (quick / "predictions" / "000000_overlay.png").is_file()
    for stem in ("000000", "000001"):
        summary = json.loads((quick / "everything" / f"{stem}_summary.json").read_text())
        assert summary["basis"] == "number"
        assert (quick / "everything" / f"{stem}_psd.png").is_file()
    report = json.loads((quick / "everything" / "size_distribution.json").read_text())
    assert report["images"] == 2 and report["gt"]["count"] > 50

"""The README's label-free training command runs as written after the quickstart.

Its ``tools/train_net.py`` block is read from the "How far do images alone get me?" section and
run unchanged in a folder laid out as the quickstart leaves it: ``configs/``, ``tools/`` and
``weights/`` (the shipped teacher the config names) and ``output/quickstart/data/synth_128px``
(2 train and 2 test images with their COCO files: every unlabeled input costs the teacher
256 point prompts through its mask decoder, 10-20 s of CPU here, so the set is kept minimal).
The study commands of the section are run at a minuscule size by
tests/tools/test_label_free_study.py.
"""

from __future__ import annotations

import os
import re
import subprocess

from testkit import REPO, checkout_like, readme_blocks


def section_blocks():
    """[(language, code)] of the fenced blocks of the section."""
    return readme_blocks("### How far do images alone get me?")


def test_the_label_free_command_runs_as_written(tmp_path):
    from sard.config import load_config
    from sard.data.synthetic import SynthConfig
    from sard.data.synthetic_dataset import generate_rockfrag_synth

    (command,) = [c for lang, c in section_blocks() if lang == "bash" and "train_net.py" in c]
    root = tmp_path / "checkout"
    root.mkdir()
    env = checkout_like(root)
    quick = root / "output" / "quickstart"
    generate_rockfrag_synth(
        str(quick / "data" / "synth_128px"),
        num_images={"train": 2, "test": 2},
        config=SynthConfig(image_size=128),
        seed=0,
        preview=False,
        progress=False,
    )
    cfg = load_config(os.path.join(REPO, "configs", "tiny", "label_free_tiny.yaml"))
    assert cfg.MODEL.TEACHER.WEIGHTS == "weights/sam_p4_synth_teacher.safetensors"
    res = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", command],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, f"{command}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    out = root / "output" / "label_free"
    log = (out / "log.txt").read_text()
    assert "0 labelled + 2 unlabeled images" in log
    assert "training contract: 10 iterations (10 epochs x 2 images / batch 2)" in log
    # The shipped teacher was trained on SAM's single mask (MULTIMASK_OUTPUT "never"): decoding
    # its untrained multimask heads left every image without a pseudo-mask (predicted IoUs
    # <= 0.2); decoded as trained it keeps about 19 masks per 128 px image.
    assert "left no mask" not in log
    kept = [float(m) for m in re.findall(r"segmented by the teacher so far, ([0-9.]+) masks", log)]
    assert kept and min(kept) >= 5, kept
    assert (out / "model_final.pth").is_file()
    assert list((out / "inference").glob("*/sard_instances.json"))

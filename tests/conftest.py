"""Shared fixtures: the tools as modules, a tiny synthetic RockFrag set registered under test-only
names, and an offline guard. Plain shared values and helpers live in testkit.py beside this file."""

from __future__ import annotations

import os
import socket
import sys

import pytest

from testkit import REPO

# The tools' own modules (studies, cli_values), importable as they are from a tool script (Python
# puts a script's folder on sys.path); appended, so they never shadow an installed package.
sys.path.append(os.path.join(REPO, "tools"))


@pytest.fixture(scope="session")
def load_script():
    """``load_script("tools/x.py")`` -> that script imported as a module (its ``main`` and
    helpers callable in-process); scripts are not a package, so they are loaded by path."""
    import importlib.util

    def load(relative_path: str):
        name = os.path.splitext(os.path.basename(relative_path))[0]
        spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, relative_path))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def no_network(monkeypatch):
    """The test runs offline: the Hugging Face hub is told so, and any socket connection fails
    (use with ``pytestmark = pytest.mark.usefixtures("no_network")``)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory):
    """4 train / 2 val images of 64 px in ROOT/rockfrag_synth; returns ROOT.

    Registered in this process as test_synth_{train,val} (+ test_synth_sem_*); a subprocess run
    with DETECTRON2_DATASETS=ROOT sees them under the built-in rockfrag_synth_* names.
    """
    from sard.data import DatasetCatalog, register_rockfrag, register_rockfrag_semantic
    from sard.data.synthetic import SynthConfig
    from sard.data.synthetic_dataset import generate_rockfrag_synth

    root = str(tmp_path_factory.mktemp("datasets"))
    folder = os.path.join(root, "rockfrag_synth")
    generate_rockfrag_synth(
        folder,
        num_images={"train": 4, "val": 2},
        config=SynthConfig(image_size=64, min_size=6, max_size=16),
        seed=0,
        preview=False,
        progress=False,
    )
    for split in ("train", "val"):
        json_file = os.path.join(folder, f"{split}.json")
        image_root = os.path.join(folder, split)
        if f"test_synth_{split}" not in DatasetCatalog.list():
            register_rockfrag(f"test_synth_{split}", json_file, image_root)
            register_rockfrag_semantic(f"test_synth_sem_{split}", json_file, image_root)
    return root

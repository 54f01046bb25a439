"""Issue 17 catalogue, model side: broken checkpoint files, weights URLs, teacher cache entries.

Each case asserts the exact outcome: the error class, a message naming the file or config key,
no download attempted, and for the cache that a bad entry is recomputed (the teacher runs
again), rewritten, and reported once with a warning naming the file.
"""

from __future__ import annotations

import os
import socket
import sys
import warnings

import numpy as np
import pytest
import torch

from sard.config import load_config
from sard.local_paths import RemoteWeightsError
from sard.models.checkpoint import CorruptCheckpointError, UnsafeCheckpointError, read_state_dict
from sard.distill import build_member
from sard.distill.build import build_distiller
from sard.distill.teacher_cache import TeacherCache, image_key, tensor_digest
from testkit import REPO, SIZE_OPTS, TINY_SAM

TINY_M2F = os.path.join(REPO, "configs", "tiny", "m2f_tiny.yaml")


class Unpicklable:
    """A class a weights_only load refuses (pickling it records a global)."""


@pytest.fixture(scope="module")
def good_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ckpt") / "good.pth"
    torch.save({"a": torch.arange(6.0), "b": torch.ones(2, 2)}, path)
    return str(path)


def _write(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def broken_files(tmp_path, good_file: str) -> dict:
    data = open(good_file, "rb").read()
    legacy = tmp_path / "legacy.pth"
    torch.save({"a": torch.ones(3)}, legacy, _use_new_zipfile_serialization=False)
    legacy_bytes = legacy.read_bytes()
    return {
        "empty": (_write(tmp_path, "empty.pth", b""), "is empty (0 bytes)"),
        "truncated zip": (
            _write(tmp_path, "trunc.pth", data[: len(data) // 2]),
            "is truncated",
        ),
        "random bytes": (
            _write(tmp_path, "rand.pth", np.random.default_rng(0).bytes(4096)),
            "is not a PyTorch checkpoint",
        ),
        "html page": (
            _write(tmp_path, "page.pth", b"<html><body>404 Not Found</body></html>"),
            "is not a PyTorch checkpoint",
        ),
        "random pickle": (
            _write(tmp_path, "pickle.pth", b"\x80\x02" + np.random.default_rng(1).bytes(512)),
            "is truncated or damaged",
        ),
        "truncated legacy": (
            _write(tmp_path, "legacy_cut.pth", legacy_bytes[: len(legacy_bytes) // 2]),
            "is truncated or damaged",
        ),
        "damaged safetensors": (
            _write(tmp_path, "model.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage"),
            "is damaged",
        ),
        "empty safetensors": (_write(tmp_path, "empty.safetensors", b""), "is empty (0 bytes)"),
    }


CASES = [
    "empty",
    "truncated zip",
    "random bytes",
    "html page",
    "random pickle",
    "truncated legacy",
    "damaged safetensors",
    "empty safetensors",
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("unsafe", [False, True], ids=["weights_only", "unsafe_opt_in"])
def test_broken_checkpoint_files_are_one_clear_line(tmp_path, good_file, case, unsafe):
    path, words = broken_files(tmp_path, good_file)[case]
    with pytest.raises(CorruptCheckpointError) as err:
        read_state_dict(path, allow_unsafe_pickle=unsafe)
    text = str(err.value)
    assert path in text and words in text and "\n" not in text
    assert "arbitrary Python code" not in text  # the old, misleading diagnosis


def test_a_real_code_pickle_is_still_refused_as_unsafe(tmp_path):
    path = tmp_path / "code.pth"
    torch.save({"a": Unpicklable()}, path)
    with pytest.raises(UnsafeCheckpointError, match="needs arbitrary Python code"):
        read_state_dict(path)
    # With the opt-in, a class that does not exist in this process is named, not a raw error.
    (tmp_path / "vanishing_module.py").write_text("class Thing:\n    pass\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import vanishing_module

        torch.save({"a": vanishing_module.Thing()}, path)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("vanishing_module", None)
    with pytest.raises(UnsafeCheckpointError, match="not importable here"):
        read_state_dict(path, allow_unsafe_pickle=True)


def test_broken_teacher_weights_name_the_file_through_the_builder(tmp_path, good_file):
    path, _ = broken_files(tmp_path, good_file)["random bytes"]
    cfg = load_config(TINY_SAM, [*SIZE_OPTS, "MODEL.TEACHER.WEIGHTS", path])
    with pytest.raises(CorruptCheckpointError, match="rand.pth is not a PyTorch checkpoint"):
        build_member(cfg, cfg.MODEL.TEACHER, "teacher")


URLS = [
    "http://example.com/sam_vit_h.pth",
    "https://example.com/sam_vit_h.pth",
    "s3://bucket/sam_vit_h.pth",
    "gs://bucket/sam_vit_h.pth",
    "hf://facebook/sam/model.safetensors",
]


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("role", ["TEACHER", "STUDENT"])
def test_weights_urls_are_refused_without_downloading(url, role, no_network):
    cfg = load_config(TINY_SAM, [*SIZE_OPTS, f"MODEL.{role}.WEIGHTS", url])
    node = getattr(cfg.MODEL, role)
    with pytest.raises(RemoteWeightsError) as err:
        build_member(cfg, node, role.lower())
    text = str(err.value)
    assert f"MODEL.{role}.WEIGHTS" in text and url in text and "never downloads" in text


@pytest.mark.parametrize("url", URLS[:3])
def test_student_loader_of_the_tools_refuses_urls(url, no_network):
    from sard.export import load_student

    with pytest.raises(RemoteWeightsError, match="MODEL.WEIGHTS .* is a URL"):
        load_student(TINY_SAM, [*SIZE_OPTS, "MODEL.WEIGHTS", url])
    with pytest.raises(RemoteWeightsError, match="never downloads"):
        read_state_dict(url)


# ---------------------------------------------------------------- teacher cache
def _distiller(cache_dir: str, *opts: str, config: str = TINY_SAM, seed: int = 0):
    torch.manual_seed(seed)  # the random-init teacher's weights follow the seed
    cfg = load_config(
        config,
        [*SIZE_OPTS, "MODEL.SARD.CACHE.ENABLED", "True", "MODEL.SARD.CACHE.DIR", cache_dir, *opts],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_distiller(cfg)
    calls = []
    teacher = model.teacher.module
    if hasattr(teacher, "extract_features"):
        real = teacher.extract_features
        teacher.extract_features = lambda x, **kw: calls.append(len(x)) or real(x, **kw)
    else:
        real = teacher.forward_semantic
        teacher.forward_semantic = lambda x, *a, **kw: calls.append(len(x)) or real(x, *a, **kw)
    return model, calls


def _images(n: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 64, 64), generator=g).float()


def _teacher_outputs(model, images):
    with torch.no_grad():
        return model._teacher_image_outputs(images, [(64, 64)] * len(images))


def _entry_files(cache_dir) -> list:
    return sorted(
        os.path.join(root, f)
        for root, _, files in os.walk(cache_dir)
        for f in files
        if f.endswith(".pt")
    )


def test_cache_entries_are_keyed_by_teacher_and_settings(tmp_path):
    cache_dir = str(tmp_path / "cache")
    images = _images()
    first, calls = _distiller(cache_dir)
    reference = _teacher_outputs(first, images)
    again, calls = _distiller(cache_dir)
    _teacher_outputs(again, images)
    assert calls == [] and again.cache.hits == 2  # same teacher and settings: served
    variants = {
        "another teacher seed": dict(seed=1),
        "other betas": dict(opts=("MODEL.SARD.BETA_E", "1.0")),
        "another radius": dict(opts=("MODEL.SARD.RADIUS", "5")),
        "another sigma": dict(opts=("MODEL.SARD.SIGMA", "2.0")),
        "another architecture": dict(opts=("MODEL.TEACHER.ARCH.DEPTH", "1")),
        "another method (no W)": dict(opts=("MODEL.SARD.METHOD", "uniform")),
    }
    fingerprints = {first.cache.fingerprint}
    for name, variant in variants.items():
        model, calls = _distiller(cache_dir, *variant.get("opts", ()), seed=variant.get("seed", 0))
        outputs = _teacher_outputs(model, images)
        assert calls == [2], f"{name}: stale entries were served"
        assert model.cache.fingerprint not in fingerprints, name
        fingerprints.add(model.cache.fingerprint)
        if name == "other betas":
            assert not torch.allclose(
                outputs["structure_weight"], reference["structure_weight"].float()
            )
    folders = sorted(os.listdir(cache_dir))
    assert len(folders) == len(fingerprints)
    for folder in folders:  # every folder says which teacher it holds
        assert os.path.isfile(os.path.join(cache_dir, folder, "identity.json"))


def test_the_valid_region_is_part_of_the_key():
    image = _images(1)[0]
    assert image_key(image, (64, 64)) != image_key(image, (64, 40))
    assert image_key(image, (64, 64)) == image_key(image.clone(), (64, 64))


def _zeroed(record: dict) -> dict:
    record["tensors"] = {k: torch.zeros_like(v) for k, v in record["tensors"].items()}
    return record


def _zeroed_with_checksums(record: dict) -> dict:
    record = _zeroed(record)
    record["sha1"] = {k: tensor_digest(v) for k, v in record["tensors"].items()}
    return record


def _old_format_zeros(record: dict) -> dict:
    return {k: torch.zeros_like(v) for k, v in record["tensors"].items()}


def _wrong_shape(record: dict) -> dict:
    """One column less everywhere, W renormalised: only the layout can tell."""
    record["tensors"] = {k: v[..., :-1].clone() for k, v in record["tensors"].items()}
    w = record["tensors"]["structure_weight"].float()
    record["tensors"]["structure_weight"] = (w / w.sum()).half()
    record["shapes"] = {k: list(v.shape) for k, v in record["tensors"].items()}
    record["sha1"] = {k: tensor_digest(v) for k, v in record["tensors"].items()}
    return record


def _missing_w(record: dict) -> dict:
    record["tensors"].pop("structure_weight")
    return record


def _other_image(record: dict) -> dict:
    record["key"] = "0" * 40
    return record


DAMAGES = {
    "zeroed tensors": (_zeroed, "checksum does not match"),
    "zeroed with forged checksums": (_zeroed_with_checksums, "all zeros, which no teacher"),
    "old-format dict of zeros": (_old_format_zeros, "is not a teacher cache entry"),
    "wrong shape, consistent record": (_wrong_shape, "but entries of this image size have"),
    "W missing": (_missing_w, "not all of the expected outputs"),
    "entry of another image": (_other_image, "belongs to another teacher, setting or image"),
    "truncated file": (None, "cannot be read"),
    "empty file": (None, "cannot be read"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_cache_entries_are_recomputed_with_a_warning(tmp_path, damage):
    cache_dir = str(tmp_path / "cache")
    images = _images()
    model, _ = _distiller(cache_dir)
    reference = _teacher_outputs(model, images)
    files = _entry_files(cache_dir)
    assert len(files) == 2
    victim = files[0]
    change, words = DAMAGES[damage]
    if change is None:
        data = open(victim, "rb").read()
        open(victim, "wb").write(data[: len(data) // 3] if damage == "truncated file" else b"")
    else:
        torch.save(change(torch.load(victim, weights_only=True)), victim)
    fresh, calls = _distiller(cache_dir)
    if damage == "wrong shape, consistent record":
        # The healthy entry is read first, so the layout of this image size is known.
        fresh.cache.get([os.path.basename(files[1])[:-3]], images.shape[1:])
    with pytest.warns(UserWarning, match="recomputing it") as record:
        outputs = _teacher_outputs(fresh, images)
    messages = [str(w.message) for w in record if "teacher cache entry" in str(w.message)]
    assert len(messages) == 1 and victim in messages[0] and words in messages[0], messages
    assert calls == [2]  # the teacher ran again
    assert fresh.cache.recomputed == 1
    for name, value in reference.items():
        torch.testing.assert_close(outputs[name].float(), value.float(), rtol=0, atol=0)
    rewritten = torch.load(victim, weights_only=True)  # and the entry is sound again
    assert rewritten["sha1"] == {k: tensor_digest(v) for k, v in rewritten["tensors"].items()}
    third, calls = _distiller(cache_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning the second time
        _teacher_outputs(third, images)
    assert calls == []


def test_semantic_teacher_cache_round_trip(tmp_path):
    cache_dir = str(tmp_path / "cache")
    images = _images(1)
    model, calls = _distiller(cache_dir, config=TINY_M2F)
    with torch.no_grad():
        first = model._teacher_image_outputs(images)
        again = model._teacher_image_outputs(images)
    assert calls == [1] and model.cache.hits == 1
    assert {"sem_logits", "structure_weight"} <= set(first)
    assert set(first) == set(again)


def test_cache_refuses_outputs_that_do_not_match_its_identity(tmp_path):
    cache = TeacherCache(str(tmp_path), identity={"outputs": ["image_embedding", "w"]})
    with pytest.raises(RuntimeError, match="cache identity is built wrongly"):
        cache.put(["k"], {"image_embedding": torch.zeros(1, 4, 2, 2)})


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_weights_holding_nan_are_refused_naming_the_tensor(tmp_path, bad):
    state = {"encoder.weight": torch.ones(3, 3), "head.bias": torch.tensor([0.0, bad])}
    path = tmp_path / "diverged.pth"
    torch.save(state, path)
    with pytest.raises(CorruptCheckpointError) as err:
        read_state_dict(path)
    text = str(err.value)
    assert "diverged.pth holds NaN or infinite values in 1 tensor(s) (head.bias)" in text

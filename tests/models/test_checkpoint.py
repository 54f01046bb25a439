"""Checkpoint loading: round trips, refusing code-carrying pickles, clear errors, resizing."""

import argparse
import logging
import pathlib

import pytest
import torch

from sard.models import (
    CheckpointMismatchError,
    Prompts,
    UnsafeCheckpointError,
    build_efficient_sam,
    build_model,
    load_checkpoint,
)

pytestmark = pytest.mark.filterwarnings("ignore:.*random initialisation")


class CreatesMarkerWhenUnpickled:
    """Unpickling this object calls Path.touch(marker): arbitrary code a checkpoint could carry."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _sam(image_size=64, seed=0, **kw):
    torch.manual_seed(seed)
    return build_model("sam", size="tiny", image_size=image_size, **kw).eval()


def _prompts(size):
    return Prompts(
        torch.tensor([[[[3.0, 4.0], [size - 9.0, size - 20.0]]]]), torch.tensor([[[2, 3]]])
    )


def _outputs(model, size):
    images = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(5)) * 255
    feats = model.extract_features(images)
    return feats["image_embedding"], model.predict_masks(feats, _prompts(size)).mask_logits


@pytest.mark.parametrize("family", ["sam", "efficient_sam"])
def test_save_load_round_trip_gives_identical_outputs(tmp_path, family):
    build = (
        (lambda s: _sam(seed=s))
        if family == "sam"
        else (
            lambda s: (torch.manual_seed(s), build_efficient_sam("tiny", image_size=64))[1].eval()
        )
    )
    source, target = build(0), build(1)
    path = tmp_path / "weights.pth"
    # EfficientSAM's releases keep the state dict under "model": exercise the unwrapping.
    torch.save(
        {"model": source.state_dict(), "epoch": 3} if family != "sam" else source.state_dict(), path
    )
    before = _outputs(target, 64)
    report = load_checkpoint(target, str(path))
    assert report.loaded and not report.missing and not report.unexpected and not report.resized
    for a, b, old in zip(_outputs(source, 64), _outputs(target, 64), before):
        assert torch.equal(a, b) and not torch.equal(b, old)


def test_pickle_carrying_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pth"
    torch.save({"model": _sam().state_dict(), "payload": CreatesMarkerWhenUnpickled(marker)}, path)
    with pytest.raises(UnsafeCheckpointError) as err:
        load_checkpoint(_sam(), path)
    assert "allow_unsafe_pickle=True" in str(err.value)
    assert "ALLOW_UNSAFE_PICKLE" in str(err.value)
    assert not marker.exists()


def test_trusted_pickle_loads_only_with_opt_in(tmp_path):
    path = tmp_path / "with_args.pth"
    source = _sam()
    torch.save({"model": source.state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(_sam(seed=1), path)
    target = _sam(seed=1)
    load_checkpoint(target, path, allow_unsafe_pickle=True)
    assert torch.equal(target.image_encoder.pos_embed, source.image_encoder.pos_embed)


def test_missing_file_and_urls_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth does not exist"):
        load_checkpoint(_sam(), tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="is a directory"):
        load_checkpoint(_sam(), tmp_path)
    with pytest.raises(ValueError, match="is a URL, and SARD never downloads anything"):
        load_checkpoint(_sam(), "https://example.com/sam.pth")


def test_wrong_family_lists_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "efficient.pt"
    torch.save({"model": build_efficient_sam("tiny", image_size=64).state_dict()}, path)
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(_sam(), path)
    text = str(err.value)
    assert "missing keys" in text and "unexpected keys" in text
    assert "image_encoder.blocks.0.attn.rel_pos_h" in text  # SAM key absent from EfficientSAM
    assert "prompt_encoder.invalid_points.* (1)" in text  # EfficientSAM key unknown to SAM
    assert "another model family" in text


def test_shape_mismatch_names_the_tensors(tmp_path):
    path = tmp_path / "narrow.pth"
    torch.save(_sam(embed_dim=64).state_dict(), path)
    with pytest.raises(
        CheckpointMismatchError,
        match=r"32 tensors .*patch_embed\.\* \(2\).*"
        r"qkv\.weight: checkpoint \(192, 64\) vs model \(96, 32\)",
    ):
        load_checkpoint(_sam(embed_dim=32), path)


def test_non_strict_load_warns_and_keeps_the_rest(tmp_path):
    source = _sam()
    state = source.state_dict()
    state.pop("mask_decoder.iou_token.weight")
    path = tmp_path / "partial.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, path)
    with pytest.raises(CheckpointMismatchError, match="1 missing keys"):
        load_checkpoint(_sam(seed=1), path)
    target = _sam(seed=1)
    with pytest.warns(UserWarning, match="non-strictly"):
        report = load_checkpoint(target, path, strict=False)
    assert report.missing == ["mask_decoder.iou_token.weight"]
    assert torch.equal(target.image_encoder.pos_embed, source.image_encoder.pos_embed)


def test_empty_path_warns_and_keeps_random_init():
    model = _sam()
    before = model.image_encoder.patch_embed.proj.weight.clone()
    with pytest.warns(UserWarning, match="random initialisation"):
        report = load_checkpoint(model, "")
    assert not report.loaded and torch.equal(before, model.image_encoder.patch_embed.proj.weight)


def test_sam_tables_are_resized_to_another_image_size(tmp_path, caplog):
    source = _sam(image_size=64)
    with torch.no_grad():
        source.image_encoder.pos_embed.fill_(0.25)
        source.image_encoder.blocks[1].attn.rel_pos_h.copy_(
            torch.arange(7.0)[:, None].expand(7, 32)
        )
    path = tmp_path / "sam64.pth"
    torch.save(source.state_dict(), path)
    target = _sam(image_size=128, seed=1)
    with caplog.at_level(logging.INFO, logger="sard.models.checkpoint"):
        report = load_checkpoint(target, path)
    assert sorted(report.resized) == [
        "image_encoder.blocks.1.attn.rel_pos_h",
        "image_encoder.blocks.1.attn.rel_pos_w",
        "image_encoder.pos_embed",
    ]  # block 0 is windowed: its tables do not depend on the image size
    assert "resized image_encoder.pos_embed from (1, 4, 4, 64) to (1, 8, 8, 64)" in caplog.text
    enc = target.image_encoder
    assert torch.allclose(enc.pos_embed, torch.full((1, 8, 8, 64), 0.25), atol=1e-6)
    table = enc.blocks[1].attn.rel_pos_h[:, 0]
    assert table.shape == (15,) and torch.all(table[1:] >= table[:-1])  # order kept
    assert table[0] == 0 and table[-1] == 6
    assert _outputs(target, 128)[1].shape == (1, 1, 3, 32, 32)
    with pytest.raises(CheckpointMismatchError, match="resize=False"):
        load_checkpoint(_sam(image_size=128), path, resize=False)


def test_efficient_sam_pos_embed_of_another_grid_is_resized(tmp_path):
    source = build_efficient_sam("tiny", image_size=64)
    state = source.state_dict()
    cls_slot = torch.full((1, 1, 64), 7.0)
    state["image_encoder.pos_embed"] = torch.cat([cls_slot, torch.full((1, 64, 64), 0.5)], dim=1)
    path = tmp_path / "grid8.pt"
    torch.save({"model": state}, path)
    target = build_efficient_sam("tiny", image_size=64)
    report = load_checkpoint(target, path)
    assert report.resized == ["image_encoder.pos_embed"]
    pos = target.image_encoder.pos_embed
    assert pos.shape == (1, 197, 64) and torch.all(pos[:, 0] == 7.0)
    assert torch.allclose(pos[:, 1:], torch.full((1, 196, 64), 0.5), atol=1e-6)


def test_safetensors_and_explicit_state_key(tmp_path):
    from safetensors.torch import save_file

    source = _sam()
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    target = _sam(seed=1)
    load_checkpoint(target, tmp_path / "w.safetensors")
    assert torch.equal(target.mask_decoder.iou_token.weight, source.mask_decoder.iou_token.weight)
    torch.save({"ema": {"weights": source.state_dict()}}, tmp_path / "ema.pth")
    with pytest.raises(KeyError, match="no entry 'ema.nope'"):
        load_checkpoint(_sam(), tmp_path / "ema.pth", state_key="ema.nope")
    target = _sam(seed=2)
    load_checkpoint(target, tmp_path / "ema.pth", state_key="ema.weights")
    assert torch.equal(target.mask_decoder.iou_token.weight, source.mask_decoder.iou_token.weight)

"""Mask2Former semantic wrapper: taps, scores, losses, weights, official sizes, no network."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoBackbone, Mask2FormerForUniversalSegmentation

from sard.models import mask2former
from sard.models.checkpoint import CheckpointMismatchError
from sard.models.mask2former_configs import build_backbone_config, build_mask2former_config
from sard.models.registry import build_model

H = W = 64
K = 5


# Every test here runs offline (conftest.no_network): the hub is told so, sockets fail.
pytestmark = pytest.mark.usefixtures("no_network")


def tiny(size: str = "tiny", weights: str = "", **kw) -> mask2former.Mask2FormerSemantic:
    torch.manual_seed(0)
    if not weights:
        with pytest.warns(UserWarning, match="randomly initialised"):
            return build_model("mask2former", size=size, image_size=(H, W), num_classes=K, **kw)
    return build_model("mask2former", size=size, image_size=(H, W), num_classes=K, weights=weights)


def images(batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 3, H, W, generator=torch.Generator().manual_seed(1)) * 255


def targets() -> list:
    t0 = torch.zeros(H, W, dtype=torch.long)
    t0[:, W // 2 :] = 3
    t0[:8] = 255
    return [t0, torch.full((H, W), 255, dtype=torch.long)]


@pytest.mark.parametrize("size", ["tiny", "tiny_resnet"])
def test_taps_match_declared_channels_and_strides(size):
    model = tiny(size).eval()
    with torch.no_grad():
        out = model.forward_semantic(images())
    assert set(out.features) == {"mask_features", "stage1", "stage2", "stage3", "stage4"}
    for name, feat in out.features.items():
        stride = model.tap_strides[name]
        assert feat.shape == (2, model.tap_channels[name], H // stride, W // stride), name
    assert model.tap_channels["mask_features"] == model.config.mask_feature_size
    assert out.sem_logits.shape == (2, K, H // 4, W // 4)
    assert out.losses is None
    # Scores: softmax-weighted sum of sigmoids, so within [0, Q].
    assert out.sem_logits.min() >= 0 and out.sem_logits.max() <= model.config.num_queries
    assert (model.family, model.num_classes, model.ignore_label) == ("mask2former", K, 255)


def test_semantic_scores_hand_computed():
    # q0: softmax [2, 1, 1]/4, sigmoid(0) = 0.5; q1: softmax [1, 1, 2]/4, sigmoid(ln 3) = 0.75.
    class_logits = torch.tensor([[[math.log(2), 0.0, 0.0], [0.0, 0.0, math.log(2)]]])
    mask_logits = torch.tensor([0.0, math.log(3)]).view(1, 2, 1, 1)
    scores = mask2former.semantic_scores(class_logits, mask_logits)
    expected = torch.tensor([0.5 * 0.5 + 0.25 * 0.75, 0.25 * 0.5 + 0.25 * 0.75]).view(1, 2, 1, 1)
    torch.testing.assert_close(scores, expected)
    log_scores = mask2former.semantic_log_scores(scores)
    torch.testing.assert_close(log_scores.softmax(1), scores / scores.sum(1, keepdim=True))
    assert mask2former.semantic_log_scores(torch.zeros(1), eps=1e-4).item() == pytest.approx(
        math.log(1e-4)
    )


def test_targets_to_masks_follow_detectron2_semantic_mapper():
    target = torch.tensor([[0, 2, 255], [2, 2, 0]])
    masks, classes = mask2former.semantic_targets_to_masks([target], num_classes=3)
    assert classes[0].tolist() == [0, 2]
    assert masks[0].tolist() == [[[1, 0, 0], [0, 0, 1]], [[0, 1, 0], [1, 1, 0]]]
    masks, classes = mask2former.semantic_targets_to_masks([torch.full((2, 2), 255)], 3)
    assert masks[0].shape == (0, 2, 2) and classes[0].numel() == 0
    with pytest.raises(ValueError, match=r"label\(s\) \[3\]"):
        mask2former.semantic_targets_to_masks([target.clamp(max=3) + (target == 0)], 3)


def test_losses_are_transformers_matched_loss_and_reach_parameters():
    model = tiny().eval()  # eval: no drop-path, so both passes below see the same network
    torch.manual_seed(5)  # the loss samples points at random
    out = model.forward_semantic(images(), targets())
    assert set(out.losses) == {"loss_m2f_ce", "loss_m2f_mask", "loss_m2f_dice"}
    total = sum(out.losses.values())
    assert all(torch.isfinite(v) and v > 0 for v in out.losses.values())
    mask_labels, class_labels = mask2former.semantic_targets_to_masks(targets(), K)
    torch.manual_seed(5)
    reference = model.model(
        pixel_values=model.preprocess(images()), mask_labels=mask_labels, class_labels=class_labels
    ).loss
    torch.testing.assert_close(total, reference)
    total.backward()
    first_backbone = next(model.model.model.pixel_level_module.encoder.parameters())
    for param in (first_backbone, model.model.class_predictor.weight):
        assert param.grad is not None and param.grad.abs().sum() > 0


def test_bad_targets_are_refused_with_reasons():
    model = tiny()
    with pytest.raises(ValueError, match="2 images"):
        model.forward_semantic(images(), targets()[:1])
    with pytest.raises(ValueError, match=r"targets\[0\] has shape"):
        model.forward_semantic(images(), [torch.zeros(8, 8, dtype=torch.long)] * 2)
    with pytest.raises(ValueError, match="images must be"):
        model.forward_semantic(torch.zeros(2, 1, H, W))


def test_semantic_inference_is_detectron2_sem_seg():
    model = tiny().eval()
    x = images()
    scores = model.semantic_inference(x, output_size=(40, 48))
    assert scores.shape == (2, K, 40, 48) and not scores.requires_grad
    with torch.no_grad():
        raw = model.model(pixel_values=model.preprocess(x))
        sem = model.forward_semantic(x).sem_logits
    masks = F.interpolate(raw.masks_queries_logits, size=(H, W), mode="bilinear")
    masks = F.interpolate(masks, size=(40, 48), mode="bilinear")
    expected = torch.einsum(
        "bqk,bqhw->bkhw", raw.class_queries_logits.softmax(-1)[..., :-1], masks.sigmoid()
    )
    torch.testing.assert_close(scores, expected)
    full = model.semantic_inference(x)
    assert full.shape == (2, K, H, W)
    low = F.interpolate(full, size=sem.shape[-2:], mode="bilinear", antialias=True)
    assert (low - sem).abs().mean() < 0.1 * sem.mean()


def test_full_resolution_argmax_matches_upsampled_scores():
    # Two queries, one per class, whose masks own the left / right half of a 4x4 grid.
    class_logits = torch.tensor([[[4.0, -4.0, -4.0], [-4.0, 4.0, -4.0]]])
    mask_logits = torch.full((1, 2, 4, 4), -6.0)
    mask_logits[0, 0, :, :2] = 6.0
    mask_logits[0, 1, :, 2:] = 6.0
    low = mask2former.semantic_scores(class_logits, mask_logits)
    up = F.interpolate(low, size=(16, 16), mode="bilinear")
    full = mask2former.semantic_scores(
        class_logits, F.interpolate(mask_logits, size=(16, 16), mode="bilinear")
    )
    expected = torch.zeros(16, 16, dtype=torch.long)
    expected[:, 8:] = 1
    assert torch.equal(full.argmax(1)[0], expected)
    assert torch.equal(up.argmax(1)[0], expected)


def test_save_pretrained_round_trip_and_state_file(tmp_path):
    model = tiny().eval()
    x = images()
    with torch.no_grad():
        ref = model.forward_semantic(x)
    model.save_pretrained(str(tmp_path / "m2f"))
    torch.save(model.state_dict(), tmp_path / "wrapper.pt")
    torch.save(model.model.state_dict(), tmp_path / "hf.pt")
    in_place = tiny("tiny")
    in_place.load_weights(str(tmp_path / "m2f"))
    with torch.no_grad():
        assert torch.equal(in_place.eval().forward_semantic(x).sem_logits, ref.sem_logits)
    for weights in (tmp_path / "m2f", tmp_path / "wrapper.pt", tmp_path / "hf.pt"):
        loaded = tiny(weights=str(weights)).eval()
        with torch.no_grad():
            out = loaded.forward_semantic(x)
        assert torch.equal(out.sem_logits, ref.sem_logits), weights
        assert torch.equal(out.features["mask_features"], ref.features["mask_features"])


def test_weights_errors_name_the_path_and_the_difference(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        tiny(weights=str(missing))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        tiny(weights=str(tmp_path / "empty"))
    tiny().save_pretrained(str(tmp_path / "swin"))
    with pytest.raises(ValueError, match="backbone.model_type"):
        tiny("tiny_resnet", weights=str(tmp_path / "swin"))
    with pytest.raises(ValueError, match="num_labels: 7 vs 5"):
        build_model("mask2former", size="tiny", num_classes=7, weights=str(tmp_path / "swin"))
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointMismatchError, match="unexpected \\['foo.weight'\\]"):
        tiny(weights=str(tmp_path / "other.pt"))


def test_unknown_size_and_overrides_are_refused():
    with pytest.raises(KeyError, match="swin_l"):
        build_model("mask2former", size="swin_xl")
    with pytest.raises(TypeError, match="num_querys"):
        build_mask2former_config("tiny", 3, num_querys=4)
    with pytest.raises(TypeError, match="embed_dims"):
        build_mask2former_config("tiny", 3, backbone_overrides={"embed_dims": 4})
    config = build_mask2former_config("tiny", 3, num_queries=4, backbone_overrides={"embed_dim": 8})
    assert (config.num_queries, config.backbone_config.embed_dim) == (4, 8)


OFFICIAL_BACKBONES = {
    "swin_l": dict(
        embed_dim=192,
        depths=[2, 2, 18, 2],
        num_heads=[6, 12, 24, 48],
        window_size=12,
        image_size=384,
    ),
    "swin_t": dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7),
    "r50": dict(depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048], layer_type="bottleneck"),
}


@pytest.mark.parametrize("size", sorted(OFFICIAL_BACKBONES))
def test_official_configs(size):
    config = build_mask2former_config(size, num_classes=19)
    head = dict(num_queries=100, decoder_layers=10, hidden_dim=256, mask_feature_size=256)
    assert {k: getattr(config, k) for k in head} == head
    assert config.num_labels == 19
    backbone = config.backbone_config
    fields = OFFICIAL_BACKBONES[size]
    got = {k: getattr(backbone, k) for k in fields}
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in got.items()} == fields
    assert list(backbone.out_features) == ["stage1", "stage2", "stage3", "stage4"]


@pytest.mark.parametrize(
    "size, backbone_m, total_m",
    [("r50", 23.51, 44.01), ("swin_t", 27.52, 47.41), ("swin_l", 195.20, 215.46)],
)
def test_official_parameter_counts(size, backbone_m, total_m):
    # Meta device: shapes without memory or init time (zoo: R50 44M, Swin-T 47M, Swin-L 216M).
    with torch.device("meta"):
        backbone = AutoBackbone.from_config(build_backbone_config(size))
        full = Mask2FormerForUniversalSegmentation(build_mask2former_config(size, 19))
    count = lambda m: sum(p.numel() for p in m.parameters()) / 1e6  # noqa: E731
    assert count(backbone) == pytest.approx(backbone_m, abs=0.01)
    assert count(full) == pytest.approx(total_m, abs=0.01)

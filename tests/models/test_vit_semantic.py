"""ViT + light semantic decoder: taps, CE loss, inference, weights (own and timm), sizes."""

from __future__ import annotations


import pytest
import timm
import torch
import torch.nn.functional as F

from sard.models import vit_semantic
from sard.models.checkpoint import CheckpointMismatchError
from sard.models.registry import build_model

H, W = 64, 96
K = 4


# Every test here runs offline (conftest.no_network): the hub is told so, sockets fail.
pytestmark = pytest.mark.usefixtures("no_network")


def tiny(weights: str = "", size: str = "tiny", **kw) -> vit_semantic.ViTSemantic:
    torch.manual_seed(0)
    if weights:
        return build_model(
            "vit_semantic", size=size, image_size=(H, W), num_classes=K, weights=weights, **kw
        )
    with pytest.warns(UserWarning, match="randomly initialised"):
        return build_model("vit_semantic", size=size, image_size=(H, W), num_classes=K, **kw)


def images() -> torch.Tensor:
    return torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(1)) * 255


def test_stage_indices_are_depth_quarters():
    assert vit_semantic.stage_block_indices(24) == [5, 11, 17, 23]
    assert vit_semantic.stage_block_indices(12) == [2, 5, 8, 11]
    assert vit_semantic.stage_block_indices(4) == [0, 1, 2, 3]


def test_taps_match_declared_channels_and_strides():
    model = tiny().eval()
    with torch.no_grad():
        out = model.forward_semantic(images())
    expected = {"last_block", "stage1", "stage2", "stage3", "stage4"}
    expected |= {"pyramid_s4", "pyramid_s8", "pyramid_s16", "pyramid_s32"}
    assert set(out.features) == expected
    for name, feat in out.features.items():
        stride = model.tap_strides[name]
        assert feat.shape == (2, model.tap_channels[name], H // stride, W // stride), name
    assert out.sem_logits.shape == (2, K, H // 4, W // 4) and out.losses is None
    # stage4 is the raw last block; last_block is the same tokens after the final LayerNorm.
    tokens = out.features["stage4"].flatten(2).transpose(1, 2)
    normed = model.backbone.norm(tokens).transpose(1, 2).reshape_as(out.features["last_block"])
    torch.testing.assert_close(normed, out.features["last_block"])
    assert not torch.allclose(out.features["stage1"], out.features["stage4"])


def test_ce_loss_hand_checked_and_gradients_reach_backbone():
    model = tiny()
    target = torch.full((H, W), 255, dtype=torch.long)
    target[10, 20] = 2
    out = model.forward_semantic(images(), [target, torch.full((H, W), 255)])
    up = F.interpolate(out.sem_logits, size=(H, W), mode="bilinear", align_corners=False)
    expected = -up[0, :, 10, 20].log_softmax(0)[2]
    torch.testing.assert_close(out.losses["loss_sem_ce"], expected)
    out.losses["loss_sem_ce"].backward()
    for param in (model.backbone.patch_embed.proj.weight, model.seg_head.classifier.weight):
        assert param.grad is not None and param.grad.abs().sum() > 0


def test_loss_with_no_labelled_pixel_is_zero_and_bad_labels_are_refused():
    model = tiny()
    ignored = [torch.full((H, W), 255, dtype=torch.long)] * 2
    loss = model.forward_semantic(images(), ignored).losses["loss_sem_ce"]
    assert loss.item() == 0.0
    loss.backward()  # still part of the graph
    with pytest.raises(ValueError, match=r"label\(s\) \[7\]"):
        model.forward_semantic(images(), [torch.full((H, W), 7, dtype=torch.long)] * 2)
    with pytest.raises(ValueError, match="multiples of 32"):
        model.forward_semantic(torch.zeros(1, 3, 48, 64))


def test_semantic_inference_is_softmax_of_resized_logits():
    model = tiny().eval()
    probs = model.semantic_inference(images(), output_size=(32, 40))
    assert probs.shape == (2, K, 32, 40) and not probs.requires_grad
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 32, 40))
    with torch.no_grad():
        logits = model.forward_semantic(images()).sem_logits
    up = F.interpolate(logits, size=(32, 40), mode="bilinear", align_corners=False)
    assert torch.equal(probs.argmax(1), up.argmax(1))


def test_state_dict_round_trip(tmp_path):
    model = tiny().eval()
    path = tmp_path / "vit.pt"
    torch.save({"model": model.state_dict()}, path)
    loaded = tiny(str(path)).eval()
    with torch.no_grad():
        a, b = model.forward_semantic(images()), loaded.forward_semantic(images())
    assert torch.equal(a.sem_logits, b.sem_logits)
    assert torch.equal(a.features["pyramid_s4"], b.features["pyramid_s4"])


def test_timm_backbone_checkpoint_loads_with_pos_embed_resampled(tmp_path):
    torch.manual_seed(3)
    source = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, embed_dim=32, depth=4, num_heads=2
    )
    path = tmp_path / "timm.pth"
    torch.save(source.state_dict(), path)
    model = tiny()
    decoder_before = model.seg_head.classifier.weight.clone()
    report = model.load_weights(str(path))
    assert report["dropped"] == ["head.bias", "head.weight"]
    assert report["resized"] == ["backbone.pos_embed"]
    assert model.backbone.pos_embed.shape == (1, 1 + (H // 16) * (W // 16), 32)
    assert torch.equal(model.backbone.blocks[2].mlp.fc1.weight, source.blocks[2].mlp.fc1.weight)
    assert torch.equal(model.backbone.cls_token, source.cls_token)
    assert torch.equal(model.seg_head.classifier.weight, decoder_before)


def test_weights_errors_name_path_and_keys(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        tiny(str(tmp_path / "nowhere.pt"))
    torch.save({"foo.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointMismatchError, match="unexpected \\['foo.weight'\\]"):
        tiny(str(tmp_path / "other.pt"))
    big = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1)
    torch.save(big.state_dict(), tmp_path / "wrong_width.pt")
    with pytest.raises(CheckpointMismatchError, match="mis-shaped"):
        tiny(str(tmp_path / "wrong_width.pt"))


def test_unknown_size_and_other_patch_sizes_are_refused():
    with pytest.raises(KeyError, match="vit_ti"):
        build_model("vit_semantic", size="vit_h")
    with pytest.raises(ValueError, match="patch size 16"):
        build_model("vit_semantic", size="tiny", image_size=(64, 64), patch_size=8)


@pytest.mark.parametrize(
    "size, embed, depth, heads, backbone_m",
    [("vit_l", 1024, 24, 16, 303.30), ("vit_ti", 192, 12, 3, 5.52)],
)
def test_official_sizes(size, embed, depth, heads, backbone_m):
    # Meta device: shapes only. 224x224 so counts match timm's (minus the 1000-class head).
    with torch.device("meta"):
        backbone, settings = vit_semantic.build_vit_backbone(size, (224, 224))
    assert (backbone.embed_dim, len(backbone.blocks), backbone.blocks[0].attn.num_heads) == (
        embed,
        depth,
        heads,
    )
    assert backbone.patch_embed.patch_size == (16, 16)
    count = sum(p.numel() for p in backbone.parameters()) / 1e6
    assert count == pytest.approx(backbone_m, abs=0.01)  # timm: 304.33M / 5.72M with head
    assert settings["decoder_channels"] == 256
    assert settings["pixel_mean"] == pytest.approx((127.5, 127.5, 127.5))


def test_pixel_statistics_can_be_overridden():
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    model = tiny(pixel_mean=mean, pixel_std=std)
    x = torch.full((1, 3, 64, 64), 100.0)
    expected = (100.0 - torch.tensor(mean)) / torch.tensor(std)
    torch.testing.assert_close(model.preprocess(x)[0, :, 0, 0], expected)

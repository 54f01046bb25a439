"""EfficientSAM: released key/shape layout, official forward, prompts, pos_embed resizing."""

import pytest
import torch
import torch.nn.functional as F

from sard.models import EfficientSam, Prompts, build_efficient_sam, build_model
from sard.models.efficient_sam.image_encoder import resize_abs_pos

pytestmark = pytest.mark.filterwarnings("ignore:.*random initialisation")
S = 64

# The released efficient_sam_vitt.pt (state dict under "model"), from the published architecture:
# ViT-Ti encoder (192 dims, 12 blocks of 12 tensors, 197-slot pos_embed, 6-tensor neck), a prompt
# encoder of 4 one-row embeddings + the Fourier matrix, SAM's two-way decoder with GELU MLPs.
TI_COUNTS = {"image_encoder": 153, "prompt_encoder": 5, "mask_decoder": 120}
TI_SHAPES = {
    "image_encoder.patch_embed.proj.weight": (192, 3, 16, 16),
    "image_encoder.patch_embed.proj.bias": (192,),
    "image_encoder.pos_embed": (1, 197, 192),
    "image_encoder.blocks.0.norm1.weight": (192,),
    "image_encoder.blocks.0.attn.qkv.weight": (576, 192),
    "image_encoder.blocks.5.attn.proj.bias": (192,),
    "image_encoder.blocks.11.mlp.fc1.weight": (768, 192),
    "image_encoder.blocks.11.mlp.fc2.weight": (192, 768),
    "image_encoder.neck.0.weight": (256, 192, 1, 1),
    "image_encoder.neck.1.bias": (256,),
    "image_encoder.neck.2.weight": (256, 256, 3, 3),
    "image_encoder.neck.3.weight": (256,),
    "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": (2, 128),
    "prompt_encoder.invalid_points.weight": (1, 256),
    "prompt_encoder.point_embeddings.weight": (1, 256),
    "prompt_encoder.bbox_top_left_embeddings.weight": (1, 256),
    "prompt_encoder.bbox_bottom_right_embeddings.weight": (1, 256),
    "mask_decoder.iou_token.weight": (1, 256),
    "mask_decoder.mask_tokens.weight": (4, 256),
    "mask_decoder.transformer.layers.0.self_attn.q_proj.weight": (256, 256),
    "mask_decoder.transformer.layers.0.cross_attn_token_to_image.k_proj.weight": (128, 256),
    "mask_decoder.transformer.layers.1.cross_attn_image_to_token.out_proj.weight": (256, 128),
    "mask_decoder.transformer.layers.1.mlp.layers.0.0.weight": (2048, 256),
    "mask_decoder.transformer.layers.1.mlp.fc.weight": (256, 2048),
    "mask_decoder.transformer.layers.1.norm4.bias": (256,),
    "mask_decoder.transformer.final_attn_token_to_image.v_proj.weight": (128, 256),
    "mask_decoder.transformer.norm_final_attn.weight": (256,),
    "mask_decoder.final_output_upscaling_layers.0.0.weight": (256, 64, 2, 2),
    "mask_decoder.final_output_upscaling_layers.0.1.weight": (64,),
    "mask_decoder.final_output_upscaling_layers.1.0.weight": (64, 32, 2, 2),
    "mask_decoder.final_output_upscaling_layers.1.0.bias": (32,),
    "mask_decoder.output_hypernetworks_mlps.3.layers.1.0.weight": (256, 256),
    "mask_decoder.output_hypernetworks_mlps.3.fc.weight": (32, 256),
    "mask_decoder.iou_prediction_head.layers.1.0.weight": (256, 256),
    "mask_decoder.iou_prediction_head.fc.weight": (4, 256),
}


@pytest.fixture(scope="module")
def tiny() -> EfficientSam:
    torch.manual_seed(0)
    return build_model("efficient_sam", size="tiny", image_size=S).eval()


def test_ti_state_dict_matches_released_checkpoint_layout():
    state = build_efficient_sam("ti").state_dict()
    assert len(state) == 278
    counts = {p: sum(k.startswith(p + ".") for k in state) for p in TI_COUNTS}
    assert counts == TI_COUNTS
    assert {k: tuple(state[k].shape) for k in TI_SHAPES} == TI_SHAPES
    assert "mask_decoder.final_output_upscaling_layers.1.1.weight" not in state
    assert not any(k.startswith("image_encoder.blocks.12.") or "pixel_" in k for k in state)
    model_params = sum(v.numel() for k, v in state.items() if "gaussian" not in k)
    assert model_params == pytest.approx(10.22e6, abs=0.02e6)


def test_s_size():
    with torch.device("meta"):
        model = build_efficient_sam("s")
    assert model.image_encoder.pos_embed.shape == (1, 197, 384)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(26.41e6, abs=0.02e6)


def test_official_forward_signature_and_outputs(tiny):
    images = torch.rand(2, 3, 48, 80, generator=torch.Generator().manual_seed(0))
    points = torch.tensor([[[[10.0, 20.0], [-1, -1]], [[5, 5], [60, 40]]]]).repeat(2, 1, 1, 1)
    labels = torch.tensor([[[1, -1], [2, 3]]]).repeat(2, 1, 1)
    masks, iou = tiny(images, points, labels)
    assert masks.shape == (2, 2, 3, 48, 80) and iou.shape == (2, 2, 3)
    low, iou_low = tiny(images, points, labels, scale_to_original_image_size=False)
    assert low.shape == (2, 2, 3, S // 4, S // 4)
    torch.testing.assert_close(iou, iou_low)
    # The official path equals the contract path once images and points are at S x S.
    square = F.interpolate(images, (S, S), mode="bilinear")
    scale = torch.tensor([S / 80, S / 48])
    contract = tiny.predict_masks(
        tiny.extract_features(square * 255),
        Prompts(torch.where(points >= 0, points * scale, -1), labels),
    )
    torch.testing.assert_close(contract.mask_logits, low, atol=1e-4, rtol=1e-4)


def test_padding_points_change_nothing_and_limit_is_six(tiny):
    feats = tiny.extract_features(torch.rand(1, 3, S, S) * 255)
    pts = torch.tensor([[[[12.0, 30.0], [40.0, 41.0]]]])
    base = tiny.predict_masks(feats, Prompts(pts, torch.tensor([[[1, 0]]])))
    padded_pts = torch.cat([pts, torch.tensor([[[[7.0, 3.0]]]])], dim=2)
    padded = tiny.predict_masks(feats, Prompts(padded_pts, torch.tensor([[[1, 0, -1]]])))
    torch.testing.assert_close(base.mask_logits, padded.mask_logits)
    with pytest.raises(ValueError, match="at most 6 points"):
        tiny.predict_masks(feats, Prompts(torch.zeros(1, 1, 7, 2), torch.ones(1, 1, 7)))
    seven = torch.rand(1, 1, 7, 2) * S
    seven_labels = torch.ones(1, 1, 7, dtype=torch.long)
    images = torch.rand(1, 3, S, S)
    cut, _ = tiny(images, seven, seven_labels)
    six, _ = tiny(images, seven[:, :, :6], seven_labels[:, :, :6])
    torch.testing.assert_close(cut, six)


def test_label_embeddings_follow_the_released_model(tiny):
    enc = tiny.prompt_encoder
    pts = torch.full((1, 5, 2), 10.0)
    out = enc(pts, torch.tensor([[-1, 0, 1, 2, 3]]), (S, S))
    pe = enc.pe_layer.points(pts + 0.5, (S, S))
    torch.testing.assert_close(out[0, 1], pe[0, 1])  # background: position only
    torch.testing.assert_close(out[0, 2], pe[0, 2] + enc.point_embeddings.weight[0])
    torch.testing.assert_close(out[0, 4], pe[0, 4] + enc.bbox_bottom_right_embeddings.weight[0])


def test_pos_embed_interpolation_to_any_grid():
    const = torch.full((1, 197, 8), 0.3)
    assert torch.allclose(resize_abs_pos(const, (5, 9)), torch.full((1, 5, 9, 8), 0.3), atol=1e-6)
    ramp = torch.zeros(1, 197, 1)
    ramp[0, 1:, 0] = torch.arange(14.0).repeat(14)  # increases along x, constant along y
    grid = resize_abs_pos(ramp, (6, 10))[0, ..., 0]
    assert torch.all(grid[:, 1:] > grid[:, :-1])
    torch.testing.assert_close(grid, grid[:1].expand(6, 10))
    same = resize_abs_pos(ramp, (14, 14))
    torch.testing.assert_close(same.reshape(1, 196, 1), ramp[:, 1:])
    torch.manual_seed(0)
    small = build_efficient_sam("tiny", image_size=64)
    big = build_efficient_sam("tiny", image_size=96)
    big.load_state_dict(small.state_dict())
    assert big.extract_features(torch.rand(1, 3, 96, 96))["image_embedding"].shape == (1, 256, 6, 6)
    assert small.extract_features(torch.rand(1, 3, 64, 64))["image_embedding"].shape == (
        1,
        256,
        4,
        4,
    )


def test_gradients_reach_every_part():
    torch.manual_seed(0)
    model = build_efficient_sam("tiny", image_size=S)
    feats = model.extract_features(torch.rand(1, 3, S, S) * 255)
    out = model.predict_masks(
        feats, Prompts(torch.tensor([[[[5.0, 5.0], [50.0, 40.0]]]]), torch.tensor([[[2, 3]]]))
    )
    (out.mask_logits.mean() + out.iou_pred.mean()).backward()
    params = dict(model.named_parameters())
    for name in (
        "image_encoder.pos_embed",
        "image_encoder.blocks.1.attn.qkv.weight",
        "prompt_encoder.bbox_top_left_embeddings.weight",
        "mask_decoder.final_output_upscaling_layers.0.1.weight",
        "mask_decoder.output_hypernetworks_mlps.1.fc.weight",
    ):
        assert params[name].grad is not None and params[name].grad.abs().sum() > 0, name
    assert params["prompt_encoder.invalid_points.weight"].grad.abs().sum() > 0  # padding slots


def test_postprocess_and_builder_errors(tiny):
    logits = torch.randn(1, 2, 3, S // 4, S // 4)
    out = tiny.postprocess_masks(logits, (S, 40), (30, 20))
    assert out.shape == (1, 2, 3, 30, 20)
    assert tiny.resize_mode == "stretch" and tiny.tap_channels == {"image_embedding": 256}
    with pytest.raises(KeyError, match="unknown EfficientSAM variant"):
        build_efficient_sam("xl")
    with pytest.raises(ValueError, match="multiple of 16"):
        build_efficient_sam("tiny", image_size=70)

"""SAM wrapper: shapes, equality with segment_anything's own predictor, batching, gradients."""

import pytest
import torch
from segment_anything import build_sam_vit_b
from segment_anything.modeling import Sam

from sard.models import Prompts, SamModel, build_model

pytestmark = pytest.mark.filterwarnings("ignore:.*random initialisation")
S = 64


@pytest.fixture(scope="module")
def sam() -> SamModel:
    torch.manual_seed(0)
    return build_model("sam", size="tiny", image_size=S).eval()


def _images(b=2, h=48, w=S):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(1)) * 255


def test_tap_and_output_shapes(sam):
    feats = sam.extract_features(_images())
    assert feats["image_embedding"].shape == (2, 256, S // 16, S // 16)
    assert sam.tap_channels == {"image_embedding": 256} and sam.resize_mode == "longest_pad"
    pts, lab = torch.rand(2, 7, 3, 2) * 40, torch.randint(-1, 2, (2, 7, 3))
    out = sam.predict_masks(feats, Prompts(pts, lab))
    assert out.mask_logits.shape == (2, 7, 3, S // 4, S // 4)
    assert out.iou_pred.shape == (2, 7, 3)
    single = sam.predict_masks(feats, Prompts(pts, lab), multimask=False)
    assert single.mask_logits.shape == (2, 7, 1, S // 4, S // 4)


def test_matches_official_predictor_for_points_and_boxes(sam):
    reference = Sam(sam.image_encoder, sam.prompt_encoder, sam.mask_decoder)
    images = _images()
    feats = sam.extract_features(images)
    pts, lab = torch.rand(2, 4, 2, 2) * 45, torch.randint(0, 2, (2, 4, 2))
    boxes = torch.rand(2, 4, 4) * 30
    boxes[..., 2:] += boxes[..., :2]
    corners = Prompts(boxes.view(2, 4, 2, 2), torch.tensor([2, 3]).expand(2, 4, 2))
    for prompts, key in ((Prompts(pts, lab), "points"), (corners, "boxes")):
        ours = sam.predict_masks(feats, prompts)
        for i in range(2):
            record = {"image": images[i], "original_size": (48, S)}
            if key == "points":
                record.update(point_coords=pts[i], point_labels=lab[i])
            else:
                record.update(boxes=boxes[i])
            ref = reference([record], multimask_output=True)[0]
            torch.testing.assert_close(ours.mask_logits[i], ref["low_res_logits"])
            torch.testing.assert_close(ours.iou_pred[i], ref["iou_predictions"])
    logits = ours.mask_logits[0]
    torch.testing.assert_close(
        sam.postprocess_masks(logits, (48, S), (30, 40)),
        reference.postprocess_masks(logits, (48, S), (30, 40)),
    )


def test_prompts_are_independent_and_chunking_is_exact(sam):
    feats = sam.extract_features(_images())
    pts, lab = torch.rand(2, 6, 2, 2) * 60, torch.randint(0, 4, (2, 6, 2))
    full = sam.predict_masks(feats, Prompts(pts, lab))
    chunked = sam.predict_masks(feats, Prompts(pts, lab), chunk_size=4)
    torch.testing.assert_close(full.mask_logits, chunked.mask_logits)
    alone = sam.predict_masks(feats, Prompts(pts[:, 3:4], lab[:, 3:4]))
    torch.testing.assert_close(full.mask_logits[:, 3:4], alone.mask_logits, atol=1e-5, rtol=1e-5)


def test_mask_inputs_change_the_prediction(sam):
    feats = sam.extract_features(_images(b=1))
    prompts = Prompts(torch.full((1, 2, 1, 2), 20.0), torch.ones(1, 2, 1, dtype=torch.long))
    plain = sam.predict_masks(feats, prompts)
    masks = torch.randn(1, 2, 1, S // 4, S // 4)
    guided = sam.predict_masks(feats, prompts, mask_inputs=masks)
    assert guided.mask_logits.shape == plain.mask_logits.shape
    assert not torch.allclose(guided.mask_logits, plain.mask_logits)


def test_preprocess_pads_with_zero_after_normalising(sam):
    images = torch.full((1, 3, 40, 50), 255.0)
    x = sam.preprocess(images)
    assert x.shape == (1, 3, S, S)
    assert torch.all(x[..., 40:, :] == 0) and torch.all(x[..., :, 50:] == 0)
    assert torch.all(x[..., :40, :50] > 0)
    masked = sam.preprocess(torch.full((2, 3, S, S), 255.0), valid_hw=[(10, 20), (S, S)])
    assert torch.all(masked[0, :, 10:] == 0) and torch.all(masked[0, :, :, 20:] == 0)
    assert torch.all(masked[1] > 0)
    with pytest.raises(ValueError, match="larger than its input size"):
        sam.preprocess(torch.zeros(1, 3, S + 16, S))


def test_bad_prompts_are_rejected(sam):
    feats = sam.extract_features(_images())
    with pytest.raises(ValueError, match=r"\(B, Q, N, 2\)"):
        sam.predict_masks(feats, Prompts(torch.zeros(2, 3, 2), torch.zeros(2, 3)))
    with pytest.raises(ValueError, match="labels must be in"):
        sam.predict_masks(feats, Prompts(torch.zeros(2, 1, 1, 2), torch.full((2, 1, 1), 5)))
    with pytest.raises(ValueError, match="prompts are for 3 images"):
        sam.predict_masks(feats, Prompts(torch.zeros(3, 1, 1, 2), torch.ones(3, 1, 1)))


def test_gradients_reach_encoder_prompt_encoder_and_decoder():
    torch.manual_seed(0)
    model = build_model("sam", size="tiny", image_size=S)
    feats = model.extract_features(_images(b=1))
    boxes = Prompts(torch.tensor([[[[4.0, 4.0], [40.0, 30.0]]]]), torch.tensor([[[2, 3]]]))
    out = model.predict_masks(feats, boxes)
    (
        out.mask_logits.sigmoid().mean() + out.iou_pred.sum() + feats["image_embedding"].mean()
    ).backward()
    for name in (
        "image_encoder.patch_embed.proj.weight",
        "image_encoder.blocks.1.attn.rel_pos_h",
        "prompt_encoder.point_embeddings.2.weight",
        "mask_decoder.transformer.layers.0.self_attn.q_proj.weight",
        "mask_decoder.iou_prediction_head.layers.0.weight",
    ):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_vit_b_layout_equals_segment_anything():
    with torch.device("meta"):
        ours = build_model("sam", size="vit_b")
        theirs = build_sam_vit_b()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()
    }
    assert sum(p.numel() for p in ours.parameters()) == pytest.approx(93.7e6, rel=0.01)


def test_vit_h_size_and_overrides():
    with torch.device("meta"):
        vit_h = build_model("sam", size="vit_h")
        custom = build_model("sam", size="tiny", image_size=128, patch_size=8, embed_dim=32)
    assert sum(p.numel() for p in vit_h.parameters()) == pytest.approx(641.1e6, rel=0.002)
    assert custom.image_encoder.pos_embed.shape == (1, 16, 16, 32)
    assert custom.mask_downsample == 2
    with pytest.raises(TypeError, match="unknown overrides"):
        build_model("sam", size="tiny", image_size=S, embed=3)
    with pytest.raises(KeyError, match="unknown SAM size"):
        build_model("sam", size="vit_x")


def test_decoder_dim_narrows_neck_prompts_and_decoder():
    """A student's cost on fine grids is its per-prompt decoder: decoder_dim narrows it, and the
    tap follows so distillation heads see the student's real width."""
    torch.manual_seed(0)
    narrow = build_model("sam", size="tiny", image_size=S, patch_size=8, decoder_dim=64)
    wide = build_model("sam", size="tiny", image_size=S, patch_size=8)
    assert narrow.tap_channels == {"image_embedding": 64}
    feats = narrow.extract_features(_images())
    assert feats["image_embedding"].shape == (2, 64, S // 8, S // 8)
    pts, lab = torch.rand(2, 5, 2, 2) * 40, torch.tensor([2, 3]).expand(2, 5, 2)
    out = narrow.predict_masks(feats, Prompts(pts, lab))
    assert out.mask_logits.shape == (2, 5, 3, S // 2, S // 2)
    out.mask_logits.sum().backward()
    assert narrow.image_encoder.patch_embed.proj.weight.grad.abs().sum() > 0

    def params(m):
        return sum(p.numel() for p in m.parameters())

    assert params(narrow) < params(wide) / 5  # the decoder was most of the tiny model
    assert params(narrow.image_encoder.blocks) == params(wide.image_encoder.blocks)
    for bad in (0, 40):
        with pytest.raises(ValueError, match="decoder_dim must be a positive multiple of 16"):
            build_model("sam", size="tiny", image_size=S, decoder_dim=bad)

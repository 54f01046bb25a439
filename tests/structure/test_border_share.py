"""Border share of W(i) and the encoder probes that find what pulls W to the image edge."""

from __future__ import annotations

import json

import pytest
import torch

from sard.models import build_model
from studies.encoder_probes import probe_encoder
from sard.reporting.weight_stats import border_share, outer_ring, weight_statistics


def test_border_share_of_uniform_ring_and_valid_maps():
    assert outer_ring(torch.ones(8, 8, dtype=torch.bool)).sum() == 28  # 64 - 36
    assert border_share(torch.full((8, 8), 1 / 64)) == pytest.approx(1.0)
    ring = outer_ring(torch.ones(8, 8, dtype=torch.bool)).double()
    assert border_share(ring / ring.sum()) == pytest.approx(64 / 28)  # all mass on the ring
    interior = 1 - ring
    assert border_share(interior / interior.sum()) == 0.0
    # A landscape image's valid rows 0..4: the ring is that rectangle's rim (5x8: 22 of 40).
    valid = torch.zeros(8, 8, dtype=torch.bool)
    valid[:5] = True
    assert outer_ring(valid).sum() == 22 and not outer_ring(valid)[5:].any()
    w = valid.double() / valid.sum()
    assert border_share(w, valid) == pytest.approx(1.0)  # uniform on the valid cells
    masks = torch.zeros(1, 64, 64, dtype=torch.bool)
    masks[0, 10:30, 10:30] = True
    stats = weight_statistics(w.float(), masks, valid, {"E": w, "C": w, "D": ring})
    assert stats["border_share"] == pytest.approx(1.0) and stats["ess_ratio"] == pytest.approx(1)
    assert stats["border_E"] == pytest.approx(1.0)
    assert stats["border_D"] == pytest.approx(40 / 22)  # the full ring within the valid rows


def test_probes_change_the_neck_padding_and_position_embedding():
    torch.manual_seed(0)
    model = build_model("efficient_sam", size="tiny", image_size=64).eval()
    image = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        before = model.extract_features(image)["image_embedding"]
    changed = probe_encoder(model, "replicate", zero_pos_embed=True)
    assert any("replicate" in c for c in changed) and any("position" in c for c in changed)
    assert model.image_encoder.pos_embed.abs().max() == 0
    with torch.no_grad():
        after = model.extract_features(image)["image_embedding"]
    assert not torch.allclose(before, after)
    with pytest.raises(ValueError, match="neck_padding"):
        probe_encoder(model, "circular-ish")


def test_weight_stats_of_a_random_architecture(load_script, tmp_path):
    from sard.data.synthetic import SynthConfig
    from studies.study_data import ensure_synth

    data = tmp_path / "data"
    config = SynthConfig(image_size=64, min_size=6, max_size=16)
    ensure_synth(str(data), config, {"train": 1, "test": 2}, seed=0, progress=False)
    tool = load_script("tools/structure_weight_stats.py")
    common = ["--data-folder", str(data), "--prefix", "border_test", "--input-size", "64"]
    stats = tool.main(["--model", "sam:tiny", "--out", str(tmp_path / "a"), *common])
    assert stats["grid"] == [4, 4] and stats["images"] == 2
    full = stats["means"]["sard (2,1,1)"]
    for key in ("border_share", "border_E", "border_C", "border_D"):
        assert 0.0 <= full[key] <= 16 / 12 + 1e-9  # at most all mass on the 12 ring cells
    saved = json.loads((tmp_path / "a" / "weight_stats.json").read_text())
    assert saved["model"] == "sam:tiny" and saved["probes"] == []
    assert "border share" in (tmp_path / "a" / "weight_stats.md").read_text()
    probed = tool.main(
        ["--model", "sam:tiny", "--out", str(tmp_path / "b"), "--neck-padding", "replicate"]
        + common
    )
    assert probed["probes"] and "Probes" in probed["header"]
    with pytest.raises(SystemExit):
        tool.main(["--model", "sam:tiny", *common])  # --model needs --out


def test_side_shares_tell_which_edge_holds_the_mass():
    from sard.reporting.weight_stats import side_shares

    w = torch.full((8, 8), 1.0)
    w[7, :] = 5.0  # the bottom row heavy, as SAM's padded windows would make it
    w = w / w.sum()
    sides = side_shares(w)
    assert sides["bottom"] == pytest.approx((5 * 8 / (56 + 40)) / (8 / 64))
    assert sides["top"] == pytest.approx((8 / 96) / (8 / 64))
    assert sides["left"] == pytest.approx(sides["right"])
    valid = torch.zeros(8, 8, dtype=torch.bool)
    valid[:5, :6] = True
    assert side_shares(valid.double() / 30, valid) == pytest.approx(
        {"top": 1.0, "bottom": 1.0, "left": 1.0, "right": 1.0}
    )

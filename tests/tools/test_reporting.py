"""sard.reporting: mean ± std, tables, deltas, figures, FLOP/param counts, run specs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from sard.reporting import (
    comparison_headers,
    comparison_rows,
    count_gflops,
    count_params,
    format_mean_std,
    markdown_table,
    mean_std,
    plot_method_bars,
    plot_training_curves,
    render_predictions,
    summarise_runs,
)
from sard.reporting.plots import per_mask_iou, smooth, split_loss_terms
from studies.study import Member, RunSpec, Schedule, _write_json, check_same_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_mean_std_uses_the_sample_std():
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert std == pytest.approx(math.sqrt(5.0 / 3.0))  # Σ(x−2.5)² = 5, n−1 = 3
    assert mean_std([7.0]) == (7.0, 0.0)
    with pytest.raises(ValueError, match="at least one"):
        mean_std([])
    with pytest.raises(ValueError, match="non-finite"):
        mean_std([1.0, float("nan")])


def test_format_mean_std():
    assert format_mean_std([1.0, 2.0, 3.0, 4.0], digits=2) == "2.50 ± 1.29"
    assert format_mean_std([52.25]) == "52.2"  # one seed: no spread shown
    assert format_mean_std([10.0, 10.0]) == "10.0 ± 0.0"


RUNS = [
    {"method": "none", "seed": 0, "metrics": {"mIoU": 50.0, "bIoU": 30.0}},
    {"method": "none", "seed": 1, "metrics": {"mIoU": 52.0, "bIoU": 34.0}},
    {"method": "sard", "seed": 0, "metrics": {"mIoU": 55.0, "bIoU": 40.0}},
    {"method": "sard", "seed": 1, "metrics": {"mIoU": 57.0, "bIoU": 42.0}},
]


def test_summarise_runs_groups_by_method_in_order():
    summary = summarise_runs(RUNS)
    assert list(summary) == ["none", "sard"]
    assert summary["none"]["mIoU"]["mean"] == 51.0
    assert summary["none"]["bIoU"]["std"] == pytest.approx(math.sqrt(8.0))
    assert summary["sard"]["bIoU"]["values"] == [40.0, 42.0]
    assert summary["sard"]["mIoU"]["seeds"] == [0, 1]
    with pytest.raises(KeyError, match="no metric 'mIoU_small'"):
        summarise_runs(RUNS, metrics=("mIoU_small",))


def test_comparison_rows_hand_checked():
    summary = summarise_runs(RUNS)
    rows = comparison_rows(summary, baselines=["none"])
    # paired sard − none: mIoU 5, 5 -> +5.0 ± 0.0; bIoU 10, 8 -> +9.0 ± 1.4; won 2 of 2
    assert rows == [
        ["none", "2", "51.0 ± 1.4", "32.0 ± 2.8", "—", "—"],
        ["sard", "2", "56.0 ± 1.4", "41.0 ± 1.4", "+5.0 ± 0.0 (2/2)", "+9.0 ± 1.4 (2/2)"],
    ]
    # A seed the baseline lacks is left out of the pairing; no shared seed: difference of means
    extra = [
        {"method": "kd", "seed": 1, "metrics": {"mIoU": 51.0, "bIoU": 35.0}},
        {"method": "kd", "seed": 7, "metrics": {"mIoU": 99.0, "bIoU": 99.0}},
        {"method": "mgd", "seed": 9, "metrics": {"mIoU": 60.0, "bIoU": 30.0}},
    ]
    rows = comparison_rows(summarise_runs(RUNS + extra), baselines=["none"])
    assert rows[2][4:] == ["-1.0", "+1.0"]  # kd seed 1 vs none seed 1 only
    assert rows[3][4:] == ["+9.0", "-2.0"]  # 60 − 51, 30 − 32
    assert comparison_headers(baselines=["none"]) == [
        "method",
        "seeds",
        "mIoU",
        "bIoU",
        "ΔmIoU vs none",
        "ΔbIoU vs none",
    ]
    with pytest.raises(KeyError, match="cwd"):
        comparison_rows(summary, baselines=["cwd"])


def test_markdown_table_exact_text_and_errors():
    text = markdown_table(["a", "b"], [["x", 1.5], ["y", "z"]])
    assert text == "| a | b |\n| :--- | ---: |\n| x | 1.50 |\n| y | z |\n"
    with pytest.raises(ValueError, match="row 0 has 1 cells"):
        markdown_table(["a", "b"], [["x"]])
    with pytest.raises(ValueError, match="align"):
        markdown_table(["a", "b"], [], align="lx")


def test_smooth_and_split_loss_terms():
    np.testing.assert_allclose(smooth([1, 2, 3, 4], 2), [1.0, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(smooth([1, 2, 3], 1), [1, 2, 3])
    logs = {
        "scratch": [{"loss_mask_dice": 1.0, "total_loss": 1.0}],
        "sard": [{"loss_mask_dice": 0.5, "loss_fc": 0.2, "total_loss": 0.7}],
    }
    assert split_loss_terms(logs) == ({"loss_mask_dice"}, {"loss_fc"})


def test_per_mask_iou_hand_checked():
    gt = np.zeros((3, 4, 4), bool)
    pred = np.zeros((3, 4, 4), bool)
    gt[0, :2, :2] = True  # 4 px
    pred[0, :2, :1] = True  # 2 px inside: IoU 2/4
    gt[1, 0, 0] = True  # missed entirely: IoU 0
    # mask 2 empty in both: counts as a perfect answer
    np.testing.assert_allclose(per_mask_iou(pred, gt), [0.5, 0.0, 1.0])
    with pytest.raises(ValueError, match="same shape"):
        per_mask_iou(pred[:2], gt)


def _is_small_png(path) -> bool:
    data = path.read_bytes()
    return data.startswith(PNG_MAGIC) and len(data) < 500_000


def test_figures_are_written_as_small_pngs(tmp_path):
    summary = summarise_runs(RUNS)
    bars = plot_method_bars(summary, tmp_path / "bars.png", reference={"mIoU": 60.0})
    logs = {
        "scratch": [
            {"iteration": i, "loss_mask_dice": 1.0 / (i + 1), "total_loss": 1.0} for i in range(5)
        ],
        "sard": [
            {"iteration": i, "loss_mask_dice": 0.5, "loss_fc": 0.1, "total_loss": 0.6}
            for i in range(5)
        ],
    }
    curves = plot_training_curves(logs, tmp_path / "curves.png")
    image = np.full((16, 16, 3), 128, np.uint8)
    gt = np.zeros((2, 16, 16), bool)
    gt[0, 2:6, 2:6] = gt[1, 8:12, 8:12] = True
    preds = render_predictions(image, gt, {"model": gt.copy()}, tmp_path / "pred.png")
    for path in (bars, curves, preds):
        assert _is_small_png(path), path
    with pytest.raises(ValueError, match="at least one method"):
        plot_method_bars({}, tmp_path / "x.png")


def test_count_gflops_and_params_of_a_linear_layer():
    layer = torch.nn.Linear(10, 20)
    assert count_params(layer) == pytest.approx(220 / 1e6)
    x = torch.randn(3, 10)
    # 2 FLOPs per multiply-add: 2 * 10 * 20 per row, reported per image (batch 3).
    assert count_gflops(lambda: layer(x), batch=3) == pytest.approx(400 / 1e9)
    with pytest.raises(ValueError, match="batch"):
        count_gflops(lambda: layer(x), batch=0)


def _spec(method: str, **kw) -> RunSpec:
    return RunSpec(
        method,
        1,
        Member("efficient_sam", "tiny"),
        Schedule(8),
        64,
        "tr",
        "te",
        teacher=Member("sam", "tiny", (("depth", 4), ("global_attn_indexes", [1, 3]))),
        teacher_weights="t.pth",
        **kw,
    )


def _pairs(opts):
    return dict(zip(opts[0::2], opts[1::2]))


def test_run_spec_overrides_for_methods_and_ablations():
    sard_e = _pairs(_spec("sard_E").opts())
    assert sard_e["MODEL.SARD.METHOD"] == "sard"
    assert (sard_e["MODEL.SARD.BETA_E"], sard_e["MODEL.SARD.BETA_C"]) == ("2.0", "0.0")
    assert sard_e["MODEL.TEACHER.ARCH.GLOBAL_ATTN_INDEXES"] == "[1, 3]"
    assert sard_e["MODEL.TEACHER.WEIGHTS"] == "t.pth"
    assert sard_e["SEED"] == "1" and sard_e["SOLVER.MAX_ITER"] == "8"
    scratch = _pairs(_spec("none").opts())
    assert scratch["MODEL.SARD.METHOD"] == "none" and "MODEL.TEACHER.WEIGHTS" not in scratch
    with pytest.raises(ValueError, match="unknown method 'dino'"):
        _spec("dino").opts()


def test_run_spec_overrides_load_into_a_config():
    from sard.config import load_config
    from studies.study import TINY_SAM_CONFIG

    cfg = load_config(TINY_SAM_CONFIG, _spec("sard_D").opts())
    assert cfg.MODEL.SARD.METHOD == "sard" and cfg.MODEL.SARD.BETA_E == 0.0
    assert cfg.MODEL.SARD.BETA_D == 1.0
    assert cfg.MODEL.TEACHER.ARCH["GLOBAL_ATTN_INDEXES"] == [1, 3]
    assert tuple(cfg.INPUT.IMAGE_SIZE) == (64, 64)


def test_a_run_folder_refuses_other_settings(tmp_path):
    opts = _spec("sard").opts()
    check_same_run(str(tmp_path), opts)  # nothing there yet
    from studies.study import _identity

    _write_json(str(tmp_path / "run.json"), {"opts": _identity(opts)})
    check_same_run(str(tmp_path), opts + ["OUTPUT_DIR", "elsewhere"])  # location is free
    moved = _spec("sard")
    moved.teacher_weights = "moved/t.pth"  # a moved output folder moves the teacher too
    check_same_run(str(tmp_path), moved.opts())
    with pytest.raises(ValueError, match="other settings"):
        check_same_run(str(tmp_path), _spec("cwd").opts())
    assert json.loads((tmp_path / "run.json").read_text())["opts"][0] == [
        "MODEL.SARD.METHOD",
        "sard",
    ]


def test_weight_statistics_uniform_and_boundary_favouring():
    from sard.reporting.weight_stats import boundary_pixels, cells_touched, weight_statistics

    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, 0:4, 0:4] = True  # top-left quadrant
    masks[1, 5:8, 5:8] = True  # bottom-right corner
    edge = boundary_pixels(masks)
    assert edge[0, 0] and edge[3, 3] and edge[0, 3] and edge[7, 7]
    assert not edge[1, 1] and not edge[6, 6]  # interiors
    assert int(edge.sum()) == 12 + 8  # a 4x4 square has 12 rim pixels, a 3x3 one 8
    cells = cells_touched(edge, (4, 4))  # 2x2 pixel cells
    assert cells.tolist()[0] == [True, True, False, False] and cells[3, 3] and not cells[3, 0]
    uniform = torch.full((4, 4), 1 / 16)
    stats = weight_statistics(uniform, masks)
    assert stats["ess_ratio"] == pytest.approx(1.0)
    assert stats["nw_p05"] == pytest.approx(1.0) and stats["nw_p95"] == pytest.approx(1.0)
    assert stats["boundary_lift"] == pytest.approx(1.0)
    fraction = float(cells.float().mean())
    on_edges = cells.double() / cells.sum()
    stats = weight_statistics(on_edges, masks)
    assert stats["boundary_cells"] == pytest.approx(fraction)
    assert stats["boundary_share"] == pytest.approx(1.0)
    assert stats["boundary_lift"] == pytest.approx(1 / fraction)
    assert stats["ess_ratio"] == pytest.approx(fraction)
    # quadrant: 4 cells, corner: cells (2..3, 2..3) -> 4 cells; 8 touched of 16, 1 each
    assert stats["instances_per_cell"] == pytest.approx(8 / 16)
    with pytest.raises(ValueError):
        weight_statistics(uniform[None], masks)

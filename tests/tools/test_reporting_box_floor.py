"""The prompt-box floor in study tables: read from runs, a row of its own, models below marked."""

import pytest

from sard.reporting import tables
from sard.reporting.plots import plot_method_bars

FLOOR = {"box_mIoU": 64.2, "box_bIoU": 49.0}
RUNS = [
    {"method": "none", "seed": 0, "metrics": {"mIoU": 50.0, "bIoU": 30.0, **FLOOR}},
    {"method": "none", "seed": 1, "metrics": {"mIoU": 52.0, "bIoU": 52.0, **FLOOR}},
    {"method": "sard", "seed": 0, "metrics": {"mIoU": 75.0, "bIoU": 60.0, **FLOOR}},
    {"method": "sard", "seed": 1, "metrics": {"mIoU": 77.0, "bIoU": 62.0, **FLOOR}},
]


def test_box_floor_is_read_from_the_runs_and_must_agree():
    assert tables.box_floor(RUNS) == {"mIoU": 64.2, "bIoU": 49.0}
    assert tables.box_floor(RUNS, ("mIoU",)) == {"mIoU": 64.2}
    old = [{"method": "none", "seed": 0, "metrics": {"mIoU": 1.0, "bIoU": 1.0}}]
    assert tables.box_floor(RUNS + old) is None  # a run evaluated before the floor existed
    other = [{"method": "x", "seed": 0, "metrics": {"mIoU": 1, "bIoU": 1, "box_mIoU": 70.0,
                                                    "box_bIoU": 49.0}}]  # fmt: skip
    with pytest.raises(ValueError, match="different test instances"):
        tables.box_floor(RUNS + other)


def test_models_below_the_floor_are_marked_and_named():
    summary = tables.summarise_runs(RUNS)
    floor = tables.box_floor(RUNS)
    rows = tables.comparison_rows(summary, baselines=["none"], floor=floor)
    # none: mIoU 51 < 64.2 (marked); bIoU 41 < 49 (marked). sard: above both.
    assert rows[0][:4] == ["none", "2", "51.0 ± 1.4 ↓", "41.0 ± 15.6 ↓"]
    assert rows[1][2:4] == ["76.0 ± 1.4", "61.0 ± 1.4"]
    assert rows[-1] == [tables.BOX_FLOOR_LABEL, "—", "64.2", "49.0", "—", "—"]
    table = tables.markdown_table(tables.comparison_headers(baselines=["none"]), rows)
    assert tables.BOX_FLOOR_LABEL in table
    below = tables.below_floor(summary, floor, ("mIoU", "bIoU"))
    assert below == {"none": ["mIoU", "bIoU"]}
    note = tables.floor_note(below, floor)
    assert "none (mIoU, bIoU)" in note and "64.2" in note and "nothing beyond" in note
    assert "Every model is above it" in tables.floor_note({}, floor)
    assert tables.floor_note({}, None) == ""
    assert tables.comparison_rows(summary)[-1][0] == "sard"  # no floor, no floor row


def test_bars_draw_the_floor(tmp_path):
    path = plot_method_bars(
        tables.summarise_runs(RUNS), tmp_path / "b.png", floor=tables.box_floor(RUNS)
    )
    assert path.read_bytes().startswith(b"\x89PNG")

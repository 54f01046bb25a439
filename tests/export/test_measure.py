"""sard.measure: regionprops sizes per object (px and mm), percentiles by number and by area,
the Kolmogorov-Smirnov distance and the cumulative plot."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image
from scipy.stats import ks_2samp
from skimage.measure import regionprops

from sard.data.masks import encode_mask
from sard.measure import (
    cumulative_curve,
    distribution_summary,
    ks_distance,
    object_sizes,
    plot_cumulative,
    weighted_percentiles,
)

H, W = 60, 80


@pytest.fixture(scope="module")
def masks():
    yy, xx = np.mgrid[:H, :W]
    disc = (yy - 30) ** 2 + (xx - 40) ** 2 <= 10**2
    rect = np.zeros((H, W), bool)
    rect[0:7, 50:71] = True  # 21 x 7, on the top border
    tilted = (np.abs((xx - 15) - (yy - 40)) <= 2) & (np.abs((xx - 15) + (yy - 40)) <= 12)
    return [disc, rect, tilted]


def test_sizes_are_regionprops_on_the_whole_image(masks):
    table = object_sizes(masks, (H, W))
    assert table.unit == "px" and len(table) == 3
    for i, mask in enumerate(masks):
        (p,) = regionprops(mask.astype(np.uint8))
        assert table.columns["area"][i] == p.area
        assert table.columns["equivalent_diameter"][i] == pytest.approx(p.equivalent_diameter_area)
        assert table.columns["major_axis"][i] == pytest.approx(p.axis_major_length)
        assert table.columns["minor_axis"][i] == pytest.approx(p.axis_minor_length)
        assert table.columns["feret_diameter_max"][i] == pytest.approx(p.feret_diameter_max)
        assert table.columns["orientation_deg"][i] == pytest.approx(np.degrees(p.orientation))
        assert table.columns["centroid_y_px"][i] == pytest.approx(p.centroid[0])
        assert table.columns["centroid_x_px"][i] == pytest.approx(p.centroid[1])
    d = table.columns["equivalent_diameter"][0]
    assert d == pytest.approx(np.sqrt(4 * masks[0].sum() / np.pi))
    assert table.columns["touches_border"].tolist() == [False, True, False]
    # The 45-degree bar: its major axis runs along a diagonal.
    assert abs(abs(table.columns["orientation_deg"][2]) - 45) < 1


def test_mm_scaling_and_inputs(masks):
    s = 0.39
    px = object_sizes(masks, (H, W))
    mm = object_sizes([encode_mask(m) for m in masks], (H, W), mm_per_px=s, ids=[7, 8, 9])
    assert mm.unit == "mm" and mm.columns["id"].tolist() == [7, 8, 9]
    assert np.allclose(mm.columns["area"], px.columns["area"] * s * s)
    for name in ("equivalent_diameter", "major_axis", "minor_axis", "feret_diameter_max"):
        assert np.allclose(mm.columns[name], px.columns[name] * s), name
    # Orientation does not depend on the scale (modulo 180: -90 and 90 are one axis; the
    # disc has none).
    turn = (mm.columns["orientation_deg"] - px.columns["orientation_deg"])[1:] % 180
    assert np.allclose(np.minimum(turn, 180 - turn), 0, atol=1e-6)
    assert np.allclose(mm.columns["centroid_x_px"], px.columns["centroid_x_px"])
    polygon = [[50.0, 0.0, 71.0, 0.0, 71.0, 7.0, 50.0, 7.0]]
    assert object_sizes([polygon], (H, W)).columns["area"][0] == 21 * 7
    empty = object_sizes([np.zeros((H, W), bool), masks[0]], (H, W))
    assert empty.columns["id"].tolist() == [2]
    with pytest.raises(ValueError, match="mm_per_px must be a positive"):
        object_sizes(masks, (H, W), mm_per_px=0)
    with pytest.raises(ValueError, match="shape"):
        object_sizes([np.zeros((5, 5), bool)], (H, W))


def test_csv_has_units_in_the_header(masks, tmp_path):
    table = object_sizes(masks, (H, W), mm_per_px=0.5)
    path = tmp_path / "objects.csv"
    table.to_csv(str(path))
    with open(path) as f:
        rows = list(csv.reader(f))
    assert rows[0] == [
        "id",
        "area_mm2",
        "equivalent_diameter_mm",
        "minor_axis_mm",
        "major_axis_mm",
        "feret_diameter_max_mm",
        "orientation_deg",
        "centroid_x_px",
        "centroid_y_px",
        "touches_border",
    ]
    assert len(rows) == 4 and rows[2][-1] == "1"
    assert float(rows[1][1]) == pytest.approx(masks[0].sum() * 0.25, rel=1e-5)


def test_percentiles_by_number_are_hazens_and_by_area_weighted():
    rng = np.random.default_rng(0)
    x = rng.lognormal(1.0, 0.6, 301)
    assert np.allclose(
        weighted_percentiles(x, None, [10, 50, 80, 90]),
        np.percentile(x, [10, 50, 80, 90], method="hazen"),
    )
    # Two sizes, 1 (weight 1) and 3 (weight 3): midpoints at 12.5 % and 62.5 %.
    assert weighted_percentiles([1.0, 3.0], [1.0, 3.0], [50])[0] == pytest.approx(2.5)
    assert weighted_percentiles([1.0, 3.0], [1.0, 3.0], [5, 99]).tolist() == [1.0, 3.0]
    by_area = distribution_summary(x, x**2, basis="area")
    by_number = distribution_summary(x, x**2, basis="number")
    assert by_area["basis"] == "area" and by_area["count"] == 301
    assert by_area["d50"] > by_number["d50"]  # big objects weigh more
    assert distribution_summary([], basis="number") == {
        "count": 0,
        "basis": "number",
        "d10": None,
        "d50": None,
        "d80": None,
        "d90": None,
    }
    with pytest.raises(ValueError, match="basis must be one of"):
        distribution_summary(x, basis="mass")
    with pytest.raises(ValueError, match="needs the objects' areas"):
        distribution_summary(x, basis="area")


def test_cumulative_curve_and_ks_distance():
    x, f = cumulative_curve([3.0, 1.0, 2.0, 2.0])
    assert x.tolist() == [1.0, 2.0, 3.0] and f.tolist() == [0.25, 0.75, 1.0]
    rng = np.random.default_rng(1)
    a, b = rng.normal(10, 2, 200), rng.normal(11, 2, 150)
    assert ks_distance(a, b) == pytest.approx(ks_2samp(a, b).statistic)
    assert ks_distance(a, a, a, 2 * a) == pytest.approx(0.0)
    assert ks_distance([1.0, 2.0], [5.0, 6.0]) == 1.0
    assert ks_distance(a, a, None, a**2) > 0.05


def test_plot_writes_a_png(tmp_path):
    rng = np.random.default_rng(2)
    path = tmp_path / "psd.png"
    plot_cumulative(
        {
            "truth": (rng.lognormal(2, 0.5, 100), None),
            "model": (rng.lognormal(2.2, 0.5, 80), None),
            "none": ([], None),
        },
        str(path),
        xlabel="equivalent diameter (mm)",
    )
    image = np.asarray(Image.open(path))
    assert image.shape[0] > 300 and image.shape[1] > 500


def test_matched_objects_counts_ground_truth_found_at_iou_half(masks):
    from sard.measure.matching import matched_objects

    disc, rect, tilted = masks
    shifted = np.roll(disc, 3, axis=1)  # IoU with the disc well above 0.5
    half = rect.copy()
    half[:, 61:] = False  # 11 of 21 columns: IoU 0.52 -> found
    third = rect.copy()
    third[:, 57:] = False  # 7 of 21: IoU 0.33 -> not found
    assert matched_objects([disc, rect, tilted], [shifted, half], (H, W)) == (2, 3)
    assert matched_objects([disc, rect, tilted], [third], (H, W)) == (0, 3)
    assert matched_objects([encode_mask(disc)], [encode_mask(disc)], (H, W)) == (1, 1)
    assert matched_objects([disc], [], (H, W)) == (0, 1)
    assert matched_objects([], [disc], (H, W)) == (0, 0)

"""Metrics: hand-computed values (anisotropic spacing), empty-case rules, properties, aggregation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ctseg_lib.metrics import (
    aggregate,
    dice,
    evaluate_case,
    format_aggregate,
    format_table,
    hd95,
    iou,
    nsd,
    precision,
    recall,
    volume_difference,
)
from ctseg_lib.surface import surface, surface_distances

SP = (1.0, 1.0, 2.5)


def _vox(shape, *idx):
    m = np.zeros(shape, bool)
    for i in idx:
        m[i] = True
    return m


def test_single_voxels_three_apart_along_z():
    a, b = _vox((5, 5, 8), (2, 2, 1)), _vox((5, 5, 8), (2, 2, 4))
    assert hd95(a, b, SP) == pytest.approx(7.5)
    assert nsd(a, b, SP, tolerance_mm=7.5) == 1.0
    assert nsd(a, b, SP, tolerance_mm=7.4) == 0.0
    assert dice(a, b) == 0.0


def test_diagonal_anisotropic_distance():
    a, b = _vox((6, 6, 6), (0, 0, 0)), _vox((6, 6, 6), (3, 4, 2))
    assert hd95(a, b, (0.5, 0.75, 2.0)) == pytest.approx(math.sqrt(1.5**2 + 3.0**2 + 4.0**2))


def test_overlap_metrics_hand_computed():
    gt = np.zeros((4, 4, 2), bool)
    gt[:2, :2, 0] = True               # 4 voxels
    pred = np.zeros_like(gt)
    pred[:2, :3, 0] = True             # 6 voxels, TP 4, FP 2
    assert dice(pred, gt) == pytest.approx(8 / 10)
    assert iou(pred, gt) == pytest.approx(4 / 6)
    assert precision(pred, gt) == pytest.approx(4 / 6)
    assert recall(pred, gt) == 1.0
    rel, ml = volume_difference(pred, gt, (2.0, 2.0, 5.0))  # 20 mm³ per voxel
    assert rel == pytest.approx(0.5) and ml == pytest.approx(2 * 20 / 1000)


def test_hd95_and_nsd_on_shifted_plate():
    # gt: 4×4×1 plate; pred: same plate plus a column one voxel further along x.
    gt = np.zeros((8, 8, 3), bool)
    gt[2:6, 2:6, 1] = True
    pred = gt.copy()
    pred[6, 2:6, 1] = True
    # Every gt voxel is surface (plate 1 thick).  pred surface = all 20 voxels; d(pred→gt): the
    # new column is 1 mm away, the rest 0.  d(gt→pred) all 0.
    d_pg, d_gp = surface_distances(pred, gt, (1.0, 1.0, 3.0))
    assert sorted(d_pg.tolist()) == [0.0] * 16 + [1.0] * 4
    assert np.all(d_gp == 0)
    assert hd95(pred, gt, (1.0, 1.0, 3.0)) == pytest.approx(1.0)  # 95th pct of 16 zeros + 4 ones
    assert nsd(pred, gt, (1.0, 1.0, 3.0), tolerance_mm=0.5) == pytest.approx(32 / 36)


def test_surface_is_face_connected_boundary():
    m = np.ones((3, 3, 3), bool)
    s = surface(np.pad(m, 1))
    assert s.sum() == 26 and not s[2, 2, 2]           # only the centre voxel is interior
    assert surface(np.ones((3, 3, 3), bool)).sum() == 26  # volume edge counts as outside


def test_kdtree_and_edt_agree():
    rng = np.random.default_rng(1)
    a, b = rng.random((12, 10, 6)) > 0.6, rng.random((12, 10, 6)) > 0.7
    for x, y in zip(surface_distances(a, b, SP, "kdtree"), surface_distances(a, b, SP, "edt")):
        np.testing.assert_allclose(x, y, atol=1e-9)
    with pytest.raises(ValueError):
        surface_distances(a, b, SP, "brute")


def test_empty_case_rules():
    z = np.zeros((4, 4, 4), bool)
    one = _vox((4, 4, 4), (1, 1, 1))
    # both empty
    assert (dice(z, z), iou(z, z), nsd(z, z, SP), hd95(z, z, SP)) == (1.0, 1.0, 1.0, 0.0)
    assert math.isnan(precision(z, z)) and math.isnan(recall(z, z))
    assert math.isnan(volume_difference(z, z, SP)[0]) and volume_difference(z, z, SP)[1] == 0
    # only gt empty (false positive)
    assert (dice(one, z), iou(one, z), nsd(one, z, SP), precision(one, z)) == (0.0, 0.0, 0.0, 0.0)
    assert math.isnan(hd95(one, z, SP)) and math.isnan(recall(one, z))
    # only prediction empty (missed)
    assert (dice(z, one), nsd(z, one, SP), recall(z, one)) == (0.0, 0.0, 0.0)
    assert math.isnan(hd95(z, one, SP)) and math.isnan(precision(z, one))
    assert volume_difference(z, one, SP)[0] == -1.0
    with pytest.raises(ValueError):
        surface_distances(z, one, SP)


masks = arrays(np.bool_, (6, 5, 4))


@settings(max_examples=40, deadline=None)
@given(masks, masks)
def test_properties(a, b):
    assert dice(a, b) == dice(b, a)
    assert 0.0 <= dice(a, b) <= 1.0
    assert iou(a, b) == pytest.approx(dice(a, b) / (2 - dice(a, b)))
    s = nsd(a, b, SP, 2.0)
    assert 0.0 <= s <= 1.0 and s == pytest.approx(nsd(b, a, SP, 2.0))
    h = hd95(a, b, SP)
    assert math.isnan(h) or h >= 0
    if a.any():
        assert dice(a, a) == 1.0 and hd95(a, a, SP) == 0.0 and nsd(a, a, SP) == 1.0


@settings(max_examples=20, deadline=None)
@given(masks, st.floats(0.3, 4.0))
def test_nsd_monotone_in_tolerance(a, tol):
    b = np.roll(a, 1, axis=2)
    assert nsd(a, b, SP, tol) <= nsd(a, b, SP, tol + 1.0)


def _case(shape=(10, 10, 6)):
    gt = np.zeros(shape, np.uint8)
    gt[2:8, 2:8, 1:5] = 1
    gt[4:6, 4:6, 2:4] = 2
    return gt


def test_evaluate_case_rows_and_regions():
    gt = _case()
    pred = gt.copy()
    pred[pred == 2] = 1                                # tumour missed, labelled liver
    rows = evaluate_case(pred, gt, SP, {0: "background", 1: "liver", 2: "tumour"}, 2.0, "c1",
                         regions={"liver+tumour": (1, 2)})
    by = {r["label"]: r for r in rows}
    assert set(by) == {1, 2, "1+2"}
    assert by[2]["dice"] == 0.0 and math.isnan(by[2]["hd95"]) and by[2]["gt_voxels"] == 8
    assert by["1+2"]["dice"] == 1.0 and by["1+2"]["hd95"] == 0.0 and by["1+2"]["label_name"] == "liver+tumour"
    assert by[1]["dice"] == pytest.approx(2 * 136 / (136 + 144))
    assert by[1]["vol_diff_ml"] == pytest.approx(8 * 2.5 / 1000)
    assert {"case", "label", "label_name", "dice", "iou", "precision", "recall", "vol_diff_ml", "hd95", "nsd",
            "gt_voxels", "pred_voxels"} <= set(rows[0])
    with pytest.raises(ValueError, match="c1"):
        evaluate_case(pred[:5], gt, SP, {1: "liver"}, case_id="c1")


def test_aggregate_case_mean_vs_global_and_nan_handling():
    big, small = np.zeros((20, 20, 4), np.uint8), np.zeros((20, 20, 4), np.uint8)
    big[:10, :10] = 1                                  # 400 voxels
    small[:2, :2, :1] = 1                              # 4 voxels
    rows = evaluate_case(big, big, SP, {1: "t"}, case_id="big")          # Dice 1
    rows += evaluate_case(np.zeros_like(small), small, SP, {1: "t"}, case_id="small")  # Dice 0, HD95 NaN
    agg = aggregate(rows)["1"]
    assert agg["n_cases"] == 2 and agg["dice_mean"] == pytest.approx(0.5)
    assert agg["dice_global"] == pytest.approx(800 / 804)   # the big case dominates
    assert agg["hd95_mean"] == 0.0 and agg["hd95_n"] == 1
    assert agg["recall_mean"] == pytest.approx(0.5) and agg["precision_mean"] == 1.0  # NaN skipped
    txt = format_aggregate(aggregate(rows))
    assert "dice_global" in txt and "0.9950" in txt
    table = format_table(rows, ["case", "dice", "hd95"])
    assert table.splitlines()[0].split() == ["case", "dice", "hd95"] and "nan" in table
    assert format_table([]) == "(no rows)"

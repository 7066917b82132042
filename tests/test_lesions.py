"""ctseg_lib.lesions: lesion grouping, matching, metrics, small-component removal, bootstrap CI.

Every expectation is counted by hand on tiny masks drawn below.
"""

import math

import numpy as np
import pytest

from ctseg_lib.errors import CTSegError
from ctseg_lib.lesions import bootstrap_ci, label_lesions, lesion_metrics, match_lesions, remove_small_components


def vol(shape=(12, 12, 6)):
    return np.zeros(shape, dtype=bool)


def test_label_lesions_connectivity_and_grouping():
    m = vol()
    m[0:2, 0:2, 0:2] = True        # lesion A, 8 voxels
    m[4:6, 0:2, 0:2] = True        # lesion B, 8 voxels, a 2-voxel gap (x = 2, 3) from A
    m[2, 2, 2] = True              # C touches A only through a corner (diagonal in x, y and z)
    _, n6 = label_lesions(m, connectivity=1)
    _, n26 = label_lesions(m, connectivity=3)
    assert (n6, n26) == (3, 2)     # 26-connectivity joins the corner voxel to A
    labels, n = label_lesions(m, connectivity=3, merge_distance=1)  # one dilation closes a 2-voxel gap
    assert n == 1 and set(np.unique(labels)) == {0, 1}
    assert (labels > 0).sum() == m.sum()  # grouping never adds voxels
    assert label_lesions(m, merge_distance=0)[1] == 2


def test_label_lesions_2d_and_bad_connectivity():
    m = np.zeros((5, 5), bool)
    m[0, 0] = m[1, 1] = True
    assert label_lesions(m, connectivity=1)[1] == 2
    assert label_lesions(m, connectivity=3)[1] == 1  # clipped to 2 in 2D: 8-connected
    with pytest.raises(CTSegError):
        label_lesions(m, connectivity=0)
    with pytest.raises(CTSegError):
        label_lesions(m, merge_distance=-1)


def test_match_lesions_hand_counted():
    gt, pred = vol(), vol()
    gt[0:3, 0:3, 0:3] = True       # L1: 27 voxels
    gt[8:10, 8:10, 0:2] = True     # L2: 8 voxels, missed
    pred[0:3, 0:3, 0:1] = True     # 9 voxels inside L1
    pred[6:8, 0:2, 4:5] = True     # 4 voxels far from every lesion: a false positive
    m = match_lesions(pred, gt, spacing=(1.0, 1.0, 2.0))
    assert (m.n_lesions, m.n_detected, m.n_false_positive) == (2, 1, 1)
    assert m.sensitivity == 0.5
    l1, l2 = m.reference
    assert l1["detected"] and l1["voxels"] == 27 and l1["volume_mm3"] == 54.0
    assert l1["dice"] == pytest.approx(2 * 9 / (27 + 9))  # the false positive does not lower it
    assert not l2["detected"] and math.isnan(l2["dice"])
    assert [p["false_positive"] for p in m.predicted] == [False, True]


def test_one_component_over_two_lesions_detects_both():
    gt, pred = vol(), vol()
    gt[0:2, 0:2, 0] = True
    gt[4:6, 0:2, 0] = True
    pred[0:6, 0:2, 0] = True       # one bar across both lesions and the gap
    m = match_lesions(pred, gt)
    assert (m.n_lesions, m.n_detected, m.n_false_positive) == (2, 2, 0)
    assert m.reference[0]["dice"] == pytest.approx(2 * 4 / (12 + 4))


def test_tumour_free_scan_rule_and_pooling():
    gt, pred = vol(), vol()
    gt[0:3, 0:3, 0:3] = True
    pred[0:3, 0:3, 0:1] = True
    pred[6:8, 0:2, 4:5] = True
    with_lesion = match_lesions(pred, gt)            # 1 lesion, detected, 1 FP
    free_pred = vol()
    free_pred[0, 0, 0] = free_pred[5, 5, 5] = True
    tumour_free = match_lesions(free_pred, vol())    # no lesion, 2 FP
    assert math.isnan(tumour_free.sensitivity) and tumour_free.n_false_positive == 2
    s = lesion_metrics([with_lesion, tumour_free])
    assert (s["scans"], s["tumour_free_scans"], s["lesions"], s["detected"]) == (2, 1, 1, 1)
    assert s["sensitivity"] == 1.0                   # the tumour-free scan adds no lesion ...
    assert s["fp_per_scan"] == 1.5                   # ... but its false positives count
    assert s["detected_dice"] == pytest.approx(2 * 9 / 36)
    empty = lesion_metrics(match_lesions(vol(), vol()))
    assert math.isnan(empty["sensitivity"]) and empty["false_positives"] == 0 and math.isnan(empty["detected_dice"])


def test_match_lesions_shape_mismatch():
    with pytest.raises(CTSegError):
        match_lesions(vol((4, 4, 4)), vol((4, 4, 5)))


def test_remove_small_components():
    m = vol()
    m[0, 0, 0] = True              # 1 voxel
    m[5:7, 5:7, 0] = True          # 4 voxels
    m[10, 10, 0:3] = True          # 3 voxels
    out = remove_small_components(m, min_voxels=3)
    assert out.dtype == bool and out.sum() == 7 and not out[0, 0, 0]
    assert remove_small_components(m, min_voxels=5).sum() == 0
    assert remove_small_components(vol(), 3).sum() == 0


def test_bootstrap_ci():
    assert bootstrap_ci([0.7, 0.7, 0.7]) == pytest.approx((0.7, 0.7))
    # two cases 0 and 1: resampled means are 0, 0.5, 1 with probability 1/4, 1/2, 1/4,
    # so the 2.5 % and 97.5 % quantiles are 0 and 1
    assert bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)
    vals = np.random.default_rng(1).normal(0.8, 0.05, 40)
    lo, hi = bootstrap_ci(vals)
    assert lo < vals.mean() < hi and hi - lo < 0.05  # ≈ 2 × 1.96 × 0.05 / √40 ≈ 0.031
    assert bootstrap_ci(vals, seed=3) == bootstrap_ci(vals, seed=3)
    assert bootstrap_ci([0.5, math.nan, 0.5]) == pytest.approx((0.5, 0.5))  # NaN (e.g. tumour-free) left out
    with pytest.raises(CTSegError):
        bootstrap_ci([math.nan])

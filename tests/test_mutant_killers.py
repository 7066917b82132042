"""Tests that fail on plausible bugs the rest of the suite let through (issue 19, ``make mutate``).

Each test names, in its docstring, the planted bug it kills (the mutant id of ``tools/mutate.py``),
and was checked to fail with that bug planted in a copy of the repository and pass on this code.
The inputs are chosen so the wrong variant gives a *different* number: a block-aligned target, a
3×3×3 cube or an axis-aligned affine cannot tell the variants apart, which is how the bugs hid.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ctseg_lib.data.nifti import load_nifti, save_nifti
from ctseg_lib.errors import CTSegError
from ctseg_lib.losses import CrossEntropyLoss, DeepSupervisionLoss, one_hot
from ctseg_lib.metrics import hd95, nsd
from ctseg_lib.surface import surface, surface_distances


# -- HD95: max of the two directed 95th percentiles, not the percentile of the pooled distances ----------
def _line_with_whisker():
    """gt: a 1-voxel line of 100 voxels along x; pred: the same line plus a 10-voxel whisker along y.

    Every voxel of these thin masks is a surface voxel.  d(pred→gt) = 100 zeros and 1..10 voxels
    (the whisker); d(gt→pred) = 100 zeros.
    """
    gt = np.zeros((100, 12, 1), bool)
    gt[:, 0, 0] = True
    pred = gt.copy()
    pred[50, 1:11, 0] = True
    return pred, gt


def test_hd95_is_max_of_directed_percentiles_not_pooled():
    """Kills ``hd95-pooled`` (HD95 = 95th percentile of both directions' distances pooled, medpy-style),
    ``hd95-min``, ``hd95-one-direction`` and ``hd95-nearest-percentile``.

    Hand value: d(pred→gt) sorted = 100 zeros, 1, 2, ..., 10 (110 values); its 95th percentile with
    linear interpolation sits at position 0.95·109 = 103.55, between 4 and 5 → 4.55 voxels, × 0.5 mm
    (y spacing) = 2.275 mm.  d(gt→pred) is all 0.  Pooled (210 values, 200 zeros) the 95th percentile
    would be 0 — the whisker "disappears" because the other direction dilutes it.
    """
    pred, gt = _line_with_whisker()
    sp = (0.7, 0.5, 2.0)
    d_pg, d_gp = surface_distances(pred, gt, sp)
    assert sorted(d_pg.tolist()) == pytest.approx([0.0] * 100 + [0.5 * k for k in range(1, 11)])
    assert not d_gp.any()
    assert hd95(pred, gt, sp) == pytest.approx(2.275)
    assert hd95(gt, pred, sp) == pytest.approx(2.275)  # symmetric: the long direction may be either one
    pooled = float(np.percentile(np.concatenate([d_pg, d_gp]), 95))
    assert pooled == 0.0  # the wrong definition really gives another number on this input


def test_nsd_counts_both_directions_and_tolerance_is_inclusive():
    """Kills ``nsd-one-direction`` and ``nsd-strict-tolerance``.

    Same masks: 210 surface voxels, of which the whisker voxels at 0.5·k mm, k = 1..10.  At τ = 2 mm,
    k ≤ 4 are within (2.0 mm counts: "≤ τ"), 6 are not → NSD = 204/210.  One direction only would
    be 104/110.
    """
    pred, gt = _line_with_whisker()
    sp = (0.7, 0.5, 2.0)
    assert nsd(pred, gt, sp, tolerance_mm=2.0) == pytest.approx(204 / 210)
    assert nsd(gt, pred, sp, tolerance_mm=2.0) == pytest.approx(204 / 210)
    assert nsd(pred, gt, sp, tolerance_mm=1.99) == pytest.approx(203 / 210)


# -- surface: 6- (face) connectivity, not 26 ---------------------------------------------------------------
def _ball(radius: int, pad: int = 1) -> np.ndarray:
    n = 2 * (radius + pad) + 1
    c = np.arange(n) - (radius + pad)
    x, y, z = np.meshgrid(c, c, c, indexing="ij")
    return x * x + y * y + z * z <= radius * radius


def _face_surface_by_definition(mask: np.ndarray) -> np.ndarray:
    """A voxel is surface iff one of its 6 face neighbours is outside the mask or the volume (no erosion)."""
    p = np.pad(mask, 1, constant_values=False)
    inner = np.ones_like(mask)
    for ax in range(3):
        for step in (-1, 1):
            inner &= np.roll(p, step, axis=ax)[1:-1, 1:-1, 1:-1]
    return mask & ~inner


def test_surface_of_a_ball_is_face_connected():
    """Kills ``surface-26-connectivity`` (surface voxels = mask minus its 26-connected erosion).

    Ball of radius 2 (33 voxels, x²+y²+z² ≤ 4).  6-connected: the centre and its 6 face neighbours
    have all 6 face neighbours inside (e.g. (1,0,0) → (2,0,0), (1,±1,0), (1,0,±1), (0,0,0)), so the
    surface is 33 - 7 = 26 voxels.  26-connected: (1,0,0) has (2,1,0) outside, only the centre is
    interior → 32.  A cube (the old test) has the same surface under both.
    """
    ball = _ball(2)
    assert ball.sum() == 33
    s = surface(ball)
    assert s.sum() == 26
    assert not s[3, 3, 3] and not s[4, 3, 3]  # centre and a face neighbour are interior
    for r in (3, 5):
        b = _ball(r)
        np.testing.assert_array_equal(surface(b), _face_surface_by_definition(b))


def test_surface_touching_the_volume_edge():
    """Kills ``surface-edge-inside``: outside the volume counts as outside the mask (MONAI/MSD)."""
    m = np.zeros((4, 5, 5), bool)
    m[:, 1:4, 1:4] = True                    # a 4×3×3 bar through the whole x extent
    s = surface(m)
    assert s[0, 2, 2] and s[3, 2, 2]         # end faces on the volume edge are surface
    assert not s[1, 2, 2] and not s[2, 2, 2]  # the core inside is not
    assert s.sum() == m.sum() - 2


# -- NIfTI spacing: lengths of the affine's columns, not rows -----------------------------------------------
def _oblique_affine(deg: float = 20.0, spacing=(0.7, 0.9, 2.5)) -> np.ndarray:
    a = math.radians(deg)
    rot = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag(spacing)
    aff[:3, 3] = (-20.0, 10.0, 5.0)
    return aff


@pytest.mark.filterwarnings("ignore:.*oblique")  # the loader warns about oblique volumes (expected)
def test_spacing_of_an_oblique_affine_is_column_length(tmp_path):
    """Kills ``spacing-affine-rows`` (spacing from the affine's rows instead of its columns).

    In-plane rotation by 20° with spacing 0.7 / 0.9 mm: the columns have lengths 0.7, 0.9, 2.5; the
    rows have lengths √(0.7²cos²20° + 0.9²sin²20°) ≈ 0.726 and ≈ 0.879.  Axis-aligned affines (every
    other test) have equal row and column lengths.
    """
    aff = _oblique_affine()
    rows = np.sqrt((aff[:3, :3] ** 2).sum(axis=1))
    assert rows[:2] == pytest.approx((0.726, 0.879), abs=1e-3)  # what the bug reports
    arr = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4)
    save_nifti(tmp_path / "oblique.nii.gz", arr, aff)
    v = load_nifti(tmp_path / "oblique.nii.gz")
    assert v.spacing == pytest.approx((0.7, 0.9, 2.5), abs=1e-6)
    np.testing.assert_array_equal(v.array, arr.astype(np.float32))  # 20° is closest to RAS: no reorder


@pytest.mark.filterwarnings("ignore:.*oblique")
def test_header_check_uses_column_lengths(tmp_path):
    """Kills ``check-header-steps-rows``: a 45°-rotated affine whose first column is 0.0009 mm long
    (absurd) has rows of ≈ 0.71 mm each; only the column lengths reveal it."""
    aff = _oblique_affine(45.0, (0.0009, 1.0, 2.0))
    save_nifti(tmp_path / "thin.nii.gz", np.zeros((4, 4, 4), np.int16), aff)
    with pytest.raises(CTSegError, match="absurd voxel spacing in the affine"):
        load_nifti(tmp_path / "thin.nii.gz")


# -- deep supervision: targets downsampled by nearest neighbour, not by averaging --------------------------
def test_deep_supervision_targets_are_nearest_not_averaged():
    """Kills ``ds-targets-averaged`` (targets averaged over 2×2 blocks — ``F.interpolate(mode="area")`` or
    average pooling — then truncated or rounded to labels).

    The target is not block-aligned.  Nearest neighbour (``F.interpolate(mode="nearest")``, torch's
    ``floor(i · in/out)``) keeps the top-left voxel of each 2×2 block:
    ``[[0, 1, 1, 1], [1, 1, 1, 1], [0, 0, 1, 0], [0, 0, 0, 0]]`` → ``[[0, 1], [0, 1]]``.  Block means
    are ``[[.75, 1], [0, .25]]``: truncated ``[[0, 1], [0, 0]]``, rounded ``[[1, 1], [0, 0]]``; both
    differ from nearest.  A half-resolution output that is confidently right for the nearest target
    has (near) zero loss only if the loss downsamples by nearest.
    """
    t = torch.tensor([[[0, 1, 1, 1], [1, 1, 1, 1], [0, 0, 1, 0], [0, 0, 0, 0]]])
    near = torch.tensor([[[0, 1], [0, 1]]])
    assert torch.equal(t[:, ::2, ::2], near)
    full = one_hot(t, 2) * 40 - 20
    half = one_hot(near, 2) * 40 - 20
    ds = DeepSupervisionLoss(CrossEntropyLoss())
    assert ds([full, half], t).item() == pytest.approx(0.0, abs=1e-6)
    for wrong in (torch.tensor([[[0, 1], [0, 0]]]), torch.tensor([[[1, 1], [0, 0]]])):
        assert ds([full, one_hot(wrong, 2) * 40 - 20], t).item() > 1.0


def test_deep_supervision_3d_and_odd_sizes_match_index_subsampling():
    """Same check in 3D with random multi-class targets and an odd size (9 → 5 → 3): the downsampled
    target equals ``t[i0, i1, i2]`` with ``i = floor(j · n_in / n_out)`` (nearest), for every level."""
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 3, (2, 9, 9, 6), generator=g)
    outs, sizes = [], [(9, 9, 6), (5, 5, 3), (3, 3, 2)]
    for size in sizes:
        idx = [torch.floor(torch.arange(o) * (n / o)).long() for n, o in zip(t.shape[1:], size)]
        sub = t[:, idx[0]][:, :, idx[1]][:, :, :, idx[2]]
        outs.append(one_hot(sub, 3) * 40 - 20)
    assert DeepSupervisionLoss(CrossEntropyLoss())(outs, t).item() == pytest.approx(0.0, abs=1e-6)


# -- survivors of the first `make mutate` run (tools/mutate.py), one test each -------------------------------
def _two_class_logits(p1):
    """Logits ``(1, 2, V)`` whose softmax gives probability ``p1`` to class 1 (class-0 logit 0)."""
    p = torch.tensor(p1, dtype=torch.float64)
    return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))])[None]


def test_tversky_weights_fp_by_alpha_and_fn_by_beta():
    """Kills ``tversky-swapped``: the existing hand value had FP = FN, where α and β are interchangeable.

    Target ``[1, 1, 0, 0]``, p(class 1) = ``[.9, .2, .7, .6]`` → TP 1.1, FP 1.3, FN 0.9;
    α = 0.3, β = 0.7 → 1 - 1.1 / (1.1 + .39 + .63) = 1 - 1.1/2.12 (swapped: 1 - 1.1/2.28).
    """
    from ctseg_lib.losses import TverskyLoss

    logits, target = _two_class_logits([0.9, 0.2, 0.7, 0.6]), torch.tensor([[1, 1, 0, 0]])
    assert TverskyLoss(0.3, 0.7, smooth=0)(logits, target).item() == pytest.approx(1 - 1.1 / 2.12)


def test_cross_entropy_class_weights_are_used():
    """Kills ``ce-weight-ignored``: the existing weighted test had the same p_t in both classes, where
    any weights give the same mean.  Here ``Σ w_y (-log p_y) / Σ w_y`` with w = (1, 3)."""
    logits, target = _two_class_logits([0.9, 0.2, 0.3, 0.4]), torch.tensor([[1, 1, 0, 0]])
    expected = (3 * (-math.log(0.9) - math.log(0.2)) + (-math.log(0.7) - math.log(0.6))) / 8
    assert CrossEntropyLoss(weight=[1.0, 3.0])(logits, target).item() == pytest.approx(expected)
    assert CrossEntropyLoss()(logits, target).item() != pytest.approx(expected)


def test_evaluate_case_precision_and_recall_differ():
    """Kills ``row-precision-is-recall`` (precision computed as TP/(TP+FN) in the evaluation rows)."""
    from ctseg_lib.metrics import evaluate_case

    gt = np.zeros((6, 6, 2), np.uint8)
    gt[:2, :2, 0] = 1                       # 4 voxels
    pred = np.zeros_like(gt)
    pred[:2, :3, 0] = 1                     # 6 voxels: TP 4, FP 2, FN 0
    pred[5, 5, 1] = 1                       # 7: FP 3
    gt[0, 5, 1] = 1                         # 5: FN 1
    (row,) = evaluate_case(pred, gt, (1.0, 1.0, 1.0), {1: "x"})
    assert row["precision"] == pytest.approx(4 / 7) and row["recall"] == pytest.approx(4 / 5)


def test_target_shape_rounds_to_nearest():
    """Kills ``target-shape-floor``: 10 voxels of 1 mm at 1.5 mm are 6.67 → 7 voxels (floor: 6), 5 → 3.33 → 3."""
    from ctseg_lib.preprocessing import resample, target_shape

    assert target_shape((10, 10, 5), (1.0, 1.0, 1.0), (1.5, 1.5, 1.5)) == (7, 7, 3)
    assert resample(np.zeros((10, 10, 5), np.float32), (1.0, 1.0, 1.0), (1.5, 1.5, 1.5), False).shape == (7, 7, 3)


AFF = np.diag([0.8, 0.8, 2.5, 1.0])  # not the identity (the loader warns about identity affines)


def test_label_value_256_does_not_wrap_to_zero(tmp_path):
    """Kills ``label-uint8-overflow``: a label map whose maximum is 256 must load as int16 (uint8 wraps to 0)."""
    lab = np.zeros((4, 3, 2), np.int16)
    lab[1, 1, 1], lab[2, 2, 0] = 256, 255
    save_nifti(tmp_path / "lab.nii.gz", lab, AFF)
    v = load_nifti(tmp_path / "lab.nii.gz", kind="label")
    assert v.array.dtype == np.int16 and v.array[1, 1, 1] == 256 and v.array[2, 2, 0] == 255
    save_nifti(tmp_path / "small.nii.gz", np.minimum(lab, 255), AFF)
    assert load_nifti(tmp_path / "small.nii.gz", kind="label").array.dtype == np.uint8


def test_trailing_singleton_fourth_axis_loads_as_3d(tmp_path):
    """Kills ``no-4d-squeeze``: ``(X, Y, Z, 1)`` files (common from converters) load as ``(X, Y, Z)``;
    a real 4D file is refused."""
    arr = np.arange(24, dtype=np.int16).reshape(4, 3, 2)
    save_nifti(tmp_path / "x1.nii.gz", arr[..., None], AFF)
    v = load_nifti(tmp_path / "x1.nii.gz")
    assert v.array.shape == (4, 3, 2) and v.original_shape == (4, 3, 2)
    np.testing.assert_array_equal(v.array, arr)
    save_nifti(tmp_path / "x2.nii.gz", np.stack([arr, arr], -1), AFF)
    with pytest.raises(CTSegError, match="expected a 3D volume, got 4D"):
        load_nifti(tmp_path / "x2.nii.gz")

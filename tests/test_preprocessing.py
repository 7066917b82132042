"""Tests for ctseg_lib.preprocessing: windows, nnU-Net normaliser, resampling, cropping, restore."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ctseg_lib.data.nifti import Volume
from ctseg_lib.errors import CTSegError
from ctseg_lib.preprocessing import (
    WINDOWS,
    CTNormalizer,
    PreprocessParams,
    body_bbox,
    preprocess_case,
    resample,
    resize,
    resize_label,
    restore,
    window,
)


def make_volume(array: np.ndarray, spacing=(1.0, 1.0, 2.0)) -> Volume:
    aff = np.diag([*spacing, 1.0])
    return Volume(array, aff, tuple(spacing), aff.copy(), array.shape, None)


def phantom(shape=(40, 36, 12), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Air around an elliptic body (40 HU), a liver blob (100 HU, label 1) and a tumour (label 2)."""
    x, y, z = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    cx, cy, cz = shape[0] / 2, shape[1] / 2, shape[2] / 2
    body = ((x - cx) / (0.4 * shape[0])) ** 2 + ((y - cy) / (0.35 * shape[1])) ** 2 <= 1
    r = np.array(shape, np.float32) / (5, 5, 3)  # liver semi-axes scale with the volume
    liver = ((x - cx) / r[0]) ** 2 + ((y - cy) / r[1]) ** 2 + ((z - cz) / r[2]) ** 2 <= 1
    tumour = ((x - cx - r[0] / 4) / (r[0] / 3)) ** 2 + ((y - cy) / (r[1] / 3)) ** 2 + ((z - cz) / (r[2] / 2)) ** 2 <= 1
    hu = np.full(shape, -1000.0, np.float32)
    hu[body], hu[liver], hu[tumour] = 40, 100, 60
    hu += np.random.default_rng(seed).normal(0, 5, shape).astype(np.float32)
    lab = np.zeros(shape, np.uint8)
    lab[liver], lab[tumour] = 1, 2
    return hu, lab


# -- windows ----------------------------------------------------------------------------------
def test_abdomen_window_known_values():
    out = window(np.array([40, -160, 240, -1000, 3000, 140], np.int16), "abdomen")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.5, 0.0, 1.0, 0.0, 1.0, 0.75], atol=1e-6)


def test_window_tuple_and_string_forms_agree():
    hu = np.linspace(-2000, 2000, 50)
    for name, (level, width) in WINDOWS.items():
        a, b, c = window(hu, name), window(hu, (level, width)), window(hu, f"{level},{width}")
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
        assert a.min() == window(np.array([-1024.0]), name)[0] and a.max() == 1.0
    # lung: level -600, width 1500 -> -600 HU is mid-grey, 150 white; values below -1024 HU (scanner FOV
    # padding, issue 18) count as air (-1024), so the window's lower end -1350 HU is never reached
    np.testing.assert_allclose(window(np.array([-600.0, -1350.0, 150.0, -1024.0]), "lung"),
                               [0.5, 326 / 1500, 1, 326 / 1500], atol=1e-6)


@pytest.mark.parametrize("bad", ["abdomenn", "40", "a,b", (40,), (40, 0), (40, -5)])
def test_window_unknown_or_invalid_preset(bad):
    with pytest.raises(CTSegError) as e:
        window(np.zeros(3), bad)
    assert str(bad).strip("()").split(",")[0] in str(e.value)


# -- nnU-Net normaliser -----------------------------------------------------------------------
def test_ct_normalizer_known_values():
    fg = np.arange(1000, dtype=np.float32)  # foreground HU 0..999
    img = np.concatenate([fg, np.full(500, -1000.0, np.float32)])  # background must be ignored
    lab = np.concatenate([np.ones(1000, np.uint8), np.zeros(500, np.uint8)])
    n = CTNormalizer.fit([img], [lab], samples_per_case=10**6)
    # numpy linear percentile: 0.005 * 999 = 4.995 ; 0.995 * 999 = 994.005
    assert n.lower == pytest.approx(4.995) and n.upper == pytest.approx(994.005)
    assert n.mean == pytest.approx(499.5)
    std = np.sqrt((1000**2 - 1) / 12)  # std of 0..n-1
    assert n.std == pytest.approx(std)
    out = n(np.array([499.5, 2000.0, -3000.0]))
    np.testing.assert_allclose(out, [0.0, (994.005 - 499.5) / std, (4.995 - 499.5) / std], rtol=1e-5)
    assert CTNormalizer.from_dict(n.to_dict()) == n


def test_ct_normalizer_subsampling_is_seeded_and_errors():
    rng = np.random.default_rng(1)
    imgs = [rng.normal(50, 20, 5000) for _ in range(2)]
    labs = [np.ones(5000, np.uint8)] * 2
    a = CTNormalizer.fit(imgs, labs, samples_per_case=100, seed=3)
    assert a == CTNormalizer.fit(imgs, labs, samples_per_case=100, seed=3)
    assert a != CTNormalizer.fit(imgs, labs, samples_per_case=100, seed=4)
    with pytest.raises(CTSegError, match="no foreground"):
        CTNormalizer.fit([np.zeros(10)], [np.zeros(10, np.uint8)])
    with pytest.raises(CTSegError, match="invalid CT normalizer"):
        CTNormalizer.from_dict({"lower": 0})


# -- resampling -------------------------------------------------------------------------------
def test_resample_shape_rule():
    a = np.zeros((40, 40, 12), np.float32)
    assert resample(a, (0.8, 0.8, 2.5), (1.6, 1.6, 5.0), False).shape == (20, 20, 6)
    assert resample(a, (1, 1, 1), (3, 3, 3), False).shape == (13, 13, 4)  # round(13.33), round(4)
    assert resample(a, (1, 1, 1), (0.5, 0.5, 1), True).shape == (80, 80, 12)
    assert resample(np.zeros((2, 2, 1)), (1, 1, 1), (10, 10, 10), False).shape == (1, 1, 1)
    with pytest.raises(CTSegError, match="target spacing"):
        resample(a, (1, 1, 1), (1, 0, 1), False)


def test_grid_alignment_hand_computed():
    # Linear, centre-aligned 2x upsampling of [0, 1]: centres at -0.25, 0.25, 0.75, 1.25 (edges clamp).
    up = resize(np.array([[0.0, 1.0]]), (1, 4), is_label=False)
    np.testing.assert_allclose(up[0], [0, 0.25, 0.75, 1])
    # Nearest 2x downsampling of [0, 1, 2, 3]: output centres at input 0.5 and 2.5 -> indices 1, 3.
    down = resize(np.array([[0, 1, 2, 3]], np.uint8), (1, 2), is_label=True)
    np.testing.assert_array_equal(down[0], [1, 3])
    assert down.dtype == np.uint8


@settings(max_examples=40, deadline=None)
@given(
    lab=hnp.arrays(np.uint8, hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=9),
                   elements=st.sampled_from([0, 1, 2, 7])),
    factors=st.tuples(*[st.sampled_from([0.3, 0.5, 1.0, 1.7, 2.0])] * 3),
)
def test_label_resample_keeps_label_values(lab, factors):
    spacing = (1.0, 1.0, 1.0)
    out = resample(lab, spacing, factors, is_label=True)
    assert out.dtype == np.uint8
    assert set(np.unique(out)) <= set(np.unique(lab))
    back = resize(out, lab.shape, is_label=True)
    assert back.shape == lab.shape and set(np.unique(back)) <= set(np.unique(lab))


def test_resize_2d_label_stays_integer_and_bad_shape():
    lab = np.zeros((64, 64), np.int16)
    lab[10:30, 20:40] = 2
    out = resize(lab, (128, 100), is_label=True)
    assert out.dtype == np.int16 and set(np.unique(out)) == {0, 2}
    assert (out == 2).sum() == pytest.approx(20 * 20 * 2 * 100 / 64, rel=0.05)
    with pytest.raises(CTSegError, match="cannot resize"):
        resize(lab, (10, 10, 10), is_label=True)


def test_body_bbox_ignores_table_and_adds_margin():
    hu = np.full((30, 30, 6), -1000.0, np.float32)
    hu[8:20, 5:18, :] = 40  # body
    hu[2:4, 25:28, 2] = 300  # small 'table' part, not connected
    box = body_bbox(hu, margin=1)
    assert box == (slice(7, 21), slice(4, 19), slice(0, 6))
    assert body_bbox(np.full((4, 5, 6), -1000.0)) == (slice(0, 4), slice(0, 5), slice(0, 6))


def test_body_bbox_subsampled_path_is_never_tighter():
    hu = np.full((600, 600, 24), -1000, np.int16)  # 8.6 M voxels -> labelled with stride 2
    hu[101:302, 57:400, 3:15] = 40
    hu[590:600, 0:600, :] = 300  # table, far away
    box = body_bbox(hu, margin=0)
    assert box[2] == slice(3, 15)
    for b, (lo, hi) in zip(box[:2], [(101, 302), (57, 400)]):
        assert lo - 2 <= b.start <= lo and hi <= b.stop <= hi + 2


# -- params -----------------------------------------------------------------------------------
def test_params_dict_round_trip_and_errors():
    p = PreprocessParams(target_spacing=[1.5, 1.5, 3], normalization="window:lung", slice_size=128,
                         crop_to_body=True)
    assert p.slice_size == (128, 128)
    d = p.to_dict()
    assert d["target_spacing"] == [1.5, 1.5, 3.0]
    assert PreprocessParams.from_dict(d) == p
    assert PreprocessParams(normalization="ct").intensity_mode() == ("nnunet", None)
    assert PreprocessParams(normalization="window", window=[50, 350]).intensity_mode() == ("window", (50, 350))
    with pytest.raises(CTSegError, match="unknown preprocessing key"):
        PreprocessParams.from_dict({"spacing": [1, 1, 1]})
    with pytest.raises(CTSegError, match="normalization"):
        PreprocessParams(normalization="zscore")
    with pytest.raises(CTSegError, match="unknown window preset 'nope'"):
        PreprocessParams(normalization="window:nope")
    with pytest.raises(CTSegError, match="target_spacing"):
        PreprocessParams(target_spacing=(1, 1))
    with pytest.raises(CTSegError, match="slice_size"):
        PreprocessParams(slice_size=(0, 5))


# -- preprocess_case / restore ----------------------------------------------------------------
def test_preprocess_without_resampling_restores_exactly():
    hu, lab = phantom()
    params = PreprocessParams(normalization="window:abdomen", crop_to_body=True)
    pre = preprocess_case(make_volume(hu), make_volume(lab), params)
    assert pre.image.dtype == np.float32 and pre.label.dtype == np.uint8
    assert pre.image.shape == pre.label.shape and pre.image.shape[0] < hu.shape[0]  # cropped
    assert 0 <= pre.image.min() and pre.image.max() <= 1
    assert pre.spacing == (1.0, 1.0, 2.0)
    np.testing.assert_array_equal(restore(pre.label, pre.meta), lab)
    # Axial slices are contiguous in memory (slice-major storage).
    assert pre.image[:, :, 3].base is not None and np.moveaxis(pre.image, 2, 0).flags.c_contiguous


def test_preprocess_2x_downsampling_round_trip_agreement():
    hu, lab = phantom((64, 60, 16))
    # 2x in-plane (like 512 -> 256 voxels), z kept; nearest down + nearest up loses only boundary voxels
    params = PreprocessParams(target_spacing=(2.0, 2.0, 2.0), normalization="window:liver")
    pre = preprocess_case(make_volume(hu), make_volume(lab), params)
    assert pre.image.shape == (32, 30, 16) and pre.spacing == (2.0, 2.0, 2.0)
    back = restore(pre.label, pre.meta)
    assert back.shape == lab.shape and back.dtype == np.uint8
    assert set(np.unique(back)) <= {0, 1, 2}
    assert (back == lab).mean() >= 0.99
    # probabilities (C, X, Y, Z) come back linearly, summing to one
    probs = np.stack([(pre.label == c).astype(np.float32) for c in range(3)])
    pb = restore(probs, pre.meta)
    assert pb.shape == (3, *lab.shape)
    np.testing.assert_allclose(pb.sum(0), 1, atol=1e-5)


def test_slice_size_and_crop_restore_probabilities_pad_background():
    hu, lab = phantom()
    params = PreprocessParams(slice_size=(32, 32), crop_to_body=True)
    pre = preprocess_case(make_volume(hu), make_volume(lab), params)
    assert pre.image.shape == (32, 32, 12)
    probs = np.zeros((3, 32, 32, 12), np.float32)
    probs[1] = 1.0
    out = restore(probs, pre.meta)
    box = tuple(slice(a, b) for a, b in pre.meta["bbox"])
    outside = np.ones(lab.shape, bool)
    outside[box] = False
    assert outside.any()
    assert np.all(out[0][outside] == 1) and np.all(out[1][outside] == 0)
    assert np.all(out[1][box] == 1)
    with pytest.raises(CTSegError, match="does not match"):
        restore(np.zeros((5, 5, 5), np.uint8), pre.meta)


def test_normalization_modes():
    hu, lab = phantom()
    hu[0, 0, 0] = 3000  # metal: the per-volume min/max pitfall squeezes everything else
    mm = preprocess_case(make_volume(hu), None, PreprocessParams(normalization="minmax"))
    assert mm.label is None and mm.image.min() == 0 and mm.image.max() == pytest.approx(1)
    with pytest.raises(CTSegError, match="CTNormalizer"):
        preprocess_case(make_volume(hu), None, PreprocessParams(normalization="nnunet"))
    norm = CTNormalizer.fit([hu], [lab])
    pre = preprocess_case(make_volume(hu), make_volume(lab), PreprocessParams(normalization="nnunet"), norm)
    assert abs(float(pre.image[lab > 0].mean())) < 0.2  # z-scored foreground
    assert pre.meta["normalizer"] == norm.to_dict()
    with pytest.raises(CTSegError, match="differs"):
        preprocess_case(make_volume(hu), make_volume(lab[:-1]), PreprocessParams())


def test_window_accepts_a_scalar():
    # regression: np.clip(out=...) crashed on 0-d input
    from ctseg_lib.preprocessing import window

    assert float(window(np.float32(100.0), "abdomen")) == pytest.approx(0.65)
    assert window(100.0, (40, 400)).dtype == np.float32


# -- the course project's label resizing (chapter 10's pitfall, kept to measure it) -----------
def test_linear_uint8_label_resize_hand_computed():
    # 1D profile background | tumour (2), halved with align_corners=False: each output voxel is the
    # mean of two input voxels, so the boundary pair (0, 2) -> 1.0 -> "liver" after the uint8 cast.
    lab = np.array([[0, 0, 0, 2, 2, 2, 2, 0]], np.uint8)
    np.testing.assert_array_equal(resize_label(lab, (1, 4), "nearest"), [[0, 2, 2, 0]])  # input voxels 1, 3, 5, 7
    np.testing.assert_array_equal(resize_label(lab, (1, 4), "linear_uint8"), [[0, 1, 2, 1]])
    # truncation, not rounding: 1.5 (liver | tumour) becomes 1, 0.5 (background | liver) becomes 0
    lab = np.array([[1, 2, 0, 1]], np.uint8)
    out = resize_label(lab, (1, 2), "linear_uint8")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[1, 0]])
    with pytest.raises(CTSegError, match="label resize"):
        resize_label(lab, (1, 2), "bilinear")


def test_linear_uint8_in_preprocess_case_shrinks_tumour_and_adds_fake_liver():
    hu, lab = phantom((64, 60, 16))
    vol, lvol = make_volume(hu), make_volume(lab)
    near = preprocess_case(vol, lvol, PreprocessParams(slice_size=(21, 19)))
    lin = preprocess_case(vol, lvol, PreprocessParams(slice_size=(21, 19), label_resize="linear_uint8"))
    np.testing.assert_array_equal(near.image, lin.image)  # only the label follows another rule
    assert lin.label.dtype == np.uint8 and set(np.unique(lin.label)) <= {0, 1, 2}
    assert (lin.label == 2).sum() < (near.label == 2).sum()  # partial tumour borders truncated away
    assert (lin.label != near.label).any()
    assert lin.meta["params"]["label_resize"] == "linear_uint8"
    assert "label_resize" not in near.meta["params"]  # the default leaves cache keys as they were
    assert PreprocessParams.from_dict(lin.meta["params"]).label_resize == "linear_uint8"
    with pytest.raises(CTSegError, match="label_resize"):
        PreprocessParams(label_resize="bilinear")


def test_slice_size_with_z_spacing_resamples_z_only_and_restores():
    """``lung_25d``'s grid: ``slice_size`` decides in-plane, ``target_spacing`` z still resamples the
    slices (1 mm -> 3 mm: 36 slices -> 12), and labels / probabilities come back on the original grid."""
    hu, lab = phantom((40, 36, 36))
    params = PreprocessParams(slice_size=(32, 24), crop_to_body=True, target_spacing=(2.0, 2.0, 3.0))
    pre = preprocess_case(make_volume(hu, (1.0, 1.0, 1.0)), make_volume(lab, (1.0, 1.0, 1.0)), params)
    assert pre.image.shape == (32, 24, 12) and pre.spacing[2] == 3.0
    back = restore(pre.label, pre.meta)
    assert back.shape == lab.shape
    assert (back == lab).mean() >= 0.97
    probs = np.stack([(pre.label == c).astype(np.float32) for c in range(3)])
    pb = restore(probs, pre.meta)
    assert pb.shape == (3, *lab.shape)
    np.testing.assert_allclose(pb.sum(0), 1, atol=1e-5)
    assert (pb.argmax(0) == lab).mean() >= 0.97

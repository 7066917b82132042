"""Tests for ctseg_lib.datasets: splits, 2.5D stacks, slice/patch sampling."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ctseg_lib.datasets import (
    PatchDataset,
    SliceDataset,
    crop_pad,
    load_split,
    save_split,
    slices_of_case,
    split_cases,
    stack_25d,
)
from ctseg_lib.errors import CTSegError
from ctseg_lib.preprocessing import Preprocessed, slice_major


def make_case(shape=(8, 6, 20), pos_slices=(), tumour_slices=(), seed=0) -> Preprocessed:
    """Image voxel value = z + small noise (so channels are identifiable); label 1 on ``pos_slices``
    (a 2×2 square), label 2 on ``tumour_slices`` (one voxel)."""
    rng = np.random.default_rng(seed)
    img = np.broadcast_to(np.arange(shape[2], dtype=np.float32), shape) + rng.uniform(0, 0.1, shape)
    lab = np.zeros(shape, np.uint8)
    for z in pos_slices:
        lab[2:4, 2:4, z] = 1
    for z in tumour_slices:
        lab[5, 5, z] = 2
    img, lab = slice_major(img.astype(np.float32)), slice_major(lab)
    return Preprocessed(img, lab, (1.0, 1.0, 1.0), {"image_min": float(img.min())}, f"c{seed}")


# -- splits -----------------------------------------------------------------------------------
def test_split_no_leakage_deterministic_complete():
    ids = [f"liver_{i}" for i in range(23)]
    s = split_cases(ids, 0.2, 0.2, seed=5)
    assert set(s) == {"train", "val", "test"}
    assert [len(s[k]) for k in ("train", "val", "test")] == [13, 5, 5]  # round(4.6) = 5
    all_ids = s["train"] + s["val"] + s["test"]
    assert sorted(all_ids) == sorted(ids) and len(set(all_ids)) == len(ids)
    assert s == split_cases(list(reversed(ids)), 0.2, 0.2, seed=5)  # order-independent
    assert s != split_cases(ids, 0.2, 0.2, seed=6)


def test_split_errors():
    with pytest.raises(CTSegError, match="duplicate"):
        split_cases(["a", "a", "b"])
    with pytest.raises(CTSegError, match="fractions"):
        split_cases(["a", "b"], 0.6, 0.5)
    with pytest.raises(CTSegError, match="no training case"):
        split_cases(["a", "b"], 0.5, 0.4)
    assert split_cases(["a"]) == {"test": [], "val": [], "train": ["a"]}


def test_save_load_split_round_trip_and_errors(tmp_path):
    s = split_cases([f"c{i}" for i in range(10)], seed=1)
    p = save_split(s, tmp_path / "split.json")
    assert load_split(p) == s
    assert not list(tmp_path.glob(".tmp-*"))
    (tmp_path / "leak.json").write_text(json.dumps({"train": ["a", "b"], "val": ["b"], "test": []}))
    with pytest.raises(CTSegError, match="'b' is in both 'train' and 'val'"):
        load_split(tmp_path / "leak.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(CTSegError, match="invalid split JSON"):
        load_split(tmp_path / "bad.json")
    (tmp_path / "keys.json").write_text(json.dumps({"train": ["a"]}))
    with pytest.raises(CTSegError, match="keys"):
        load_split(tmp_path / "keys.json")
    (tmp_path / "types.json").write_text(json.dumps({"train": [1], "val": [], "test": []}))
    with pytest.raises(CTSegError, match="list of case-id strings"):
        load_split(tmp_path / "types.json")
    with pytest.raises(CTSegError, match="not found"):
        load_split(tmp_path / "missing.json")


# -- 2.5D -------------------------------------------------------------------------------------
def test_stack_25d_neighbours_and_edges():
    vol = make_case().image  # value ≈ z
    out = stack_25d(vol, 5, 3)
    assert out.shape == (3, 8, 6) and out.dtype == np.float32
    np.testing.assert_array_equal(np.floor(out[:, 0, 0]), [4, 5, 6])
    np.testing.assert_array_equal(out[1], vol[:, :, 5])
    np.testing.assert_array_equal(np.floor(stack_25d(vol, 0, 5)[:, 1, 1]), [0, 0, 0, 1, 2])  # edge replicated
    np.testing.assert_array_equal(np.floor(stack_25d(vol, 19, 3)[:, 1, 1]), [18, 19, 19])
    np.testing.assert_array_equal(stack_25d(vol, 7, 1)[0], vol[:, :, 7])
    # a plain C-ordered (X, Y, Z) array gives the same result as the slice-major view
    np.testing.assert_array_equal(stack_25d(np.ascontiguousarray(vol), 7, 3), stack_25d(vol, 7, 3))
    with pytest.raises(CTSegError, match="odd"):
        stack_25d(vol, 5, 2)
    with pytest.raises(CTSegError, match="outside"):
        stack_25d(vol, 20, 3)


def test_slices_of_case_matches_stack():
    c = make_case()
    allz = slices_of_case(c, context=1)
    assert allz.shape == (20, 3, 8, 6)
    for z in (0, 7, 19):
        np.testing.assert_array_equal(allz[z], stack_25d(c.image, z, 3))
    np.testing.assert_array_equal(slices_of_case(c, 1, start=5, stop=9), allz[5:9])


# -- SliceDataset -----------------------------------------------------------------------------
def test_slice_dataset_items_and_context():
    c = make_case(pos_slices=[3])
    ds = SliceDataset([c], context=2)
    assert len(ds) == 20
    x, y = ds[3]
    assert x.dtype == torch.float32 and x.shape == (5, 8, 6)
    assert y.dtype == torch.int64 and y.shape == (8, 6) and int(y.sum()) == 4
    np.testing.assert_array_equal(np.floor(x[:, 0, 0].numpy()), [1, 2, 3, 4, 5])
    xb, yb = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert xb.shape == (4, 5, 8, 6) and yb.shape == (4, 8, 6)
    with pytest.raises(IndexError):
        ds.slice_index(20)


def test_negative_keep_subsamples_negatives_per_epoch():
    cases = [make_case(pos_slices=range(0, 4), seed=0), make_case(pos_slices=range(10, 12), seed=1)]
    ds = SliceDataset(cases, negative_keep=0.25, seed=3)
    # 40 slices, 6 positive, 34 negative -> round(8.5) = 8 kept
    assert len(ds) == 6 + 8
    pos = {(k, z) for k, z in map(ds.slice_index, range(len(ds))) if z in ((range(4), range(10, 12))[k])}
    assert len(pos) == 6  # every positive slice is kept
    first = [ds.slice_index(i) for i in range(len(ds))]
    ds.set_epoch(1)
    assert [ds.slice_index(i) for i in range(len(ds))] != first  # fresh negatives each epoch
    ds.set_epoch(0)
    assert [ds.slice_index(i) for i in range(len(ds))] == first  # reproducible
    assert len(SliceDataset(cases, negative_keep=0.0)) == 6


def test_fg_oversampling_fraction_achieved():
    cases = [make_case(pos_slices=[2], seed=0), make_case(pos_slices=[15], seed=1)]  # 2 of 40 positive
    ds = SliceDataset(cases, fg_fraction=0.33, samples_per_epoch=3000, seed=0)
    has_fg = np.array([ds.cases[k].label[:, :, z].any() for k, z in map(ds.slice_index, range(len(ds)))])
    expected = 0.33 + 0.67 * 2 / 40  # forced + naturally positive random picks
    assert abs(has_fg.mean() - expected) < 0.03
    none = SliceDataset(cases, fg_fraction=0.0, samples_per_epoch=3000, seed=0)
    frac0 = np.mean([none.cases[k].label[:, :, z].any() for k, z in map(none.slice_index, range(3000))])
    assert abs(frac0 - 2 / 40) < 0.02


def test_fg_classes_selects_tumour():
    c = make_case(pos_slices=range(5, 15), tumour_slices=[9])
    ds = SliceDataset([c], fg_fraction=1.0, samples_per_epoch=50, fg_classes=[2])
    assert ds.fg_classes == [2]
    assert {ds.slice_index(i)[1] for i in range(50)} == {9}
    # "empty" means no label at all: liver-only slices stay in the pool (10 of them), only the
    # 10 slices without any label are downsampled.  (Planted variant: negatives = "no fg_classes
    # voxel" would keep 1 slice here and hide liver without tumour from the network.)
    assert len(SliceDataset([c], negative_keep=0.0, fg_classes=[2])) == 10
    assert SliceDataset([c]).fg_classes == [1, 2]
    both = SliceDataset([c], fg_fraction=1.0, samples_per_epoch=400, seed=1)
    zs = [both.slice_index(i)[1] for i in range(400)]
    assert 0.35 < np.mean([z == 9 for z in zs]) < 0.65  # class drawn first: tumour ~half the time


def test_slice_dataset_errors():
    c = make_case()
    with pytest.raises(CTSegError, match="at least one"):
        SliceDataset([])
    with pytest.raises(CTSegError, match="labelled"):
        SliceDataset([Preprocessed(c.image, None, (1, 1, 1), {})])
    with pytest.raises(CTSegError, match="fg_fraction"):
        SliceDataset([c], fg_fraction=1.5)
    with pytest.raises(CTSegError, match="non-negative"):
        SliceDataset([c], seed=-1)


def test_transform_is_applied():
    ds = SliceDataset([make_case()], transform=lambda x, y: (x * 0, y + 1))
    x, y = ds[0]
    assert float(x.abs().sum()) == 0 and int(y.min()) == 1


# -- PatchDataset -----------------------------------------------------------------------------
def test_crop_pad_hand_computed():
    a = np.arange(5)
    np.testing.assert_array_equal(crop_pad(a, [-2], [4], -1), [-1, -1, 0, 1])
    np.testing.assert_array_equal(crop_pad(a, [3], [4], -1), [3, 4, -1, -1])
    np.testing.assert_array_equal(crop_pad(a, [-1], [7], 9), [9, 0, 1, 2, 3, 4, 9])
    np.testing.assert_array_equal(crop_pad(a, [7], [2], 9), [9, 9])


def test_patch_dataset_shapes_padding_and_fg():
    c = make_case(shape=(8, 6, 20), tumour_slices=[12])
    ds = PatchDataset([c], patch_size=(4, 8, 6), fg_fraction=1.0, samples_per_epoch=30, seed=2)
    for i in range(30):
        x, y = ds[i]
        assert x.shape == (1, 4, 8, 6) and x.dtype == torch.float32
        assert y.shape == (4, 8, 6) and y.dtype == torch.int64
        assert int((y == 2).sum()) == 1  # foreground-forced patch contains the tumour voxel
        # y axis is 6 < 8: padded with label 0 and the image minimum
        k, start = ds.patch_start(i)
        assert start[1] in (-2, -1, 0)
    x, y = ds[0]
    k, (sx, sy, sz) = ds.patch_start(0)
    pad_cols = [j for j in range(8) if not 0 <= sy + j < 6]
    assert pad_cols and np.all(x[0, :, pad_cols].numpy() == ds.fill[0]) and ds.fill[0] == c.image.min()
    assert [ds.patch_start(i) for i in range(30)] == [ds.patch_start(i) for i in range(30)]


def test_patch_dataset_random_patches_inside_and_errors():
    c = make_case(shape=(8, 6, 20), tumour_slices=[12])
    ds = PatchDataset([c], patch_size=(4, 4, 4), fg_fraction=0.0, samples_per_epoch=200, seed=0)
    starts = np.array([ds.patch_start(i)[1] for i in range(200)])
    assert starts.min() >= 0 and np.all(starts.max(0) <= [4, 2, 16]) and starts[:, 2].max() > 10
    frac = np.mean([bool((ds[i][1] == 2).any()) for i in range(200)])
    assert frac < 0.5
    with pytest.raises(CTSegError, match="patch_size"):
        PatchDataset([c], patch_size=(4, 4))
    with pytest.raises(CTSegError, match="labelled"):
        PatchDataset([Preprocessed(c.image, None, (1, 1, 1), {})], (2, 2, 2))
    with pytest.raises(CTSegError, match="fg_fraction"):
        PatchDataset([c], (2, 2, 2), fg_fraction=-0.1)


def test_context_indices_is_the_one_25d_rule():
    from ctseg_lib.datasets import context_indices

    np.testing.assert_array_equal(context_indices(5, [0, 2, 4], 1), [[0, 0, 1], [1, 2, 3], [3, 4, 4]])
    np.testing.assert_array_equal(context_indices(3, [1], 0), [[1]])
    vol = make_case().image
    for z in (0, 7, 19):
        np.testing.assert_array_equal(stack_25d(vol, z, 5), np.moveaxis(vol, 2, 0)[context_indices(20, [z], 2)[0]])


def test_slice_patches_padding_shuffle_and_forced_class():
    c = make_case(shape=(8, 6, 20), pos_slices=range(5, 15), tumour_slices=[9])
    ds = SliceDataset([c], context=1, patch_size=(12, 4), fg_fraction=1.0, fg_classes=[2],
                      samples_per_epoch=30, seed=2)
    for i in range(len(ds)):
        k, z, cl, (x0, y0) = ds.sample(i)
        assert z == 9 and cl == 2 and -4 <= x0 <= 0 and 0 <= y0 <= 2
        x, y = ds[i]
        assert x.shape == (3, 12, 4) and y.shape == (12, 4) and int((y == 2).sum()) == 1
        assert float(x[1].min()) == pytest.approx(float(c.meta["image_min"])) or x0 == 0  # padded with the minimum
    shuffled = SliceDataset([c], shuffle=True, seed=0)
    order = [shuffled.slice_index(i)[1] for i in range(len(shuffled))]
    assert sorted(order) == list(range(20)) and order != list(range(20))
    shuffled.set_epoch(1)
    assert [shuffled.slice_index(i)[1] for i in range(20)] != order
    with pytest.raises(CTSegError, match="patch_size"):
        SliceDataset([c], patch_size=(4,))


def _two_lesions() -> Preprocessed:
    """A 20-slice lesion and a 2-slice one (two connected components of label 1)."""
    lab = np.zeros((40, 40, 30), np.uint8)
    lab[5:25, 5:25, 2:22] = 1
    lab[30:33, 30:33, 25:27] = 1
    img = np.random.default_rng(0).random(lab.shape).astype(np.float32)
    return Preprocessed(img, lab, (1.0, 1.0, 1.0), {})


def test_fg_sampling_lesion_balances_small_and_large_lesions():
    case = _two_lesions()
    share = {}
    for mode in ("slice", "lesion"):
        ds = SliceDataset([case], fg_fraction=1.0, samples_per_epoch=2000, fg_sampling=mode, patch_size=(16, 16))
        zs = np.array([ds.sample(i)[1] for i in range(2000)])
        share[mode] = float((zs >= 25).mean())
        x, y = ds[7]
        assert x.shape == (1, 16, 16) and y.shape == (16, 16) and int(y.sum()) > 0  # forced items show the lesion
    # per slice the small lesion has 2 of 22 foreground slices; per lesion it is drawn half the time
    assert share["slice"] == pytest.approx(2 / 22, abs=0.03)
    assert share["lesion"] == pytest.approx(0.5, abs=0.05)


def test_fg_sampling_lesion_whole_slices_and_bad_value():
    ds = SliceDataset([_two_lesions()], fg_fraction=1.0, samples_per_epoch=50, fg_sampling="lesion")
    assert all(ds[i][1].sum() > 0 for i in range(20))
    with pytest.raises(CTSegError, match="fg_sampling"):
        SliceDataset([_two_lesions()], fg_sampling="case")

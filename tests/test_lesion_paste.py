"""Lesion copy-paste: what is pasted, where it may go, and that it is off (draw for draw) by default."""

from __future__ import annotations

import numpy as np
import pytest

from ctseg_lib.config import TrainConfig
from ctseg_lib.datasets import SliceDataset
from ctseg_lib.errors import CTSegError
from ctseg_lib.lesion_paste import paste_lesion
from ctseg_lib.preprocessing import Preprocessed
from tests.test_training import tiny_cfg


def _source(bg: float = 0.0, bg_label: int = 0, cl: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 40 x 40 x 7 source: a disc lesion (value 0.8, class ``cl``) on slices 2-4, radius 3 on the
    middle slice and 2 on the others, in a background of ``bg`` labelled ``bg_label``."""
    image = np.full((40, 40, 7), bg, np.float32)
    label = np.full((40, 40, 7), bg_label, np.uint8)
    xx, yy = np.mgrid[:40, :40]
    for z, r in ((2, 2), (3, 3), (4, 2)):
        disc = (xx - 20) ** 2 + (yy - 20) ** 2 <= r * r
        image[disc, z] = 0.8 + 0.01 * z  # each slice its own value: the channels can be told apart
        label[disc, z] = cl
    return image, label, np.argwhere(label == cl).astype(np.int32)


def _paste_until(x, y, image, label, coords, cl, context, z_wanted=None, seed=0):
    """Paste with successive seeds until the lesion slice drawn is ``z_wanted`` (any if None)."""
    for s in range(seed, seed + 200):
        rng = np.random.default_rng(s)
        z = int(np.random.default_rng(s).choice(np.unique(coords[:, 2])))
        if z_wanted is None or z == z_wanted:
            return paste_lesion(x, y, image, label, coords, cl, context, rng, tries=50)
    raise AssertionError("no seed drew the wanted slice")


def test_paste_copies_the_lesion_and_its_neighbour_slices():
    image, label, coords = _source()
    x, y = np.zeros((3, 32, 32), np.float32), np.zeros((32, 32), np.int64)
    assert _paste_until(x, y, image, label, coords, 1, context=1, z_wanted=3)
    # the label: exactly the lesion's centre slice (a radius-3 disc: 29 voxels), nothing else
    assert (y == 1).sum() == (label[:, :, 3] == 1).sum() == 29
    # the image: each channel carries its own source slice (2, 3, 4) at the lesion's place
    for j, z in enumerate((2, 3, 4)):
        assert np.isclose(x[j][y == 1].max(), 0.8 + 0.01 * z)
    # the lesion is grown by one voxel for the image only: the label is not grown
    assert (x[1] > 0).sum() == 29


def test_paste_only_where_the_surroundings_match():
    image, label, coords = _source(bg=0.0)
    # soft tissue (1.0) everywhere: the lesion was found in air (0.0), so it does not go there
    x, y = np.ones((1, 32, 32), np.float32), np.zeros((32, 32), np.int64)
    assert not _paste_until(x, y, image, label, coords, 1, context=0)
    assert (x == 1).all() and (y == 0).all()
    # a spot already of the class is never pasted over
    x, y = np.zeros((1, 32, 32), np.float32), np.ones((32, 32), np.int64)
    assert not _paste_until(x, y, image, label, coords, 1, context=0)
    # nor next to one: sparse lesion voxels every 3 voxels keep the ring's majority label background,
    # but every spot for the 7-voxel-wide disc would touch one of them
    y = np.zeros((32, 32), np.int64)
    y[::3, ::3] = 1
    x = np.zeros((1, 32, 32), np.float32)
    assert not _paste_until(x, y, image, label, coords, 1, context=0)
    assert (y == 1).sum() == 121 and (x == 0).all()
    # a lesion larger than the item does not fit
    x, y = np.zeros((1, 6, 6), np.float32), np.zeros((6, 6), np.int64)
    assert not _paste_until(x, y, image, label, coords, 1, context=0)


def test_paste_ring_tolerance_has_a_floor():
    # a nodule in clean air (ring sd 0): the target ring's mean may differ by up to 0.05, not more
    image, label, coords = _source(bg=0.0)
    near = np.full((1, 32, 32), 0.04, np.float32)
    assert _paste_until(near, np.zeros((32, 32), np.int64), image, label, coords, 1, context=0)
    far = np.full((1, 32, 32), 0.08, np.float32)
    assert not _paste_until(far, np.zeros((32, 32), np.int64), image, label, coords, 1, context=0)


def test_paste_keeps_a_tumour_inside_its_organ():
    # a liver tumour (class 2) surrounded by liver (label 1, intensity 0.5)
    image, label, coords = _source(bg=0.5, bg_label=1, cl=2)
    x = np.full((1, 32, 32), 0.5, np.float32)
    outside = np.zeros((32, 32), np.int64)  # same intensity, but background: not the tumour's organ
    assert not _paste_until(x, outside, image, label, coords, 2, context=0)
    inside = np.ones((32, 32), np.int64)
    assert _paste_until(x, inside, image, label, coords, 2, context=0)
    assert set(np.unique(inside)) == {1, 2}


def _cases() -> list[Preprocessed]:
    rng = np.random.default_rng(3)
    out = []
    for k in range(3):
        image, label, _ = _source()
        image = image + rng.normal(0, 0.01, image.shape).astype(np.float32)
        if k == 2:
            label[:] = 0  # a case without lesion
            image[image > 0.5] = 0.0
        out.append(Preprocessed(image, label, (1.0, 1.0, 1.0), {}))
    return out


def test_dataset_paste_is_off_by_default_and_changes_no_other_draw():
    cases = _cases()
    kw = dict(context=1, fg_fraction=0.3, negative_keep=1.0, samples_per_epoch=60, seed=5, patch_size=(24, 24))
    plain, off, on = SliceDataset(cases, **kw), SliceDataset(cases, paste_prob=0.0, **kw), \
        SliceDataset(cases, paste_prob=1.0, **kw)
    assert off.paste_bank == {} and len(on.paste_bank[1]) == 2
    pasted = 0
    for ds in (plain, off, on):
        ds.set_epoch(2)
    for i in range(60):
        (xa, ya), (xb, yb), (_, yc) = plain[i], off[i], on[i]
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
        assert on.sample(i) == plain.sample(i)  # same case, slice, forced class and patch corner
        if not np.array_equal(yc, ya):
            pasted += 1
            assert (yc == 1).sum() > (ya == 1).sum() and ((ya == 1) <= (yc == 1)).all()
    assert pasted > 20  # paste_prob 1: most items find a place (some are mostly outside the body)
    with pytest.raises(CTSegError, match="paste_prob"):
        SliceDataset(cases, paste_prob=1.5, **kw)


@pytest.mark.parametrize("key", ["paste_prob", "synth_prob"])  # copy-paste and lesion synthesis (test_lesion_synth)
@pytest.mark.parametrize("three_d", [False, True])
def test_config_rejects_bad_paste_and_synth_settings(key, three_d):
    over = ({"data": {key: 0.5, "patch_size": [8, 8, 8]}, "model": {"spatial_dims": 3}} if three_d
            else {"data": {key: -0.1}})
    with pytest.raises(CTSegError, match=key):
        tiny_cfg(**over)
    assert getattr(TrainConfig().data, key) == 0.0

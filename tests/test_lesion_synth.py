"""Lesion synthesis: the ellipsoid's partial volume, what is drawn, where it may go, and that it is
off (draw for draw) by default."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ctseg_lib.datasets import SliceDataset
from ctseg_lib.errors import CTSegError
from ctseg_lib.lesion_synth import LesionStats, lesion_statistics, occupancy, synth_lesion
from tests.test_lesion_paste import _cases, _source

AIR = LesionStats(mean=0.8, sd=0.01, ring_mean=0.0, ring_sd=0.0, ring_label=0)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 0.7, 2.5), (2.0, 1.5, 5.0)])
def test_occupancy_integrates_to_the_ellipsoid_volume(spacing):
    a, b, c = 6.0, 4.0, 5.0
    sx, sy, sz = spacing
    n = 48
    total = sum(occupancy((n, n), (n / 2, n / 2), (a, b, c), 0.3, spacing, k * sz).sum()
                for k in range(-int(c / sz) - 2, int(c / sz) + 3)) * sx * sy * sz
    assert total == pytest.approx(4 / 3 * np.pi * a * b * c, rel=0.12)
    f = occupancy((n, n), (n / 2, n / 2), (a, b, c), 0.3, spacing, 0.0)
    assert f.dtype == np.float32 and f.min() >= 0 and f.max() <= 1 and f.max() == 1
    # beyond the ellipsoid's reach along z, and far from it in-plane, nothing
    assert not occupancy((n, n), (n / 2, n / 2), (a, b, c), 0.3, spacing, c + sz).any()
    assert f[0, 0] == 0


def test_occupancy_axes_and_angle():
    # a = 8 mm along x at angle 0: the footprint is longer in x than in y; turned by 90 degrees, in y
    f0 = occupancy((40, 40), (20, 20), (8.0, 3.0, 5.0), 0.0, (1.0, 1.0, 1.0), 0.0) >= 0.5
    f90 = occupancy((40, 40), (20, 20), (8.0, 3.0, 5.0), np.pi / 2, (1.0, 1.0, 1.0), 0.0) >= 0.5
    assert np.ptp(np.nonzero(f0)[0]) > 2 * np.ptp(np.nonzero(f0)[1])
    assert np.array_equal(f90, f0.T)


def test_lesion_statistics_of_a_nodule_and_of_a_liver_tumour():
    image, label, coords = _source(bg=0.1)
    s = lesion_statistics(image, label, coords)
    assert s.mean == pytest.approx(0.83, abs=0.01) and s.ring_mean == pytest.approx(0.1) and s.ring_sd < 1e-6
    assert s.ring_label == 0 and s.sd < 0.01  # inside one slice's disc the value is constant
    image, label, coords = _source(bg=0.5, bg_label=1, cl=2)
    s = lesion_statistics(image, label, coords)
    assert s.ring_label == 1 and s.ring_mean == pytest.approx(0.5)


def _draw(x, y, stats=AIR, cl=1, context=0, spacing=(1.0, 1.0, 1.0), diameter=(10.0, 10.0), seed=0, tries=50):
    return synth_lesion(x, y, spacing, stats, cl, context, np.random.default_rng(seed), diameter, tries)


def test_synth_draws_a_visible_labelled_lesion_of_the_asked_size():
    areas = []
    for seed in range(10):
        x, y = np.zeros((3, 48, 48), np.float32), np.zeros((48, 48), np.int64)
        assert _draw(x, y, context=1, spacing=(1.0, 1.0, 2.0), seed=seed)
        core = y == 1
        areas.append(core.sum())
        # the label is where the lesion is: its intensity there, the background elsewhere
        assert x[1][core].mean() > 0.6 and abs(x[1][core].mean() - 0.8) < 0.1
        # nothing changes away from it: only its partial-volume edge, at most 2 voxels out
        assert not (x[1] != 0)[~ndimage.binary_dilation(core, iterations=2)].any()
        # the neighbour slices (2 mm off) show a cross-section, never a larger one than the centre
        assert 0 < (x[0] >= 0.4).sum() <= (x[1] >= 0.4).sum() + 4
    # a 10 mm lesion (semi-axes 4-6 mm) on 1 mm pixels: 20 to 115 voxels on its centre slice
    assert min(areas) >= 20 and max(areas) <= 115 and len(set(areas)) > 3


def test_synth_diameters_are_drawn_in_the_range():
    small, large = [], []
    for seed in range(20):
        for out, d in ((small, (4.0, 4.0)), (large, (16.0, 16.0))):
            x, y = np.zeros((1, 64, 64), np.float32), np.zeros((64, 64), np.int64)
            if _draw(x, y, diameter=d, seed=seed):
                out.append((y == 1).sum())
    assert len(small) == len(large) == 20
    assert max(small) < min(large)
    with pytest.raises(ValueError, match="diameter_mm"):
        _draw(np.zeros((1, 8, 8), np.float32), np.zeros((8, 8), np.int64), diameter=(5.0, 2.0))


def test_synth_only_where_the_surroundings_match():
    # soft tissue (0.8, the lesion's own value) everywhere: no ring of air, no contrast: nothing drawn
    x, y = np.full((1, 32, 32), 0.8, np.float32), np.zeros((32, 32), np.int64)
    assert not _draw(x, y)
    assert (x == 0.8).all() and (y == 0).all()
    # a spot already of the class is never drawn over
    x, y = np.zeros((1, 32, 32), np.float32), np.ones((32, 32), np.int64)
    assert not _draw(x, y)
    assert (x == 0).all()
    # the ring tolerance has a floor of 0.05 (clean air, ring sd 0)
    assert _draw(np.full((1, 32, 32), 0.04, np.float32), np.zeros((32, 32), np.int64))
    assert not _draw(np.full((1, 32, 32), 0.08, np.float32), np.zeros((32, 32), np.int64))
    # a lesion larger than the item does not fit
    assert not _draw(np.zeros((1, 8, 8), np.float32), np.zeros((8, 8), np.int64))


def test_synth_needs_contrast_to_what_it_covers():
    # the ring matches (air around), but the spot itself is as bright as the lesion: a label on
    # nothing visible, so nowhere inside the bright square may a lesion go
    x = np.zeros((1, 48, 48), np.float32)
    x[:, 8:40, 8:40] = 0.8
    y = np.zeros((48, 48), np.int64)
    stats = LesionStats(mean=0.8, sd=0.01, ring_mean=0.4, ring_sd=0.3, ring_label=0)  # loose ring rule
    for seed in range(20):
        xx, yy = x.copy(), y.copy()
        if _draw(xx, yy, stats=stats, seed=seed):
            assert xx[0][yy == 1].size and (x[0][yy == 1] < 0.8).mean() > 0.2


def test_synth_keeps_a_tumour_inside_its_organ():
    stats = LesionStats(mean=0.2, sd=0.01, ring_mean=0.5, ring_sd=0.0, ring_label=1)  # hypodense, in liver
    x = np.full((1, 40, 40), 0.5, np.float32)
    assert not _draw(x, np.zeros((40, 40), np.int64), stats=stats, cl=2)  # background: not its organ
    inside = np.ones((40, 40), np.int64)
    assert _draw(x, inside, stats=stats, cl=2)
    assert set(np.unique(inside)) == {1, 2} and x[0][inside == 2].mean() < 0.3


def test_dataset_synth_is_off_by_default_and_changes_no_other_draw():
    cases = _cases()
    kw = dict(context=1, fg_fraction=0.3, negative_keep=1.0, samples_per_epoch=60, seed=5, patch_size=(32, 32))
    plain, on = SliceDataset(cases, **kw), SliceDataset(cases, synth_prob=1.0, **kw)
    assert plain.synth_bank == {} and len(on.synth_bank[1]) == 2
    drawn = 0
    for ds in (plain, on):
        ds.set_epoch(2)
    for i in range(60):
        (xa, ya), (xc, yc) = plain[i], on[i]
        assert on.sample(i) == plain.sample(i)
        if not np.array_equal(yc, ya):
            drawn += 1
            assert (yc == 1).sum() > (ya == 1).sum() and ((ya == 1) <= (yc == 1)).all()
            assert not np.array_equal(xa, xc)
        else:
            assert np.array_equal(xa, xc)
    assert drawn > 20
    half = SliceDataset(cases, synth_prob=0.3, **kw)
    half.set_epoch(2)
    n_half = sum(not np.array_equal(half[i][1], plain[i][1]) for i in range(60))
    assert 0 < n_half < drawn
    with pytest.raises(CTSegError, match="synth_prob"):
        SliceDataset(cases, synth_prob=1.5, **kw)


@pytest.mark.parametrize("pixel", [0.5, 2.0])
def test_occupancy_edge_is_one_voxel_wide(pixel):
    # a long cylinder-like ellipsoid cut at its middle: a disc of radius 5 mm; the partial-volume ramp
    # is one voxel wide whatever the pixel size, so about one circumference of voxels is partial
    n = 64
    f = occupancy((n, n), (n / 2, n / 2), (5.0, 5.0, 1000.0), 0.0, (pixel, pixel, 1.0), 0.0)
    partial = ((f > 0) & (f < 1)).sum()
    circumference = 2 * np.pi * 5.0 / pixel
    assert 0.6 * circumference <= partial <= 1.5 * circumference
    assert f.sum() * pixel**2 == pytest.approx(np.pi * 25, rel=0.05)

"""Connected-component post-processing, with hand-built label maps."""

from __future__ import annotations

import numpy as np
import pytest

from ctseg_lib.postprocessing import (
    apply_postprocessing,
    keep_largest_foreground,
    keep_largest_per_class,
    largest_component,
    restrict_to,
)


def test_largest_component_picks_biggest():
    m = np.zeros((10, 10, 4), bool)
    m[0:2, 0:2, 0] = True          # 4 voxels
    m[5:8, 5:8, 1:3] = True        # 18 voxels
    out = largest_component(m)
    assert out.sum() == 18 and out[6, 6, 1] and not out[0, 0, 0]
    assert not largest_component(np.zeros((3, 3), bool)).any()
    # diagonal neighbours are NOT connected (face connectivity)
    d = np.zeros((3, 3), bool)
    d[0, 0] = d[1, 1] = True
    assert largest_component(d).sum() == 1


def test_keep_largest_per_class_reports_removed():
    lab = np.zeros((12, 12), np.uint8)
    lab[0:5, 0:5] = 1     # big liver, 25
    lab[10:12, 10:12] = 1  # island, 4
    lab[7, 0] = 2          # tumour blobs: 1 and 2 voxels
    lab[7, 5:7] = 2
    out, rep = keep_largest_per_class(lab, [1, 2])
    assert rep["removed_voxels"] == {1: 4, 2: 1}
    assert (out == 1).sum() == 25 and (out == 2).sum() == 2
    assert lab[10, 10] == 1  # input untouched


def test_keep_largest_foreground_keeps_labels():
    lab = np.zeros((8, 8), np.uint8)
    lab[0:4, 0:4] = 1
    lab[1, 1] = 2
    lab[7, 7] = 2
    out, rep = keep_largest_foreground(lab)
    assert out[1, 1] == 2 and out[7, 7] == 0 and rep["removed_voxels"] == {2: 1}


def test_restrict_tumour_to_liver():
    lab = np.zeros((16, 16, 3), np.uint8)
    lab[2:10, 2:10, :] = 1
    lab[4:6, 4:6, 1] = 2       # inside liver: kept (4 voxels)
    lab[9:11, 9:11, 1] = 2     # touches liver border: kept (4)
    lab[14:16, 0:2, :] = 2     # far away: removed (12)
    out, rep = restrict_to(lab, inner_label=2, outer_labels=(1, 2))
    assert rep["removed_voxels"] == {2: 12}
    assert (out == 2).sum() == 8 and (out == 1).sum() == (lab == 1).sum()


def test_apply_postprocessing_steps():
    names = {0: "background", 1: "liver", 2: "cancer"}
    lab = np.zeros((16, 16), np.uint8)
    lab[0:8, 0:8] = 1
    lab[2, 2] = 2
    lab[12, 12] = 2            # outside liver
    lab[15, 0] = 1             # liver island
    out, rep = apply_postprocessing(lab, ["lcc", "restrict"], names)
    assert out[12, 12] == 0 and out[15, 0] == 0 and out[2, 2] == 2
    assert rep["lcc"]["removed_voxels"] == {1: 1} and rep["restrict"]["removed_voxels"] == {2: 1}
    with pytest.raises(ValueError, match="unknown postprocessing"):
        apply_postprocessing(lab, ["bogus"], names)
    with pytest.raises(ValueError, match="needs an organ"):
        apply_postprocessing(lab, ["restrict"], {0: "background", 1: "tumour"})


def test_min_size_keeps_every_plausible_lesion_and_drops_specks():
    """Detection-aware postprocessing: two tumours of 27 and 8 voxels (1 mm³ voxels) both survive
    min_size:5, a 1-voxel speck goes; lcc_fg would keep only the largest blob (planted variant:
    'min_size' implemented as keep-largest deletes the second tumour)."""
    from ctseg_lib.postprocessing import parse_steps

    lab = np.zeros((20, 20, 10), np.uint8)
    lab[1:4, 1:4, 1:4] = 1     # 27 voxels
    lab[10:12, 10:12, 5:7] = 1  # 8 voxels
    lab[18, 18, 9] = 1          # speck
    names = {0: "background", 1: "cancer"}
    out, rep = apply_postprocessing(lab, ["min_size:5"], names, spacing=(1.0, 1.0, 1.0))
    assert int(out.sum()) == 35 and out[18, 18, 9] == 0 and rep["min_size:5"]["removed_voxels"] == {1: 1}
    out2, _ = apply_postprocessing(lab, ["min_size:5"], names, spacing=(1.0, 1.0, 10.0))  # 10 mm³ voxels
    assert int(out2.sum()) == 36  # 10 mm³ voxels: even the 1-voxel speck is ≥ 5 mm³ and stays
    out3, _ = apply_postprocessing(lab, ["min_size:100"], names, spacing=(1.0, 1.0, 2.0))  # 50 voxels
    assert int(out3.sum()) == 0
    liver = np.zeros((20, 20, 10), np.uint8)
    liver[2:18, 2:18, 2:8] = 1
    liver[5, 5, 5] = 2  # a 1-voxel "tumour" inside a liver: removed, and it becomes liver
    out4, _ = apply_postprocessing(liver, ["min_size:2"], {0: "background", 1: "liver", 2: "cancer"},
                                   spacing=(1.0, 1.0, 1.0))
    assert int((out4 == 2).sum()) == 0 and int((out4 == 1).sum()) == int((liver == 1).sum()) + 1
    assert parse_steps("none") == [] and parse_steps(None) == [] and parse_steps("lcc, restrict") == ["lcc", "restrict"]
    for bad, msg in (("min_size", "min_size:<volume"), ("min_size:-3", "min_size:<volume"), ("lcc:2", "no argument"),
                     ("bogus", "unknown")):
        with pytest.raises(ValueError, match=msg):
            parse_steps(bad)
    with pytest.raises(ValueError, match="spacing"):
        apply_postprocessing(lab, ["min_size:5"], names)


def test_min_size_fills_a_removed_tumour_inside_the_liver_with_liver():
    """Regression (2026-12-07): min_size set a removed liver-tumour speck to background, punching a
    hole into the predicted liver (every false-positive speck cost liver Dice twice).  Now a removed
    component becomes the organ label around it; one that touches no organ becomes background; a
    lesion at or above the size is untouched; without an organ label (lung) removal is to background."""
    names = {0: "background", 1: "liver", 2: "tumour"}
    lab = np.zeros((24, 24, 12), np.uint8)
    lab[2:20, 2:20, 2:10] = 1
    lab[5:7, 5:7, 5] = 2          # 4-voxel speck inside the liver
    lab[2, 10, 5] = 2             # 1-voxel speck on the liver's edge (touches liver and background)
    lab[10:14, 10:14, 4:8] = 2    # a 64-voxel tumour: kept
    lab[22, 22, 11] = 2           # a speck outside the liver: background
    out, rep = apply_postprocessing(lab, ["min_size:10"], names, spacing=(1.0, 1.0, 1.0))
    assert (out[5:7, 5:7, 5] == 1).all() and out[2, 10, 5] == 1 and out[22, 22, 11] == 0
    assert int((out == 2).sum()) == 64 and (out[10:14, 10:14, 4:8] == 2).all()
    assert rep["min_size:10"]["removed_voxels"] == {2: 6}
    lung = (lab == 2).astype(np.uint8)
    lung[lab == 1] = 0
    out_lung, _ = apply_postprocessing(lung, ["min_size:10"], {0: "background", 1: "tumour"}, spacing=(1.0, 1.0, 1.0))
    assert int(out_lung.sum()) == 64 and set(np.unique(out_lung)) == {0, 1}

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

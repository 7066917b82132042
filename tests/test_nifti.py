from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from ctseg_lib.data.nifti import axial_display, load_nifti, save_nifti
from ctseg_lib.errors import CTSegError
from tests.conftest import ras_affine, to_lps, toy_case


def test_lps_and_ras_copies_give_identical_canonical_arrays(tmp_path):
    img, lab = toy_case()
    aff = ras_affine((0.8, 0.8, 2.5))
    save_nifti(tmp_path / "ras.nii.gz", img, aff)
    lps_img, lps_aff = to_lps(img, aff)
    save_nifti(tmp_path / "lps.nii.gz", lps_img, lps_aff)
    a, b = load_nifti(tmp_path / "ras.nii.gz"), load_nifti(tmp_path / "lps.nii.gz")
    assert a.orientation == "RAS" and b.orientation == "LPS"
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-5)
    # without canonicalisation the stored arrays really differ (mirrored)
    assert not np.array_equal(np.asanyarray(nib.load(tmp_path / "lps.nii.gz").dataobj), img)


def test_spacing_dtype_and_roundtrip_to_original(tmp_path):
    img, lab = toy_case()
    lps_img, lps_aff = to_lps(img, ras_affine((0.7, 0.9, 5.0)))
    save_nifti(tmp_path / "lab.nii.gz", to_lps(lab, ras_affine())[0], lps_aff)
    save_nifti(tmp_path / "img.nii.gz", lps_img, lps_aff)
    v = load_nifti(tmp_path / "img.nii.gz")
    lv = load_nifti(tmp_path / "lab.nii.gz", kind="label")
    assert v.spacing == pytest.approx((0.7, 0.9, 5.0))
    assert v.array.dtype == np.float32 and lv.array.dtype == np.uint8
    np.testing.assert_array_equal(v.to_original(v.array), lps_img.astype(np.float32))
    np.testing.assert_array_equal(lv.array, lab)


def test_permuted_axes_are_canonicalised(tmp_path):
    # stored as (Z, X, Y): the affine maps array axis 0 to world z
    img, _ = toy_case()
    stored = np.transpose(img, (2, 0, 1))
    aff = np.zeros((4, 4))
    aff[2, 0], aff[0, 1], aff[1, 2], aff[3, 3] = 3.0, 1.5, 1.2, 1.0
    save_nifti(tmp_path / "p.nii.gz", stored, aff)
    v = load_nifti(tmp_path / "p.nii.gz")
    np.testing.assert_array_equal(v.array, img)
    assert v.spacing == pytest.approx((1.5, 1.2, 3.0))


def test_axial_display_is_radiological():
    s = np.zeros((5, 4))
    s[4, 3] = 1  # most patient-right (x max) and most anterior (y max)
    d = axial_display(s)
    assert d.shape == (4, 5)
    assert d[0, 0] == 1  # anterior at top, patient right on the viewer's left


@pytest.mark.parametrize("bad", [b"", b"not a nifti at all" * 10])
def test_unreadable_files(tmp_path, bad):
    p = tmp_path / "x.nii.gz"
    p.write_bytes(bad)
    with pytest.raises(CTSegError, match="x.nii.gz"):
        load_nifti(p)


def test_missing_file_named(tmp_path):
    with pytest.raises(CTSegError, match="nope.nii.gz: file not found"):
        load_nifti(tmp_path / "nope.nii.gz")


def test_nan_and_2d_and_noninteger_labels(tmp_path):
    arr = np.zeros((4, 4, 3), np.float32)
    arr[1, 1, 1] = np.nan
    save_nifti(tmp_path / "nan.nii.gz", arr, np.eye(4))
    with pytest.raises(CTSegError, match="NaN"):
        load_nifti(tmp_path / "nan.nii.gz")
    save_nifti(tmp_path / "flat.nii.gz", np.zeros((4, 4), np.int16), np.eye(4))
    with pytest.raises(CTSegError, match="3D"):
        load_nifti(tmp_path / "flat.nii.gz")
    save_nifti(tmp_path / "frac.nii.gz", np.full((4, 4, 3), 0.5, np.float32), np.eye(4))
    with pytest.raises(CTSegError, match="non-integer"):
        load_nifti(tmp_path / "frac.nii.gz", kind="label")


def test_truncated_gzip(tmp_path):
    img, _ = toy_case((40, 40, 20))
    p = tmp_path / "t.nii.gz"
    save_nifti(p, img, ras_affine())
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CTSegError, match="t.nii.gz"):
        load_nifti(p)


@pytest.mark.parametrize("dtype, code", [(np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")]), 128),
                                         (np.complex64, 32)])
@pytest.mark.parametrize("kind", ["image", "label"])
def test_rgb_and_complex_voxels_are_one_clear_error(tmp_path, dtype, code, kind):
    """Regression (found by the header fuzzer, datatype 128): an RGB or complex NIfTI raised numpy's
    own TypeError / UFuncNoLoopError instead of a CTSegError naming the file."""
    arr = np.zeros((4, 3, 2), dtype=dtype)
    img = nib.Nifti1Image(arr, np.eye(4))
    assert int(img.header["datatype"]) == code
    path = tmp_path / f"odd_{code}.nii.gz"
    nib.save(img, path)
    with pytest.raises(CTSegError, match=rf"odd_{code}.*voxel type .*datatype {code}"):
        load_nifti(path, kind)

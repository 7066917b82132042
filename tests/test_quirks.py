"""Scanner quirks: FOV padding, identity / oblique / sheared affines (issue 18)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ctseg_lib.cli import main
from ctseg_lib.data.nifti import GeometryWarning, geometry_issues, load_nifti, save_nifti
from ctseg_lib.data.stats import body_mask, dataset_summary, volume_summary
from ctseg_lib.errors import CTSegError
from ctseg_lib.preprocessing import CTNormalizer, PreprocessParams, body_bbox, is_fov_padding, preprocess_case, window
from ctseg_lib.viz.render import window_to_grey
from ctseg_lib.viz.viewer import SliceViewer

REAL = Path(__file__).resolve().parents[2] / "shared" / "realct" / "msd_liver_0_ct.nii.gz"


def padded_scan(shape=(64, 64, 6), pad_value=-3024) -> tuple[np.ndarray, np.ndarray]:
    """Air inside the scanned circle, padding outside, a soft-tissue 'body' disc; label = body centre."""
    x, y = np.meshgrid(np.arange(shape[0]) - shape[0] / 2 + 0.5, np.arange(shape[1]) - shape[1] / 2 + 0.5,
                       indexing="ij")
    r = np.hypot(x, y)[..., None].repeat(shape[2], axis=2)
    hu = np.full(shape, -1000, np.int16)
    hu[r > shape[0] / 2 - 1] = pad_value
    hu[r < shape[0] / 4] = 40
    lab = (r < shape[0] / 8).astype(np.uint8)
    return hu, lab


@pytest.mark.parametrize("pad", [-2048, -3024])
def test_window_maps_padding_like_air_even_for_wide_windows(pad):
    for preset in ("abdomen", "lung", (-600, 1500), (0, 3000)):
        assert window(np.array([pad]), preset)[0] == window(np.array([-1024]), preset)[0]
        assert window_to_grey(np.array([pad]), preset)[0] == window_to_grey(np.array([-1024]), preset)[0]
    # the lung window reaches -1350 HU: air (-1000) is not black, and padding must look like air, not black
    assert window(np.array([pad]), "lung")[0] > 0


def test_ctnormalizer_fit_ignores_padding_under_labels():
    hu, lab = padded_scan()
    spill = lab.copy()
    spill[hu == -3024] = 1  # a label that spills into the padding (e.g. a carelessly drawn mask)
    got = CTNormalizer.fit([hu], [spill], samples_per_case=10**7)
    want = CTNormalizer.fit([hu], [spill * (hu >= -1024)], samples_per_case=10**7)
    assert got == want
    assert got.lower >= -1024 and got.mean > -1024


def test_minmax_and_bbox_ignore_padding():
    hu, _ = padded_scan()
    vol = load_vol(hu)
    pre = preprocess_case(vol, None, PreprocessParams(normalization="minmax"))
    # min/max from [-1024, 40], not [-3024, 40]: air -> ~0.0, tissue -> 1.0, padding -> same as air
    assert pre.image.min() == 0.0
    air = pre.image[32, 4, 0]
    assert air == pytest.approx((-1000 + 1024) / (40 + 1024), abs=1e-4)
    box = body_bbox(hu)
    inner = np.flatnonzero(hu[:, 32, 0] == 40)
    assert box[0].start >= inner[0] - 3 and box[0].stop <= inner[-1] + 4
    assert is_fov_padding(hu).sum() == np.count_nonzero(hu == -3024)


def load_vol(hu: np.ndarray):
    from ctseg_lib.data.nifti import Volume

    aff = np.diag([0.8, 0.8, 3.0, 1.0])
    return Volume(hu.astype(np.float32), aff, (0.8, 0.8, 3.0), aff, hu.shape, None)


def test_viewer_does_not_darken_the_circle_edge():
    hu, _ = padded_scan((64, 64, 2))
    as_air = np.maximum(hu, -1024)
    a = SliceViewer(hu, (1, 1, 1), max_size=24, window="lung")._sample(24)[0]
    b = SliceViewer(as_air, (1, 1, 1), max_size=24, window="lung")._sample(24)[0]
    np.testing.assert_array_equal(a, b)


def test_stats_air_mean_excludes_padding(tmp_path):
    from tests.conftest import write_msd

    root = write_msd(tmp_path / "ds", n=2, lps=())
    for i in range(2):
        p = root / "imagesTr" / f"toy_{i}.nii.gz"
        img = nib.load(str(p))
        arr = np.asarray(img.dataobj).copy()
        arr[:2] = -3024
        nib.save(nib.Nifti1Image(arr, img.affine), str(p))
    s = dataset_summary(root)
    assert s["tissue"]["fov_padding_voxels"] > 0
    assert -1100 < s["tissue"]["air_hu_mean"] < -900


@pytest.mark.skipif(not REAL.is_file(), reason="real MSD sample ../shared/realct not present")
def test_real_msd_liver_0_padding():
    vol = load_nifti(REAL)
    pad = is_fov_padding(vol.array)
    assert pad.sum() > 4_000_000
    assert window(vol.array[pad][:1000], "lung").max() == window(np.array([-1024.0]), "lung")[0]
    box = body_bbox(vol.array)
    assert not pad[box].all()
    body = body_mask(vol.array[:, :, 30:32])
    assert not (body & pad[:, :, 30:32]).any()
    summary = volume_summary(vol)
    assert summary["fov_padding_voxels"] == int(pad.sum()) and summary["hu"]["min"] >= -1024


def test_identity_affine_warns_once_naming_the_file(tmp_path):
    p = save_nifti(tmp_path / "ident.nii.gz", np.zeros((4, 4, 3), np.int16), np.eye(4))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("default")
        load_nifti(p)
        load_nifti(p)
    hits = [w for w in rec if issubclass(w.category, GeometryWarning)]
    assert len(hits) == 1 and "ident.nii.gz" in str(hits[0].message) and "identity affine" in str(hits[0].message)
    good = save_nifti(tmp_path / "good.nii.gz", np.zeros((4, 4, 3), np.int16), np.diag([0.7, 0.7, 2.5, 1]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", GeometryWarning)
        load_nifti(good)


def test_oblique_is_reported_and_sheared_refused(tmp_path):
    c, s = np.cos(0.3), np.sin(0.3)
    obl = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 1]])
    assert any("oblique" in i for i in geometry_issues(obl))
    assert geometry_issues(np.diag([-0.7, -0.7, 2.5, 1])) == []
    p = save_nifti(tmp_path / "obl.nii.gz", np.zeros((4, 4, 3), np.int16), obl)
    with pytest.warns(GeometryWarning, match="oblique"):
        vol = load_nifti(p)
    np.testing.assert_allclose(vol.spacing, (1, 1, 2), atol=1e-6)  # the true spacing, not the axis projections
    shear = np.array([[1, 0, 0.3, 0], [0, 1, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 1]])
    p = save_nifti(tmp_path / "shear.nii.gz", np.zeros((4, 4, 3), np.int16), shear)
    with pytest.raises(CTSegError, match="non-orthogonal"):
        load_nifti(p)


def test_ctseg_info_on_a_file_lists_identity_affine(tmp_path, capsys):
    hu, _ = padded_scan((16, 16, 3))
    p = save_nifti(tmp_path / "ident.nii.gz", hu, np.eye(4))
    assert main(["info", str(p)]) == 0
    out = capsys.readouterr().out
    assert "identity affine" in out and "FOV padding" in out
    assert main(["info", str(p), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["fov_padding_voxels"] == int((hu < -1024).sum()) and d["geometry_issues"]


def test_ctseg_info_on_a_dataset_lists_identity_affine_cases(tmp_path, capsys):
    from tests.conftest import write_msd

    root = write_msd(tmp_path / "ds", n=2, lps=())
    for kind in ("imagesTr", "labelsTr"):
        p = root / kind / "toy_1.nii.gz"
        img = nib.load(str(p))
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), np.eye(4)), str(p))
    assert main(["info", str(root)]) == 0
    out = capsys.readouterr().out
    assert "geometry issues in 1 case(s)" in out and "toy_1: identity affine" in out

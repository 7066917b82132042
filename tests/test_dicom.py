"""DICOM series → Volume / NIfTI: geometry against NIfTI written from the same arrays, and refusals."""

from __future__ import annotations

import random
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import FileDataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, generate_uid  # noqa: E402

from ctseg_lib.cli import main  # noqa: E402
from ctseg_lib.data.dicom import is_dicom_folder, list_series, load_dicom_series, load_image  # noqa: E402
from ctseg_lib.data.nifti import load_nifti  # noqa: E402
from ctseg_lib.errors import CTSegError  # noqa: E402

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def make_affine(rot: np.ndarray, spacing=(0.7, 0.8, 2.5), origin=(-100.0, 50.0, -300.0)) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag(spacing)
    a[:3, 3] = origin
    return a


def phantom(shape=(12, 10, 6), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-1024, 2000, size=shape).astype(np.int16)


def write_series(folder: Path, hu: np.ndarray, affine_ras: np.ndarray, *, series_uid: str | None = None,
                 shuffle: bool = False, modality: str = "CT", tilt: float | None = None,
                 drift: float = 0.0, skip: tuple[int, ...] = (), slope: float = 1.0, intercept: float = -1024.0,
                 syntax=ExplicitVRLittleEndian, names: str = "IM{k}", description: str = "") -> Path:
    """Write ``hu`` (X, Y, Z) as one DICOM file per slice with the geometry of ``affine_ras``."""
    folder.mkdir(parents=True, exist_ok=True)
    lps = LPS @ affine_ras
    sx, sy = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
    r, c = lps[:3, 0] / sx, lps[:3, 1] / sy
    series_uid = series_uid or generate_uid()
    study = generate_uid()
    ks = [k for k in range(hu.shape[2]) if k not in skip]
    order = list(range(len(ks)))
    if shuffle:
        random.Random(0).shuffle(order)
    for n, i in enumerate(order):
        k = ks[i]
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = syntax
        ds = FileDataset(str(folder / "x"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series_uid
        ds.Modality, ds.SeriesDescription = modality, description
        ds.InstanceNumber = n + 1  # deliberately not the slice order when shuffled
        pos = lps[:3, 3] + k * lps[:3, 2] + k * drift * r
        ds.ImagePositionPatient = [f"{v:.6f}" for v in pos]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*r, *c)]
        ds.PixelSpacing = [f"{sy:.6f}", f"{sx:.6f}"]  # [between rows, between columns]
        if tilt is not None:
            ds.GantryDetectorTilt = tilt
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
        stored = np.rint((hu[:, :, k].T.astype(np.float64) - intercept) / slope).astype(np.uint16)
        if syntax == JPEGLSLossless:
            from pydicom.encaps import encapsulate

            ds.PixelData = encapsulate([b"\xff\xd8 not really jpeg-ls \xff\xd9"])
            ds["PixelData"].VR = "OB"
        else:
            ds.PixelData = stored.tobytes()
        ds.save_as(folder / names.format(k=n + 1), enforce_file_format=True)
    return folder


def reference(tmp_path: Path, hu: np.ndarray, affine: np.ndarray):
    ref = tmp_path / "ref.nii.gz"
    nib.save(nib.Nifti1Image(hu, affine), str(ref))
    return load_nifti(ref)


def assert_same(a, b) -> None:
    assert a.array.shape == b.array.shape
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-4)
    np.testing.assert_allclose(a.spacing, b.spacing, atol=1e-4)


@pytest.mark.parametrize("name, rot", [
    ("ras", np.eye(3)),
    ("lps", np.diag([-1.0, -1.0, 1.0])),
    ("oblique", rotation(0.2, -0.3, 0.5)),
    ("feet-first", np.diag([1.0, -1.0, -1.0])),
])
def test_series_matches_nifti_from_same_array(tmp_path, name, rot):
    hu, aff = phantom(), make_affine(rot)
    write_series(tmp_path / "dcm", hu, aff, shuffle=True)
    vol = load_dicom_series(tmp_path / "dcm")
    assert_same(vol, reference(tmp_path, hu, aff))
    assert vol.array.dtype == np.float32


def test_convert_cli_output_equals_reference(tmp_path, capsys):
    hu, aff = phantom(seed=3), make_affine(rotation(0.1, 0.05, -0.2))
    write_series(tmp_path / "dcm", hu, aff, shuffle=True, names="{k:03d}.dcm")
    assert main(["convert", str(tmp_path / "dcm"), str(tmp_path / "out.nii.gz")]) == 0
    img = nib.load(str(tmp_path / "out.nii.gz"))
    assert img.get_data_dtype() == np.int16
    assert_same(load_nifti(tmp_path / "out.nii.gz"), reference(tmp_path, hu, aff))
    assert "wrote" in capsys.readouterr().out


def test_sorted_by_position_not_file_name_or_instance_number(tmp_path):
    hu = np.zeros((4, 4, 12), np.int16)
    hu[..., :] = np.arange(12, dtype=np.int16) * 10  # each slice has its own value
    write_series(tmp_path / "d", hu, make_affine(np.eye(3)), shuffle=True, names="IM{k}")  # IM10 < IM2
    vol = load_dicom_series(tmp_path / "d")
    np.testing.assert_array_equal(vol.array[0, 0, :], np.arange(12) * 10)


def test_rescale_slope_intercept(tmp_path):
    hu = (phantom(seed=1) // 2 * 2).astype(np.int16)  # even values survive slope 2 exactly
    write_series(tmp_path / "d", hu, make_affine(np.eye(3)), slope=2.0, intercept=-2048)
    np.testing.assert_array_equal(load_dicom_series(tmp_path / "d").array, hu.astype(np.float32))


def test_two_series_listed_and_selectable(tmp_path, capsys):
    hu, aff = phantom(), make_affine(np.eye(3))
    write_series(tmp_path / "d" / "a", hu, aff, series_uid="1.2.3.4", description="soft")
    write_series(tmp_path / "d" / "b", hu[::-1], aff, series_uid="1.2.3.5", description="bone")
    with pytest.raises(CTSegError, match=r"2 DICOM series.*--series.*1\.2\.3\.4.*1\.2\.3\.5"):
        load_dicom_series(tmp_path / "d")
    assert set(list_series(tmp_path / "d")) == {"1.2.3.4", "1.2.3.5"}
    np.testing.assert_array_equal(load_dicom_series(tmp_path / "d", "1.2.3.5").array, hu[::-1])
    out = tmp_path / "o.nii.gz"
    assert main(["convert", str(tmp_path / "d"), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1.2.3.4" in err
    assert main(["convert", str(tmp_path / "d"), str(out), "--series", "1.2.3.4"]) == 0
    with pytest.raises(CTSegError, match="no series '9.9'"):
        load_dicom_series(tmp_path / "d", "9.9")


@pytest.mark.parametrize("kwargs, match", [
    ({"tilt": 15.0}, "gantry tilt"),
    ({"drift": 0.5}, "gantry tilt"),
    ({"skip": (3,)}, "missing or unevenly spaced"),
    ({"modality": "MR"}, "modality 'MR', not CT"),
    ({"syntax": JPEGLSLossless}, "compressed transfer syntax"),
])
def test_bad_series_one_line_error(tmp_path, kwargs, match):
    write_series(tmp_path / "d", phantom(), make_affine(np.eye(3)), **kwargs)
    with pytest.raises(CTSegError, match=match) as e:
        load_dicom_series(tmp_path / "d")
    assert "\n" not in str(e.value)


def test_mixed_sizes_refused(tmp_path):
    uid = "1.2.3.9"
    aff = make_affine(np.eye(3))
    write_series(tmp_path / "d" / "a", phantom((12, 10, 3)), aff, series_uid=uid)
    aff2 = aff.copy()
    aff2[:3, 3] += 3 * aff[:3, 2]
    write_series(tmp_path / "d" / "b", phantom((12, 11, 3)), aff2, series_uid=uid)
    with pytest.raises(CTSegError, match="mixed slice sizes"):
        load_dicom_series(tmp_path / "d")


def test_empty_and_non_dicom_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CTSegError, match="no DICOM files"):
        load_dicom_series(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.bin").write_bytes(b"hello" * 100)
    with pytest.raises(CTSegError, match="no DICOM files"):
        load_dicom_series(tmp_path / "junk")
    assert not is_dicom_folder(tmp_path / "junk")
    with pytest.raises(CTSegError, match="not found"):
        load_dicom_series(tmp_path / "nope")


def test_load_image_dispatches(tmp_path):
    hu, aff = phantom(), make_affine(np.eye(3))
    write_series(tmp_path / "d", hu, aff)
    assert is_dicom_folder(tmp_path / "d")
    ref = reference(tmp_path, hu, aff)
    assert_same(load_image(tmp_path / "d"), ref)
    assert_same(load_image(tmp_path / "ref.nii.gz"), ref)
    with pytest.raises(CTSegError, match="--series only applies"):
        load_image(tmp_path / "ref.nii.gz", series="1.2")


@pytest.mark.parametrize("order", ["head-first", "feet-first"])
def test_write_dicom_series_round_trips_through_the_reader(tmp_path, order):
    """The public writer (used by chapter 2) + the reader = the NIfTI of the same arrays, whatever the
    InstanceNumber order; file names IM1 … IM12 do not sort in slice order."""
    from ctseg_lib.data.dicom import write_dicom_series

    hu = phantom(shape=(12, 10, 12), seed=3)
    for name, rot in (("lps", np.diag([-1.0, -1.0, 1.0])), ("oblique", rotation(0.1, 0.2, -0.3))):
        aff = make_affine(rot)
        folder = write_dicom_series(tmp_path / f"{name}-{order}", hu, aff, order=order)
        files = sorted(p.name for p in folder.iterdir())
        assert files[:3] == ["IM1", "IM10", "IM11"] and not [f for f in files if f.startswith(".")]
        (tmp_path / f"ref-{name}-{order}").mkdir()
        assert_same(load_dicom_series(folder), reference(tmp_path / f"ref-{name}-{order}", hu, aff))
    with pytest.raises(CTSegError, match="order"):
        write_dicom_series(tmp_path / "x", hu, np.eye(4), order="random")

"""Reading a CT DICOM series (one folder of slice files) into a :class:`~.nifti.Volume`.

Scanners and PACS deliver CT as one DICOM file per axial slice.  The volume's geometry is not in
the file names nor in ``InstanceNumber``: it is in three tags of every slice (DICOM PS3.3
C.7.6.2, "Image Plane Module"):

* ``ImagePositionPatient`` (IPP): the centre of the slice's first pixel, in mm, in the patient
  coordinate system **LPS** (x → patient's Left, y → Posterior, z → Superior);
* ``ImageOrientationPatient`` (IOP): the direction cosines of a pixel row (``r``, the direction in
  which the *column* index grows) and of a pixel column (``c``);
* ``PixelSpacing``: ``[spacing between rows, spacing between columns]`` in mm (note the order).

The slices are sorted by their position along the slice normal ``n = r × c`` (``IPP · n``), not
by file name (``IM10`` sorts before ``IM2``) nor by ``InstanceNumber`` (which some scanners
count head-first and others restart per acquisition).  Stored values become Hounsfield units
with ``HU = stored · RescaleSlope + RescaleIntercept`` and are kept as integers (int16).

Voxel ``(i, j, k)`` = column ``i``, row ``j`` of the ``k``-th slice sits at
``IPP_0 + i·Δc·r + j·Δr·c + k·s`` (LPS), ``s`` the step between consecutive slice positions; the
RAS affine flips the first two world axes.  The array is then reoriented to canonical RAS+
exactly like :func:`~.nifti.load_nifti` does, so a DICOM series and the NIfTI made from it load
identically.

Refused, each with one :class:`~ctseg_lib.errors.CTSegError` line: a folder with no DICOM, several
series (listed; pick one with ``series=`` / ``--series UID``), a non-CT modality, gantry tilt
(slice positions not along the normal: the grid is sheared, which a NIfTI affine of a
rectangular grid cannot hold without resampling), missing or unevenly spaced slices, duplicate
positions, mixed sizes / spacings / orientations, and compressed transfer syntaxes without an
installed decoder.

Library choice: the geometry above is ~60 lines on top of pydicom (already a dependency), tested
against NIfTI written from the same arrays (``tests/test_dicom.py``).  SimpleITK (a ~50 MB wheel)
reads series reliably but resamples or silently accepts tilted and gapped series depending on
the reader options; dicom2nifti pulls python-gdcm and would add a second, differently-behaving
error path.  Neither was worth its install size for what the book needs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import CTSegError
from .nifti import Volume

#: Relative tolerance on slice spacing (a missing slice doubles one gap; rounding of IPP to 0.01 mm
#: in some exports changes gaps by much less than 1 %).
SPACING_RTOL = 0.01
#: Largest in-plane offset (mm) between consecutive slice origins allowed before calling it a tilt.
TILT_ATOL_MM = 0.01


@dataclass
class SeriesInfo:
    """One series found in a folder: UID, description, modality and its files (unsorted)."""

    uid: str
    description: str = ""
    modality: str = ""
    files: list[Path] = field(default_factory=list)


def _read_header(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, AttributeError, KeyError):
        return None
    if "DirectoryRecordSequence" in ds:  # a DICOMDIR index, not an image
        return None
    return ds


def is_dicom_folder(path: str | Path) -> bool:
    """True if ``path`` is a folder holding at least one DICOM file (checked by the ``DICM`` preamble)."""
    path = Path(path)
    if not path.is_dir():
        return False
    for f in _candidate_files(path):
        try:
            with open(f, "rb") as fh:
                fh.seek(128)
                if fh.read(4) == b"DICM":
                    return True
        except OSError:
            continue
    return False


def _candidate_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if f.is_file() and not f.name.startswith(".")
                  and not f.name.endswith((".nii", ".nii.gz", ".json", ".txt", ".csv", ".html")))


def list_series(folder: str | Path) -> dict[str, SeriesInfo]:
    """All DICOM series under ``folder`` (recursively) as ``{SeriesInstanceUID: SeriesInfo}``.

    Raises:
        CTSegError: the folder does not exist or holds no readable DICOM file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CTSegError("DICOM folder not found", folder)
    series: dict[str, SeriesInfo] = {}
    for f in _candidate_files(folder):
        ds = _read_header(f)
        if ds is None or "SeriesInstanceUID" not in ds:
            continue
        uid = str(ds.SeriesInstanceUID)
        info = series.setdefault(uid, SeriesInfo(uid, str(ds.get("SeriesDescription", "")),
                                                 str(ds.get("Modality", ""))))
        info.files.append(f)
    if not series:
        raise CTSegError("no DICOM files found in folder", folder)
    return series


def _choose(series: dict[str, SeriesInfo], uid: str | None, folder: Path) -> SeriesInfo:
    listing = "; ".join(f"{s.uid} ({s.modality or '?'}, {len(s.files)} files"
                        + (f", {s.description!r}" if s.description else "") + ")" for s in series.values())
    if uid is not None:
        if uid not in series:
            raise CTSegError(f"no series {uid!r} here; series found: {listing}", folder)
        return series[uid]
    if len(series) > 1:
        raise CTSegError(f"{len(series)} DICOM series in one folder, choose one with --series UID: {listing}",
                         folder)
    return next(iter(series.values()))


def _floats(ds, tag: str, n: int, f: Path) -> np.ndarray:
    v = ds.get(tag)
    try:
        a = np.asarray([float(x) for x in v], dtype=np.float64)
    except (TypeError, ValueError):
        a = np.empty(0)
    if a.shape != (n,) or not np.all(np.isfinite(a)):
        raise CTSegError(f"missing or invalid {tag} ({v!r})", f)
    return a


def load_dicom_series(folder: str | Path, series: str | None = None) -> Volume:
    """Read one CT series from ``folder`` into a canonical RAS+ :class:`Volume` (float32 HU array).

    Args:
        folder: a folder of DICOM slice files (searched recursively; other files are skipped).
        series: ``SeriesInstanceUID`` to read when the folder holds several series.

    Returns:
        :class:`Volume` like :func:`~.nifti.load_nifti`: ``array`` ``(X, Y, Z)`` float32 HU (integer
        valued), ``affine``/``spacing`` (mm, RAS+), ``original_affine``/``original_shape`` of the
        grid as stored (columns, rows, slices sorted along the normal), ``path`` = the folder.

    Raises:
        CTSegError: see the module docstring for the refused cases.
    """
    folder = Path(folder)
    info = _choose(list_series(folder), series, folder)
    if info.modality.upper() != "CT":
        raise CTSegError(f"series {info.uid} has modality {info.modality or 'unknown'!r}, not CT", folder)
    headers = [(f, _read_header(f)) for f in info.files]
    first_f, first = headers[0]
    iop = _floats(first, "ImageOrientationPatient", 6, first_f)
    r, c = iop[:3], iop[3:]
    if abs(np.linalg.norm(r) - 1) > 1e-3 or abs(np.linalg.norm(c) - 1) > 1e-3 or abs(r @ c) > 1e-3:
        raise CTSegError(f"ImageOrientationPatient {iop.tolist()} is not two orthonormal directions", first_f)
    normal = np.cross(r, c)
    ps = _floats(first, "PixelSpacing", 2, first_f)
    size = (int(first.get("Rows", 0)), int(first.get("Columns", 0)))
    pos = []
    for f, ds in headers:
        if (int(ds.get("Rows", 0)), int(ds.get("Columns", 0))) != size:
            raise CTSegError(f"mixed slice sizes in series {info.uid}: {size} and "
                             f"{(int(ds.get('Rows', 0)), int(ds.get('Columns', 0)))} (rows, columns)", f)
        if np.max(np.abs(_floats(ds, "ImageOrientationPatient", 6, f) - iop)) > 1e-4:
            raise CTSegError(f"mixed slice orientations in series {info.uid}", f)
        if np.max(np.abs(_floats(ds, "PixelSpacing", 2, f) - ps)) > 1e-4:
            raise CTSegError(f"mixed pixel spacings in series {info.uid}", f)
        tilt = ds.get("GantryDetectorTilt")
        if tilt is not None and abs(float(tilt)) > 1e-3:
            raise CTSegError(f"gantry tilt of {float(tilt)}° in series {info.uid}: the slices are sheared; "
                             "resample the series to an untilted grid first (e.g. dcm2niix)", f)
        pos.append(_floats(ds, "ImagePositionPatient", 3, f))
    if min(size) < 1:
        raise CTSegError(f"invalid slice size {size} (rows, columns)", first_f)
    if len(headers) < 2:
        raise CTSegError(f"series {info.uid} has only one slice; a volume needs at least two", folder)
    pos_a = np.asarray(pos)
    order = np.argsort(pos_a @ normal, kind="stable")
    pos_a = pos_a[order]
    files = [headers[i][0] for i in order]
    dist = pos_a @ normal
    gaps = np.diff(dist)
    if np.any(gaps < 1e-3):
        k = int(np.argmin(gaps))
        raise CTSegError(f"two slices at the same position {dist[k]:.3f} mm along the normal "
                         f"({files[k].name}, {files[k + 1].name}): duplicate or mixed acquisitions", folder)
    step = float(np.median(gaps))
    bad = np.flatnonzero(np.abs(gaps - step) > SPACING_RTOL * step + 1e-3)
    if bad.size:
        k = int(bad[0])
        raise CTSegError(f"missing or unevenly spaced slices in series {info.uid}: gap of {gaps[k]:.3f} mm "
                         f"between {files[k].name} and {files[k + 1].name}, expected {step:.3f} mm "
                         f"({bad.size} irregular gap(s))", folder)
    inplane = np.diff(pos_a, axis=0) - gaps[:, None] * normal
    if np.max(np.abs(inplane)) > TILT_ATOL_MM:
        raise CTSegError(f"slice positions drift in-plane by up to {np.max(np.abs(inplane)):.3f} mm per slice "
                         f"(gantry tilt): the grid is sheared; resample the series to an untilted grid first",
                         folder)
    # LPS affine of the stored grid: i = column (along r, spacing ps[1]), j = row (along c, ps[0]), k = slice.
    lps = np.eye(4)
    lps[:3, 0] = r * ps[1]
    lps[:3, 1] = c * ps[0]
    lps[:3, 2] = (pos_a[-1] - pos_a[0]) / (len(pos_a) - 1)
    lps[:3, 3] = pos_a[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS -> RAS
    hu = np.empty((size[1], size[0], len(files)), dtype=np.int16)
    for k, f in enumerate(files):
        hu[:, :, k] = _slice_hu(f).T  # pixel_array is (rows, columns); the volume is (columns, rows, slices)
    img = nib.Nifti1Image(hu, affine)
    canon = nib.as_closest_canonical(img)
    spacing = np.sqrt((canon.affine[:3, :3] ** 2).sum(axis=0))
    return Volume(array=np.asarray(canon.dataobj, dtype=np.float32), affine=canon.affine.copy(),
                  spacing=tuple(float(s) for s in spacing), original_affine=affine,  # type: ignore[arg-type]
                  original_shape=hu.shape, path=folder)  # type: ignore[arg-type]


def _slice_hu(f: Path) -> np.ndarray:
    """One slice as int16 HU ``(rows, columns)``: stored values · RescaleSlope + RescaleIntercept."""
    import pydicom

    ds = pydicom.dcmread(f)
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    try:
        px = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - pydicom raises RuntimeError/NotImplementedError/ValueError
        name = getattr(ts, "name", ts)
        e = " ".join(str(exc).split())[:200]  # pydicom's messages span lines: keep the error one line
        if ts is not None and getattr(ts, "is_compressed", False):
            raise CTSegError(f"cannot decode compressed transfer syntax {name} ({ts}); install a decoder "
                             f"(e.g. pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg) or decompress "
                             f"the series (gdcmconv --raw): {type(exc).__name__}: {e}", f) from None
        raise CTSegError(f"cannot decode pixel data ({type(exc).__name__}: {e})", f) from None
    if px.ndim != 2:
        raise CTSegError(f"expected one 2D slice per file, got pixel data of shape {px.shape}", f)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    inter = float(ds.get("RescaleIntercept", 0) or 0)
    hu = np.rint(px.astype(np.float64) * slope + inter)
    lo, hi = np.iinfo(np.int16).min, np.iinfo(np.int16).max
    if hu.min() < lo or hu.max() > hi:
        warnings.warn(f"{f}: HU outside the int16 range clipped", stacklevel=3)
        hu = np.clip(hu, lo, hi)
    return hu.astype(np.int16)


def load_image(path: str | Path, series: str | None = None) -> Volume:
    """A CT image from a NIfTI file or a DICOM series folder (``series`` picks a SeriesInstanceUID)."""
    from .nifti import load_nifti

    path = Path(path)
    if path.is_dir():
        return load_dicom_series(path, series)
    if series is not None:
        raise CTSegError("--series only applies to a DICOM folder", path)
    return load_nifti(path, "image")


def image_id(path: str | Path) -> str:
    """Case id of an input: ``liver_7.nii.gz`` → ``liver_7``; a DICOM folder → its folder name."""
    from .msd import case_id

    path = Path(path)
    return path.resolve().name if path.is_dir() else case_id(path)


def write_dicom_series(folder: str | Path, hu: np.ndarray, affine_ras: np.ndarray, *, names: str = "IM{n}",
                       order: str = "head-first", description: str = "ctseg") -> Path:
    """Write an int16 HU volume as a CT DICOM series: one uncompressed file per slice.

    Args:
        folder: created if missing; must not contain another series (files are overwritten).
        hu: ``(X, Y, Z)`` HU array on the grid of ``affine_ras`` (e.g. ``Volume.to_original(v.array)``
            with ``v.original_affine``).
        affine_ras: 4×4 voxel → RAS mm affine of that grid (orthonormal directions).
        names: file name pattern; ``{n}`` is the InstanceNumber (1, 2, …) — the default ``IM{n}``
            makes ``IM10`` sort before ``IM2``, as many scanner exports do.
        order: ``"head-first"`` numbers the slices from the top of the volume down (``InstanceNumber``
            1 = highest z), ``"feet-first"`` from the bottom up; neither is the array order for
            every scanner, which is why readers sort by position.

    Each file gets ImagePositionPatient / ImageOrientationPatient / PixelSpacing in LPS (the DICOM
    patient system), RescaleSlope 1 and RescaleIntercept −1024 (stored values are HU + 1024).
    Meant for teaching and tests: the headers hold the geometry and pixels, nothing about a patient.
    """
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    from ..io import atomic_path

    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise CTSegError(f"write_dicom_series needs an (X, Y, Z) volume, got shape {hu.shape}")
    if order not in ("head-first", "feet-first"):
        raise CTSegError(f"order must be 'head-first' or 'feet-first', got {order!r}")
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine_ras, dtype=np.float64)
    sx, sy = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
    r, c = lps[:3, 0] / sx, lps[:3, 1] / sy
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    ks = sorted(range(hu.shape[2]), key=lambda k: (lps[:3, 3] + k * lps[:3, 2])[2],
                reverse=order == "head-first")
    stored = np.clip(np.rint(hu.astype(np.float64) + 1024), 0, 65535).astype(np.uint16)
    for n, k in enumerate(ks, start=1):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / names.format(n=n)), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = study, series, "CT"
        ds.SeriesDescription, ds.InstanceNumber = description, n
        ds.ImagePositionPatient = [f"{v:.6f}" for v in lps[:3, 3] + k * lps[:3, 2]]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*r, *c)]
        ds.PixelSpacing = [f"{sy:.6f}", f"{sx:.6f}"]  # [between rows, between columns]
        ds.SliceThickness = f"{abs(float(np.linalg.norm(lps[:3, 2]))):.6f}"
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()  # (rows, columns)
        with atomic_path(folder / names.format(n=n)) as tmp:
            pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
    return folder

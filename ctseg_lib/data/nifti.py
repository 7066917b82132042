"""Reading and writing NIfTI volumes, and the one axis convention used everywhere in ctseg.

Axis convention
---------------
Every volume returned by :func:`load_nifti` is reoriented to the closest canonical **RAS+**
orientation (:func:`nibabel.as_closest_canonical`, see the nibabel "Coordinate systems and
affines" guide).  After that, for ``array[i, j, k]``:

* axis 0 (``i``) increases towards the patient's **R**\\ ight,
* axis 1 (``j``) increases towards **A**\\ nterior,
* axis 2 (``k``) increases towards **S**\\ uperior, so ``array[:, :, k]`` is an **axial slice**
  and ``k`` runs feet → head.

``spacing`` is the voxel size in millimetres along those three axes.  The reorientation only
permutes and flips axes (no interpolation), so HU values are untouched; it matters because MSD
files come both as RAS and LPS: code that skips it sees some scans mirrored or rotated.

For display use :func:`axial_display`, which returns a slice in the radiological convention
(anterior at the top, patient's right on the viewer's left), the way CT is read clinically.
"""

from __future__ import annotations

import gzip
import math
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import CTSegError
from ..io import atomic_path

#: Scanner field-of-view padding: values below this (-2048, -3024 outside the scanned circle) are not
#: tissue nor air; windowing, normalisation, cropping, statistics and viewers treat them as air.
FOV_PADDING_HU = -1024.0


def is_fov_padding(hu: np.ndarray) -> np.ndarray:
    """Boolean mask of voxels below :data:`FOV_PADDING_HU` (outside the scanned field of view)."""
    return np.asarray(hu) < FOV_PADDING_HU
#: Largest |cosine| between two affine axes still called orthogonal (float rounding in headers).
ORTHO_TOL = 1e-3
#: Axes rotated more than this (degrees) from the nearest world axis make a volume "oblique".
OBLIQUE_DEG = 1.0


class GeometryWarning(UserWarning):
    """A volume's header geometry is suspicious (identity affine, oblique axes) but usable."""


def geometry_issues(affine: np.ndarray) -> list[str]:
    """Human-readable problems of a voxel→world ``affine`` (4×4, mm); empty when it looks like a scan.

    * identity affine: the file stores no geometry (MSD Task03 volumes 28–47): spacing reads
      1 × 1 × 1 mm and the orientation RAS, whatever the scan really was;
    * oblique: the voxel axes are rotated from the patient axes by more than :data:`OBLIQUE_DEG`.
      Such volumes are kept on their own grid (voxel spacing and the saved predictions stay exact;
      "axial" means the stored slice direction), not resampled.
    Non-orthogonal (sheared) axes are refused by :func:`load_nifti` instead.
    """
    a = np.asarray(affine, dtype=np.float64)
    out = []
    if np.allclose(a, np.eye(4)):
        out.append("identity affine: the file stores no geometry, so spacing reads 1 x 1 x 1 mm and the "
                   "orientation RAS (check the spacing with the data's source)")
        return out
    angle = obliquity_deg(a)
    if angle > OBLIQUE_DEG:
        out.append(f"oblique axes (rotated up to {angle:.1f} degrees from the patient axes); kept on the "
                   "stored grid, slices are along the stored third axis")
    return out


def obliquity_deg(affine: np.ndarray) -> float:
    """Largest angle (degrees) between a voxel axis of ``affine`` and its nearest world axis."""
    m = np.asarray(affine, dtype=np.float64)[:3, :3]
    cols = m / np.linalg.norm(m, axis=0)
    return float(np.degrees(np.arccos(np.clip(np.abs(cols).max(axis=0).min(), -1.0, 1.0))))


#: Refuse headers that would need more voxels than this (≈ 2 GiB of float32): a corrupt or hostile
#: header can claim terabytes, and nibabel would try to allocate it.
MAX_VOXELS = 512 * 1024 * 1024


@dataclass
class Volume:
    """A 3D volume in canonical RAS+ orientation.

    Attributes:
        array: ``(X, Y, Z)`` array; float32 HU for images, int16/uint8 labels for label maps.
        affine: 4×4 voxel→world (mm, RAS+) matrix of ``array``.
        spacing: voxel size ``(sx, sy, sz)`` in mm along the array axes.
        original_affine: the affine as stored in the file (before reorientation).
        original_shape: the array shape as stored in the file.
        path: the source file.
    """

    array: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    original_affine: np.ndarray
    original_shape: tuple[int, int, int]
    path: Path | None = None

    @property
    def orientation(self) -> str:
        """Axis codes of the file as stored, e.g. ``"RAS"`` or ``"LPS"``."""
        return "".join(nib.aff2axcodes(self.original_affine))

    def to_original(self, array: np.ndarray) -> np.ndarray:
        """Map a canonical-orientation ``array`` (same shape as :attr:`array`) back to file order."""
        return from_canonical(array, self.original_affine)


def _read_image(path: Path) -> nib.Nifti1Image:
    """Open a NIfTI file, turning every way it can be broken into a :class:`CTSegError`."""
    if not path.exists():
        raise CTSegError("file not found", path)
    if path.is_dir():
        raise CTSegError("expected a NIfTI file, found a directory", path)
    if path.stat().st_size == 0:
        raise CTSegError("file is empty (0 bytes)", path)
    try:
        img = nib.load(str(path))
    except Exception as e:  # nibabel raises many types (ImageFileError, gzip, struct, ...)
        raise CTSegError(f"not a readable NIfTI file ({type(e).__name__}: {e})", path) from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise CTSegError(f"expected NIfTI, got {type(img).__name__}", path)
    return img


def _check_header(img: nib.Nifti1Image, path: Path) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in img.shape)
    # A 4D image with a trailing singleton (X, Y, Z, 1) is common and harmless; real 4D is not CT.
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise CTSegError(f"expected a 3D volume, got {len(shape)}D shape {shape}", path)
    if min(shape) < 1:
        raise CTSegError(f"invalid shape {shape}", path)
    # math.prod on Python ints: np.prod(int64) wraps around for NIfTI-2 dims like (2**32, 2**32, 1).
    if math.prod(shape) > MAX_VOXELS:
        raise CTSegError(f"header claims {shape} = {math.prod(shape):,} voxels, "
                         f"more than the limit {MAX_VOXELS:,}; refusing to allocate", path)
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=np.float64)
    # nibabel silently "fixes" pixdim 0 → 1 and negative → abs on load; check what the file says.
    raw = _raw_pixdim(img, path)
    zooms = np.where(raw <= 0, raw, zooms)
    if not np.all(np.isfinite(zooms)) or np.any(zooms <= 0) or np.any(zooms > 100):
        raise CTSegError(f"absurd voxel spacing {tuple(zooms.tolist())} mm", path)
    aff = img.affine
    if aff is None or not np.all(np.isfinite(aff)) or abs(np.linalg.det(aff[:3, :3])) < 1e-9:
        raise CTSegError("affine is missing, non-finite or singular", path)
    steps = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))  # the spacing load_nifti reports
    if np.any(steps > 100) or np.any(steps < 1e-3):
        raise CTSegError(f"absurd voxel spacing in the affine {tuple(steps.round(6).tolist())} mm", path)
    cols = aff[:3, :3] / steps
    cos = np.abs(cols.T @ cols - np.eye(3)).max()
    if cos > ORTHO_TOL:
        off = 90.0 - float(np.degrees(np.arccos(min(float(cos), 1.0))))
        raise CTSegError(f"non-orthogonal (sheared) affine: voxel axes {off:.1f} degrees off square (e.g. a "
                         "gantry tilt stored as shear); resample it to a rectangular grid first (dcm2niix, Slicer)",
                         path)
    return shape  # type: ignore[return-value]


def _raw_pixdim(img: nib.Nifti1Image, path: Path) -> np.ndarray:
    """``pixdim[1:4]`` exactly as stored (no nibabel check/fix)."""
    try:
        with nib.openers.ImageOpener(path) as f:
            raw = type(img.header).from_fileobj(f, check=False)
        return np.asarray(raw["pixdim"][1:4], dtype=np.float64)
    except Exception as e:  # noqa: BLE001 - any failure here means an unreadable header
        raise CTSegError(f"not a readable NIfTI header ({type(e).__name__}: {e})", path) from None


def load_nifti(path: str | Path, kind: str = "image") -> Volume:
    """Load a 3D NIfTI and reorient it to canonical RAS+.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        kind: ``"image"`` → float32 HU (scl_slope/inter applied); ``"label"`` → integer labels
            (uint8 when values fit, else int16); non-integer or negative label values are an error.

    Returns:
        A :class:`Volume` whose ``array`` has shape ``(X, Y, Z)`` in RAS+ order.

    Raises:
        CTSegError: missing/empty/corrupt/truncated file, not 3D, absurd header, RGB or complex
            voxels, NaN/inf voxels, non-integer labels.
    """
    if kind not in ("image", "label"):
        raise ValueError(f"kind must be 'image' or 'label', not {kind!r}")
    path = Path(path)
    img = _read_image(path)
    shape = _check_header(img, path)
    original_affine = img.affine.copy()
    _warn_geometry(path, original_affine)
    try:
        canon = nib.as_closest_canonical(img)
        data = np.asanyarray(canon.dataobj)
    # OverflowError: numpy's memmap with a header vox_offset like 1e30.
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError, OverflowError) as e:
        raise CTSegError(f"corrupt or truncated NIfTI data ({type(e).__name__}: {e})", path) from None
    data = data.reshape(data.shape[:3])
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating) or data.dtype == bool):
        # e.g. NIfTI datatype 128 (RGB24), 2304 (RGBA32) or 32 (complex): not a CT intensity or a label
        raise CTSegError(f"voxel type {data.dtype} (NIfTI datatype {int(img.header['datatype'])}) is not a "
                         f"single real number per voxel; CT images and label maps are integer or float", path)
    if kind == "image":
        arr = np.asarray(data, dtype=np.float32)
        if not np.all(np.isfinite(arr)):
            n = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise CTSegError(f"{n} voxels are NaN or infinite", path)
    else:
        arr = _as_label_array(np.asarray(data), path)
    # Spacing = length of each affine column: the affine (sform/qform) is the geometry the file
    # declares, and header zooms can disagree with it, which made spacing depend on whether the
    # file was stored RAS (zooms kept) or reoriented (zooms recomputed from the affine).
    zooms = np.sqrt((canon.affine[:3, :3] ** 2).sum(axis=0))
    return Volume(
        array=arr,
        affine=canon.affine.copy(),
        spacing=tuple(float(z) for z in zooms),  # type: ignore[arg-type]
        original_affine=original_affine,
        original_shape=shape,
        path=path,
    )


_WARNED: set[tuple[str, str]] = set()


def _warn_geometry(path: Path, affine: np.ndarray) -> None:
    """A :class:`GeometryWarning` per file and issue, once per process (image and label alike).

    Kept in our own set: Python's "once per message" registry is reset whenever warning filters
    change (pytest, notebooks, ``catch_warnings``), so a file loaded again would warn again.
    """
    for issue in geometry_issues(affine):
        key = (str(path.resolve()), issue.split(":")[0])
        if key not in _WARNED:
            _WARNED.add(key)
            warnings.warn(f"{path}: {issue}", GeometryWarning, stacklevel=3)


def _as_label_array(data: np.ndarray, path: Path) -> np.ndarray:
    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)):
            raise CTSegError("label map contains NaN or infinite values", path)
        rounded = np.rint(data)
        if not np.array_equal(rounded, data):
            bad = np.unique(data[rounded != data])[:5]
            raise CTSegError(f"label map has non-integer values, e.g. {bad.tolist()}", path)
        data = rounded
    lo, hi = (int(data.min()), int(data.max())) if data.size else (0, 0)
    if lo < 0:
        raise CTSegError(f"label map has negative values (min {lo})", path)
    if hi > np.iinfo(np.int16).max:  # int16 would wrap silently; no segmentation has 32k classes
        raise CTSegError(f"label map has absurd label values (max {hi})", path)
    return data.astype(np.uint8 if hi < 256 else np.int16)


def from_canonical(array: np.ndarray, original_affine: np.ndarray) -> np.ndarray:
    """Inverse of the canonical reorientation: put a RAS+ array back in the file's axis order."""
    orig = nib.orientations.io_orientation(original_affine)
    ras = nib.orientations.axcodes2ornt(("R", "A", "S"))
    back = nib.orientations.ornt_transform(ras, orig)
    return nib.orientations.apply_orientation(array, back)


def save_nifti(
    path: str | Path, array: np.ndarray, affine: np.ndarray, dtype: np.dtype | type | None = None
) -> Path:
    """Write ``array`` with ``affine`` to ``path`` atomically (temp file + rename).

    To save a prediction over its source image, pass ``volume.to_original(pred)`` and
    ``volume.original_affine``: the file then has the same grid and orientation as the source.
    """
    path = Path(path)
    arr = np.asarray(array if dtype is None else np.asarray(array).astype(dtype))
    img = nib.Nifti1Image(arr, np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units("mm", "sec")
    if np.issubdtype(arr.dtype, np.integer):
        img.header.set_slope_inter(1, 0)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


def axial_display(slice2d: np.ndarray) -> np.ndarray:
    """Turn a canonical axial slice ``array[:, :, k]`` (axes R, A) into a display image.

    Radiological convention: rows run anterior→posterior (top = anterior) and columns run
    patient-right→patient-left (the patient's right is on the viewer's left).
    """
    return np.asarray(slice2d)[::-1, ::-1].T

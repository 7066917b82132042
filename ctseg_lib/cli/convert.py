"""``ctseg convert``: one CT DICOM series (a folder of slice files) → one NIfTI file.

The geometry comes from ImagePositionPatient / ImageOrientationPatient / PixelSpacing, the slices
are ordered by their position along the slice normal and the values are Hounsfield units (int16);
see :mod:`ctseg_lib.data.dicom`.  The NIfTI is written on the series' own grid (no resampling).
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "convert a CT DICOM series folder to NIfTI (.nii.gz) with the correct affine and HU"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dicom_dir", type=Path, help="folder holding the DICOM files of the series")
    p.add_argument("out", type=Path, help="output .nii.gz (or .nii)")
    p.add_argument("--series", default=None, metavar="UID",
                   help="SeriesInstanceUID to convert when the folder holds several series")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..data.dicom import load_dicom_series
    from ..data.nifti import save_nifti
    from ..errors import CTSegError
    from ..io import ensure_not_inside

    if not args.out.name.endswith((".nii", ".nii.gz")):
        raise CTSegError("output must end in .nii or .nii.gz", args.out)
    ensure_not_inside(args.out, args.dicom_dir, "NIfTI output")
    vol = load_dicom_series(args.dicom_dir, args.series)
    save_nifti(args.out, vol.to_original(vol.array), vol.original_affine, dtype=np.int16)
    sx, sy, sz = vol.spacing
    print(f"wrote {args.out}: {vol.array.shape[0]}x{vol.array.shape[1]}x{vol.array.shape[2]} voxels "
          f"({sx:.3g} x {sy:.3g} x {sz:.3g} mm, stored as {vol.orientation}), HU int16")
    return 0

"""``ctseg info``: summarise an MSD-layout dataset (geometry, orientations, class balance, HU).

Given one NIfTI file or a DICOM series folder instead, it summarises that volume (shape, spacing,
orientation, HU range, FOV padding, geometry issues such as an identity affine).
"""

from __future__ import annotations

import argparse
import json

HELP = "summarise an MSD-layout dataset: shapes, spacings, orientations, label balance, HU"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", help="dataset folder containing dataset.json, or one NIfTI file / DICOM series folder")
    p.add_argument("--series", default=None, metavar="UID", help="DICOM folder: the SeriesInstanceUID to describe")
    p.add_argument("--max-cases", type=int, default=None, help="only the first N training cases")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    import warnings
    from pathlib import Path

    from ..data.dicom import is_dicom_folder, load_image
    from ..data.nifti import GeometryWarning
    from ..data.stats import dataset_summary, format_summary, format_volume_summary, volume_summary
    from ..errors import CTSegError

    if args.max_cases is not None and args.max_cases < 1:
        raise CTSegError(f"--max-cases must be ≥ 1, got {args.max_cases}")
    root = Path(args.root)
    if root.is_file() or (root.is_dir() and not (root / "dataset.json").exists() and is_dicom_folder(root)):
        with warnings.catch_warnings():  # the summary lists geometry issues itself
            warnings.simplefilter("ignore", GeometryWarning)
            summary = volume_summary(load_image(root, args.series))
        print(json.dumps(summary, indent=2) if args.json else format_volume_summary(summary))
        return 0
    summary = dataset_summary(args.root, max_cases=args.max_cases)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0

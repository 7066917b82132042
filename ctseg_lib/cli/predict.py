"""``ctseg predict``: segment CT volumes with a trained checkpoint.

``--input`` may be one NIfTI file, a DICOM series folder (``--series UID`` if it holds several;
the prediction is written as NIfTI on the series' grid), a folder of NIfTI files, or an MSD task folder (then its
``imagesTs`` test images, or with ``--split test|val|train`` the cases of the training run's own
split, read from the checkpoint).  Each prediction is written as ``OUT/<case_id>.nii.gz`` on the
source image's grid and orientation, so it overlays the source in any viewer.  Nothing is ever
written inside the input folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "predict label maps for CT volumes with a trained checkpoint"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, type=Path, help="e.g. runs/liver/best.pt")
    p.add_argument("--input", required=True, type=Path,
                   help="NIfTI file, DICOM series folder, folder of NIfTI files, or MSD folder")
    p.add_argument("--series", default=None, metavar="UID", help="DICOM input: the SeriesInstanceUID to segment")
    p.add_argument("--out", required=True, type=Path, help="output folder for <case_id>.nii.gz")
    p.add_argument("--split", choices=("test", "val", "train"), default=None,
                   help="MSD input: predict these cases of the checkpoint's split instead of imagesTs")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="average over mirrored inputs (slower, usually better; default: what the checkpoint's "
                        "config records)")
    p.add_argument("--postprocess", default=None,
                   help="comma list of steps: lcc, lcc_fg, restrict, min_size:<mm3>, lung_fields (keep lesions at "
                        "least half inside the scan's lung fields); 'none' for the raw prediction (default: the "
                        "postprocessing recorded in the checkpoint's config)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    p.add_argument("--quiet", action="store_true")


def _inputs(inp: Path, split: str | None, meta: dict) -> list[Path]:
    from ..data.dicom import is_dicom_folder
    from ..data.msd import MSDDataset
    from ..errors import CTSegError

    if inp.is_file():
        return [inp]
    if not inp.is_dir():
        raise CTSegError("input not found", inp)
    if (inp / "dataset.json").is_file():
        ds = MSDDataset(inp)
        if split is None:
            if not ds.test_images:
                raise CTSegError("dataset.json lists no test images; use --split test", inp)
            return list(ds.test_images)
        ids = meta.get("split", {}).get(split)
        if not ids:
            raise CTSegError(f"the checkpoint has no '{split}' cases", inp)
        return [ds.case(i).image for i in ids]
    if split is not None:
        raise CTSegError("--split needs an MSD task folder (with dataset.json)", inp)
    files = sorted(f for f in inp.iterdir() if not f.name.startswith("._")
                   and (f.name.endswith(".nii.gz") or f.name.endswith(".nii")))
    if not files:
        if is_dicom_folder(inp):
            return [inp]  # one DICOM series
        raise CTSegError("no .nii/.nii.gz files nor DICOM files in folder", inp)
    return files


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import load_model
    from ..data.dicom import image_id, load_image
    from ..distributed import select_device
    from ..errors import CTSegError
    from ..inference import predict_case, save_prediction
    from ..io import ensure_not_inside
    from ..postprocessing import apply_postprocessing, parse_steps

    try:
        steps = parse_steps(args.postprocess) if args.postprocess is not None else None
    except ValueError as e:
        raise CTSegError(f"--postprocess: {e}") from None
    device = select_device(args.device, quiet=args.quiet, purpose="inference")
    model, cfg, meta = load_model(args.checkpoint, device)
    if steps is None:  # the preset's recommended postprocessing, as measured with it
        steps = parse_steps(cfg.postprocess)
        if steps and not args.quiet:
            print(f"postprocessing (from the checkpoint's config; --postprocess none to skip): {','.join(steps)}")
    tta = cfg.tta if args.tta is None else args.tta
    names = {int(k): v for k, v in meta["labels"].items()}
    if "restrict" in steps and len(names) < 3:
        raise CTSegError("--postprocess restrict needs an organ and a tumour label (e.g. Task03 liver)")
    if args.input.is_dir():  # a single-file input is protected by save_prediction's same-path check
        ensure_not_inside(args.out, args.input, "predictions")
    files = _inputs(args.input, args.split, meta)
    if args.series is not None and files != [args.input]:
        raise CTSegError("--series needs a DICOM series folder as --input", args.input)
    for f in files:
        vol = load_image(f, args.series)
        labels = predict_case(model, cfg, meta, vol, tta=tta, device=device)
        # labels are on the scan's canonical grid, as is vol.array (the HU that lung_fields reads)
        labels, report = apply_postprocessing(labels, steps, names, spacing=vol.spacing, image=vol.array)
        out = save_prediction(args.out / f"{image_id(f)}.nii.gz", labels, vol)
        if not args.quiet:
            removed = {s: r["removed_voxels"] for s, r in report.items() if r["removed_voxels"]}
            print(f"{f.name} -> {out}" + (f"  (postprocessing removed {removed})" if removed else ""))
    return 0

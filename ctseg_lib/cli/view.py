"""``ctseg view``: write a self-contained HTML slice viewer for one CT (with label / prediction)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "write a standalone HTML slice viewer (works offline, no kernel) for an image and its labels"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", type=Path, help="CT image (.nii / .nii.gz) or a DICOM series folder")
    p.add_argument("--series", default=None, metavar="UID", help="DICOM folder: the SeriesInstanceUID to show")
    p.add_argument("--label", type=Path, help="ground-truth label map on the same grid")
    p.add_argument("--pred", type=Path, action="append", default=[],
                   help="prediction label map on the same grid (repeatable; shown as its file name)")
    p.add_argument("--window", default="abdomen", help="initial window: abdomen, liver, lung, bone (default abdomen)")
    p.add_argument("--labels", type=Path, help="dataset.json whose 'labels' names the label values")
    p.add_argument("--title", help="title shown above the viewer (default: the image file name)")
    p.add_argument("--max-slices", type=int, default=64, help="slices embedded (default 64)")
    p.add_argument("--max-size", type=int, default=192, help="in-plane pixels, longest side (default 192)")
    p.add_argument("--mode", choices=("fill", "contour"), default="fill", help="initial overlay style")
    p.add_argument("--out", type=Path, default=None, help="output .html (the interactive viewer)")
    p.add_argument("--gif", type=Path, default=None,
                   help="also (or only) write an animated GIF: the window's grey levels, radiological orientation, "
                        "ground truth | first prediction side by side, feet to head")
    p.add_argument("--fps", type=float, default=8.0, help="GIF frames per second (default 8)")


def _label_names(path: Path) -> dict[int, str]:
    from ..errors import CTSegError

    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CTSegError("labels file not found", path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CTSegError(f"not valid JSON ({e})", path) from None
    labels = meta.get("labels") if isinstance(meta, dict) else None
    if not isinstance(labels, dict):
        raise CTSegError("no 'labels' object (expected e.g. {\"0\": \"background\", \"1\": \"liver\"})", path)
    try:
        return {int(k): str(v) for k, v in labels.items()}
    except ValueError:
        raise CTSegError(f"label keys must be integers, got {list(labels)}", path) from None


def run(args: argparse.Namespace) -> int:
    from ..data.dicom import load_image
    from ..data.msd import check_same_grid
    from ..data.nifti import load_nifti
    from ..errors import CTSegError
    from ..viz.viewer import SliceViewer

    if args.out is None and args.gif is None:
        raise CTSegError("nothing to write: give --out viewer.html and/or --gif movie.gif")
    img = load_image(args.image, args.series)
    label = None
    if args.label:
        lab = load_nifti(args.label, "label")
        check_same_grid(img, lab)
        label = lab.array
    preds = {}
    for p in args.pred:
        pv = load_nifti(p, "label")
        check_same_grid(img, pv)
        preds[p.name.removesuffix(".gz").removesuffix(".nii")] = pv.array
    names = _label_names(args.labels) if args.labels else None
    if args.gif is not None:
        from ..viz.gif import save_gif

        pred = next(iter(preds.values()), None)
        save_gif(args.gif, img.array, img.spacing, label=label, pred=pred, window=args.window, fps=args.fps,
                 labels=names, mode=args.mode, max_size=args.max_size)
        print(f"wrote {args.gif} ({args.gif.stat().st_size / 1e6:.2f} MB)")
    if args.out is None:
        return 0
    viewer = SliceViewer(img.array, img.spacing, label=label, pred=preds or None, labels=names,
                         window=args.window, max_slices=args.max_slices, max_size=args.max_size,
                         mode=args.mode, title=args.title or args.image.resolve().name, affine=img.affine)
    viewer.save(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    return 0

"""``ctseg evaluate``: compare a folder of predicted label maps with the ground truth.

Files are matched by case id (file name without ``.nii.gz``/``.nii``; macOS ``._*`` files are
ignored).  If ``--gt`` is an MSD task folder (it has ``dataset.json``) its ``labelsTr`` cases and
``labels`` are used.  Each prediction must lie on exactly the ground truth's voxel grid (same shape
and affine, checked with :func:`ctseg_lib.data.msd.check_same_grid`).  Per-case, per-label rows go
to a CSV (written atomically); the per-label summary is printed.

Lesion labels (``--lesions``, by default the task's tumour label with ``--task``) are also evaluated
lesion by lesion (:mod:`ctseg_lib.lesions`, reference pieces within ``--merge-distance`` voxels are
one lesion): detected / reference lesions, false-positive lesions per scan, tumour-free scans with a
false positive, Dice over detected lesions and the case-mean Dice over lesion-bearing scans — the
detection / segmentation split of LiTS (Bilic et al. 2023) and the MSD paper.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

from ..errors import CTSegError

HELP = "compute Dice, HD95, NSD, ... of predicted label maps against the ground truth"

CSV_COLUMNS = ["case", "label", "label_name", "dice", "iou", "precision", "recall", "vol_diff_ml", "vol_diff_rel",
               "hd95", "nsd", "gt_voxels", "pred_voxels", "tp_voxels"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pred", required=True, type=Path, help="folder of predicted label maps <case>.nii.gz")
    p.add_argument("--gt", required=True, type=Path, help="folder of ground-truth label maps, or an MSD task folder")
    p.add_argument("--out", required=True, type=Path, help="CSV file for the per-case metrics")
    p.add_argument("--tolerance-mm", type=float, default=2.0, help="NSD tolerance in mm (default 2)")
    p.add_argument("--labels", default=None,
                   help='labels as JSON (\'{"1": "liver", "2": "tumour"}\') or a JSON file / dataset.json; '
                        "default: dataset.json of --gt, else --task, else the values found in the ground truth")
    from ..tasks import task_names

    p.add_argument("--task", choices=task_names(), default=None,
                   help="take the label names from this task (e.g. liver: 1 liver, 2 cancer) when --gt has no "
                        "dataset.json and --labels is not given")
    p.add_argument("--regions", default=None,
                   help='merged labels as JSON, e.g. \'{"liver+tumour": [1, 2]}\'')
    p.add_argument("--split", default=None, metavar="SPLIT_JSON[:NAME]",
                   help="evaluate only the cases of one entry of a split file, e.g. runs/liver/split.json:test "
                        "(the split `ctseg train` saved; NAME defaults to test)")
    p.add_argument("--lesions", default=None, metavar="LABELS",
                   help="comma-separated label values to evaluate lesion by lesion (default: the --task's "
                        "tumour label; 'none' to skip)")
    p.add_argument("--merge-distance", type=int, default=2,
                   help="reference pieces within this many voxels count as one lesion (default 2)")
    p.add_argument("--allow-missing", action="store_true",
                   help="count a missing prediction as an empty mask instead of failing")


def _nifti_files(folder: Path) -> dict[str, Path]:
    from ..data.msd import case_id

    if not folder.is_dir():
        raise CTSegError("folder not found", folder)
    files = {}
    for f in sorted(folder.iterdir()):
        if f.name.startswith("._") or not (f.name.endswith(".nii.gz") or f.name.endswith(".nii")):
            continue
        cid = case_id(f)
        if cid in files:
            raise CTSegError(f"two files for case {cid!r}: {files[cid].name} and {f.name}", folder)
        files[cid] = f
    return files


def _parse_json_arg(text: str, what: str) -> object:
    path = Path(text)
    if not text.lstrip().startswith("{") and path.exists():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CTSegError(f"{what}: cannot read JSON ({e})", path) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CTSegError(f"{what}: not valid JSON nor an existing file ({e}): {text!r}") from None


def parse_labels(text: str) -> dict[int, str]:
    """``--labels`` value → ``{int: name}``; accepts a dataset.json (uses its ``labels``)."""
    obj = _parse_json_arg(text, "--labels")
    if isinstance(obj, dict) and "labels" in obj:
        obj = obj["labels"]
    if not isinstance(obj, dict) or not obj:
        raise CTSegError(f"--labels must be a JSON object like {{\"1\": \"liver\"}}, got {text!r}")
    try:
        return {int(k): str(v) for k, v in obj.items()}
    except (TypeError, ValueError):
        raise CTSegError(f"--labels: keys must be integers, got {list(obj)}") from None


def parse_regions(text: str) -> dict[str, tuple[int, ...]]:
    obj = _parse_json_arg(text, "--regions")
    try:
        if not isinstance(obj, dict):
            raise TypeError
        return {str(k): tuple(int(x) for x in v) for k, v in obj.items()}
    except (TypeError, ValueError):
        raise CTSegError(f"--regions must be a JSON object of integer lists, got {text!r}") from None


def _rows_to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..data.msd import MSDDataset, check_same_grid
    from ..data.nifti import load_nifti
    from ..io import ensure_not_inside, write_text_atomic
    from ..lesions import match_lesions
    from ..metrics import aggregate, evaluate_case, format_aggregate

    gt_root: Path = args.gt
    labels: dict[int, str] | None = parse_labels(args.labels) if args.labels else None
    if (gt_root / "dataset.json").is_file():
        ds = MSDDataset(gt_root)
        gt_files = {c.id: c.label for c in ds.cases if c.label is not None}
        labels = labels or ds.labels
    else:
        gt_files = _nifti_files(gt_root)
    if labels is None and getattr(args, "task", None):
        from ..tasks import get_task

        labels = get_task(args.task).labels
    if args.split:
        from ..datasets import load_split

        path, _, name = args.split.partition(":")
        name = name or "test"
        split = load_split(path)
        if name not in split:
            raise CTSegError(f"split has no entry {name!r} (entries: {sorted(split)})", path)
        unknown = sorted(set(split[name]) - set(gt_files))
        if unknown:
            raise CTSegError(f"split {name!r} lists case(s) without ground truth: {unknown[:5]}", path)
        gt_files = {k: v for k, v in gt_files.items() if k in set(split[name])}
    if not gt_files:
        raise CTSegError("no ground-truth label maps (*.nii.gz) found", gt_root)
    ensure_not_inside(args.out, gt_root, "metrics CSV")
    regions = parse_regions(args.regions) if args.regions else None
    pred_files = _nifti_files(args.pred)
    missing = sorted(set(gt_files) - set(pred_files))
    if missing and not args.allow_missing:
        raise CTSegError(f"no prediction for {len(missing)} ground-truth case(s): {missing[:5]} "
                         f"(use --allow-missing to count them as empty)", args.pred)
    extra = sorted(set(pred_files) - set(gt_files))
    if extra:
        print(f"note: ignoring {len(extra)} prediction(s) without ground truth: {extra[:5]}")

    if labels is None:  # no names given: every value present in some GT (a second read, small cost)
        found: set[int] = set()
        for gt_path in gt_files.values():
            found |= {int(v) for v in np.unique(load_nifti(gt_path, kind="label").array)}
        labels = {v: f"label_{v}" for v in sorted(found - {0})}

    lesion_labels = lesion_label_values(args, labels)
    matches: dict[int, list] = {v: [] for v in lesion_labels}
    rows: list[dict] = []
    for cid, gt_path in gt_files.items():
        gt = load_nifti(gt_path, kind="label")
        if cid in pred_files:
            pred = load_nifti(pred_files[cid], kind="label")
            check_same_grid(gt, pred)
            pred_arr = pred.array
        else:
            pred_arr = np.zeros_like(gt.array)
        rows += evaluate_case(pred_arr, gt.array, gt.spacing, labels, args.tolerance_mm, cid, regions)
        for v in lesion_labels:
            matches[v].append(match_lesions(pred_arr == v, gt.array == v, gt.spacing,
                                            merge_distance=args.merge_distance))
    write_text_atomic(args.out, _rows_to_csv(rows))
    print(format_aggregate(aggregate(rows)))
    for v in lesion_labels:
        print(format_lesion_summary(v, labels.get(v, f"label_{v}"), matches[v], rows))
    print(f"\n{len(gt_files)} case(s), NSD tolerance {args.tolerance_mm} mm; per-case metrics -> {args.out}")
    return 0


def lesion_label_values(args: argparse.Namespace, labels: dict[int, str]) -> list[int]:
    """The label values to evaluate lesion by lesion: ``--lesions``, else the ``--task``'s tumour labels."""
    text = getattr(args, "lesions", None)
    if text is None:
        task = getattr(args, "task", None)
        if not task:
            return []
        from ..tasks import get_task

        return [v for v in get_task(task).lesion_labels if v in labels]
    if text.strip().lower() == "none":
        return []
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise CTSegError(f"--lesions: expected comma-separated label values or 'none', got {text!r}") from None
    unknown = [v for v in values if v not in labels]
    if unknown:
        raise CTSegError(f"--lesions: label value(s) {unknown} not among the labels {labels}")
    return values


def format_lesion_summary(value: int, name: str, matches: list, rows: list[dict]) -> str:
    """Detection and segmentation of lesion label ``value`` over all scans, as printed by ``ctseg evaluate``.

    ``matches``: one :class:`~ctseg_lib.lesions.LesionMatch` per scan; ``rows``: the per-case metric rows
    (their ``dice`` of this label over the scans with a reference lesion gives the case-mean Dice).
    """
    import math

    import numpy as np

    from ..lesions import lesion_metrics

    m = lesion_metrics(matches)
    case_dice = [r["dice"] for r in rows if r["label"] == value and r["gt_voxels"] > 0]
    mean = float(np.mean(case_dice)) if case_dice else math.nan
    return (f"\nlesions of label {value} ({name}), {m['scans']} scans:\n"
            f"  detection:    {m['detected']}/{m['lesions']} lesions found (sensitivity {m['sensitivity']:.2f}), "
            f"{m['fp_per_scan']:.2f} false-positive lesions per scan, "
            f"{m['tumour_free_with_fp']}/{m['tumour_free_scans']} tumour-free scans with a false positive\n"
            f"  segmentation: Dice over detected lesions {m['detected_dice']:.3f}; case-mean Dice over the "
            f"{len(case_dice)} scans with a lesion {mean:.3f}")

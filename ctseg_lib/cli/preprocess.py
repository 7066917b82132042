"""``ctseg preprocess``: fill the disk cache with every training case of an MSD task.

Example::

    ctseg preprocess --data data/Task03_Liver --out cache/liver --spacing 1.5 1.5 3 \\
        --norm window:abdomen --size 128 --split 0
"""

from __future__ import annotations

import argparse

HELP = "preprocess every training case into a disk cache (resample, normalise, crop)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="MSD task folder (contains dataset.json)")
    p.add_argument("--out", required=True, help="cache folder (must be outside --data)")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("SX", "SY", "SZ"),
                   help="target voxel spacing in mm (default: keep each case's)")
    p.add_argument("--norm", default="window:abdomen",
                   help="window:PRESET | window:LEVEL,WIDTH | nnunet | minmax (default window:abdomen)")
    p.add_argument("--size", type=int, nargs="+", metavar="N",
                   help="in-plane slice size in voxels: one value (square) or two")
    p.add_argument("--crop-body", action="store_true", help="crop each scan to the body bounding box")
    p.add_argument("--split", type=int, metavar="SEED",
                   help="also write OUT/split.json: a patient-level train/val/test split with this seed")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--test-fraction", type=float, default=0.2)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..cache import CaseCache
    from ..data.msd import MSDDataset
    from ..datasets import save_split, split_cases
    from ..errors import CTSegError
    from ..io import ensure_not_inside, write_json_atomic
    from ..preprocessing import CTNormalizer, PreprocessParams

    ds = MSDDataset(args.data)
    out = Path(args.out)
    ensure_not_inside(out, ds.root, "the cache")
    size = args.size
    if size is not None and len(size) not in (1, 2):
        raise CTSegError(f"--size takes one or two values, got {len(size)}")
    params = PreprocessParams(target_spacing=args.spacing, normalization=args.norm,
                              slice_size=None if size is None else (size[0], size[-1]),
                              crop_to_body=args.crop_body)
    split = None
    if args.split is not None:
        split = split_cases(ds.case_ids, args.val_fraction, args.test_fraction, args.split)
    normalizer = None
    if params.intensity_mode()[0] == "nnunet":
        # Fit on training cases only (the whole list if no split was asked for).
        fit_ids = split["train"] if split else ds.case_ids
        print(f"fitting the nnU-Net CT normaliser on {len(fit_ids)} case(s) ...", flush=True)
        pairs = [ds.load_case(i) for i in fit_ids]
        normalizer = CTNormalizer.fit([p[0].array for p in pairs], [p[1].array for p in pairs])
        del pairs
        write_json_atomic(out / "normalizer.json", normalizer.to_dict())
    cache = CaseCache(out, params, normalizer, dataset=ds)
    for case in ds.cases:
        hits = cache.hits
        pre = cache.get(case)
        before = tuple(pre.meta["original_shape"])
        status = "cached" if cache.hits > hits else "built"
        sp = ", ".join(f"{s:.2f}" for s in pre.spacing)
        print(f"{case.id}: {before} -> {tuple(pre.image.shape)} voxels, spacing ({sp}) mm [{status}]", flush=True)
    write_json_atomic(out / "params.json", params.to_dict())
    if split is not None:
        save_split(split, out / "split.json")
        print(f"split (seed {args.split}): " + ", ".join(f"{k} {len(v)}" for k, v in split.items())
              + f" -> {out / 'split.json'}")
    print(f"{len(ds.cases)} case(s): {cache.misses} built, {cache.hits} from cache, in {out}")
    return 0

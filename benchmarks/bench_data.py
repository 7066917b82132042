"""Benchmark 4: the data path, ctseg vs MONAI transforms; and training slices/s from the case cache.

(a) One CT volume, int16 ``.nii.gz`` stored **LPS** (so reorientation has work to do), spacing
0.78×0.78×2.0 mm → canonical RAS → window W400/L40 to [0, 1] → resampled to 1.5×1.5×3.0 mm.

* ctseg: ``load_nifti`` + ``preprocess_case(PreprocessParams(target_spacing, "window:abdomen"))``.
* MONAI: ``LoadImage(NibabelReader, ensure_channel_first)`` → ``Orientation("RAS")`` →
  ``ScaleIntensityRange(-160, 240, 0, 1, clip=True)`` → ``Spacing(pixdim, bilinear)`` (window before
  resampling, the order ctseg uses, so the two compute the same thing).

Agreement: shapes equal within one voxel per axis, and mean |Δ| over the common box small.  The
grids differ by design: ctseg keeps the *field of view* (outer voxel corners fixed, like
``F.interpolate(align_corners=False)``), MONAI's ``Spacing`` keeps the *first voxel centre* fixed,
so the two samplings are offset by up to half an output voxel; values agree only where intensity
is locally linear.

(b) Slices/s: ``CaseCache`` (memory-mapped ``.npy``, slice-major) → ``SliceDataset`` (2D and
2.5D k=3) → ``DataLoader(batch_size=16, shuffle=True, num_workers=2)``.  MONAI has no axial-slice dataset with
the same semantics (``CacheDataset`` + ``RandSpatialCropd`` with a ``(X, Y, 1)`` ROI is the closest,
but it holds whole volumes in RAM instead of reading one slice), so this row is absolute.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from common import Result, alternate, choose_threads, from_times, median

SRC_SPACING = (0.78, 0.78, 2.0)
TARGET = (1.5, 1.5, 3.0)
LEVEL, WIDTH = 40.0, 400.0


def sizes(quick: bool) -> dict:
    """Full: 512×512×200 (MSD liver-like).  Quick: 256×256×64."""
    return {"shape": (256, 256, 64), "repeats": 3, "batches": 10} if quick else \
        {"shape": (512, 512, 200), "repeats": 3, "batches": 20}


def write_case(root: Path, shape: tuple[int, int, int]) -> Path:
    """An MSD-layout folder with one int16 CT-like case stored LPS (reused if already there)."""
    from ctseg_lib.data.nifti import save_nifti

    task = root / f"Task99_Bench_{'x'.join(map(str, shape))}"
    if (task / "dataset.json").is_file():
        return task
    rng = np.random.default_rng(0)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij")
    body = (x / 0.8) ** 2 + (y / 0.6) ** 2 <= 1
    liver = ((x - 0.3) / 0.35) ** 2 + (y / 0.3) ** 2 + (z / 0.7) ** 2 <= 1
    hu = np.full(shape, -1000, np.float32)
    hu[body] = 40
    hu[liver] = 100
    hu += rng.normal(0, 15, shape).astype(np.float32)
    lab = liver.astype(np.uint8)
    aff = np.diag([-SRC_SPACING[0], -SRC_SPACING[1], SRC_SPACING[2], 1.0])  # LPS storage
    (task / "imagesTr").mkdir(parents=True, exist_ok=True)
    (task / "labelsTr").mkdir(exist_ok=True)
    save_nifti(task / "imagesTr" / "bench_0.nii.gz", hu.astype(np.int16), aff)
    save_nifti(task / "labelsTr" / "bench_0.nii.gz", lab, aff)
    meta = {"name": "Bench", "labels": {"0": "background", "1": "liver"}, "modality": {"0": "CT"},
            "training": [{"image": "./imagesTr/bench_0.nii.gz", "label": "./labelsTr/bench_0.nii.gz"}]}
    (task / "dataset.json").write_text(json.dumps(meta))
    return task


def run(quick: bool = False, workdir: str | Path | None = None) -> list[Result]:
    from monai.data import NibabelReader
    from monai.transforms import Compose, LoadImage, Orientation, ScaleIntensityRange, Spacing
    from torch.utils.data import DataLoader

    from ctseg_lib.cache import CaseCache
    from ctseg_lib.data.msd import MSDDataset
    from ctseg_lib.data.nifti import load_nifti
    from ctseg_lib.datasets import SliceDataset
    from ctseg_lib.preprocessing import PreprocessParams, preprocess_case

    s = sizes(quick)
    root = Path(workdir or Path(tempfile.gettempdir()) / "ctseg_bench_data")
    task = write_case(root, s["shape"])
    ds = MSDDataset(task)
    path = ds.cases[0].image
    params = PreprocessParams(target_spacing=TARGET, normalization=f"window:{LEVEL:g},{WIDTH:g}")

    def ctseg() -> np.ndarray:
        return preprocess_case(load_nifti(path), None, params).image

    monai_pipe = Compose([
        LoadImage(reader=NibabelReader(), image_only=True, ensure_channel_first=True),
        Orientation(axcodes="RAS"),
        ScaleIntensityRange(a_min=LEVEL - WIDTH / 2, a_max=LEVEL + WIDTH / 2, b_min=0.0, b_max=1.0, clip=True),
        Spacing(pixdim=TARGET, mode="bilinear"),
    ])

    def monai() -> np.ndarray:
        return np.asarray(monai_pipe(str(path)))[0]

    a, b = ctseg(), monai()
    common = tuple(min(p, q) for p, q in zip(a.shape, b.shape))
    box = tuple(slice(0, c) for c in common)
    mad = float(np.abs(a[box] - b[box].astype(np.float32)).mean())
    if max(abs(p - q) for p, q in zip(a.shape, b.shape)) > 1 or not mad < 0.05:
        from common import AgreementError

        raise AgreementError(f"data path: shapes {a.shape} vs {b.shape}, mean |Δ| {mad:.3g}")
    times = alternate({"ctseg": ctseg, "monai": monai}, s["repeats"], warmup=0)
    size = f"{'×'.join(map(str, s['shape']))} int16 .nii.gz (LPS) → {'×'.join(map(str, a.shape))}"
    results = [from_times("data: load+RAS+window+resample", times,
                          f"shape {a.shape} vs {b.shape}, mean |Δ| {mad:.1e}", size=size)]

    # (b) slices/s from the memory-mapped cache.
    cache = CaseCache(root / "cache", PreprocessParams(normalization="window:abdomen", slice_size=(256, 256)),
                      dataset=ds)
    t0 = time.perf_counter()
    pre = cache.get(ds.cases[0])
    build_s = time.perf_counter() - t0
    for context, label in ((0, "2D"), (1, "2.5D k=3")):
        sds = SliceDataset([pre], context=context, fg_fraction=0.33, samples_per_epoch=16 * s["batches"])
        # Worker processes run with one intra-op thread each: on a busy machine, collating a batch
        # (torch.stack) with 2 OpenMP threads in the main process measured 25× slower than with one.
        loader = DataLoader(sds, batch_size=16, shuffle=True, num_workers=2)
        rates = []
        for _ in range(s["repeats"]):
            t0 = time.perf_counter()
            n = sum(x.shape[0] for x, _ in loader)
            rates.append(time.perf_counter() - t0)
        per_slice = median(rates) / n
        results.append(Result(f"data: slices/s {label} (cache→DataLoader)", per_slice, float("nan"),
                              f"{1 / per_slice:,.0f} slices/s (absolute, no MONAI equivalent)", unit="s/slice",
                              size="256×256 slices, batch 16, num_workers=2",
                              extra={"slices_per_s": 1 / per_slice, "cache_build_s": build_s, "runs": rates}))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    choose_threads()
    for r in run(ap.parse_args().quick):
        print(r.name, "|", r.size, f"| ctseg {r.ctseg_s:.4g} MONAI {r.monai_s:.4g} ratio {r.ratio:.2f} |", r.agreement)


if __name__ == "__main__":
    main()

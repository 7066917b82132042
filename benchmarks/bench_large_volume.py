"""Benchmark: peak memory and time of slice-wise prediction on a full-size CT (issue 18).

    python benchmarks/bench_large_volume.py                   # 512 x 512 x 745 (minutes on 2 cores)
    python benchmarks/bench_large_volume.py --slices 64       # a quick look
    python benchmarks/bench_large_volume.py --variants streaming,monai --threads 2

Each variant runs in its **own process** (peak RSS from ``getrusage`` is per process and never
goes down, so sharing one process would charge one variant's peak to the next).  Rows:

* ``ctseg streaming`` — :func:`ctseg_lib.inference.predict_case` as ``ctseg predict`` runs it:
  batches of slices are restored to the original grid and reduced to uint8 labels at once.
* ``ctseg before`` — the previous code path: the whole ``(C, X, Y, Z)`` float32 softmax volume, then
  ``preprocessing.restore`` of all of it, then ``argmax`` (what measured 7.5 GB on a real scan).
* ``MONAI`` — the same network through ``monai.inferers.SliceInferer`` (MONAI's
  ``sliding_window_inference`` over axial slices, one window = one whole slice), then the same
  restore + argmax; skipped when MONAI is not installed.

Input: a synthetic body (ellipse of soft tissue + noise, FOV padding of -3024 outside the scanned
circle) in HU float32, as ``load_nifti`` returns it; the network is the ``liver_2d`` preset's UNet
(16 base channels, depth 4, random weights: the cost does not depend on the weights).  Every
variant starts from the same in-memory volume, so the image itself (1 GiB at 512 x 512 x 745
float32) is part of each peak.

Measured (2026-11-29, shared 2-core machine, 1 torch thread, 512 x 512 x 745, batch 32):

| variant | peak RSS | seconds |
|---|---:|---:|
| ctseg streaming | **3.73 GB** | 167 (load ~1), 251 (load ~6) |
| ctseg before | 8.77 / 8.87 GB | 192 / 390 (load 4-6) |
| MONAI SliceInferer + restore | 9.32 / 9.37 GB | 139 (load ~0.2), 227-244 (load 4-6) |

Separate processes run one after the other, so the seconds follow the machine's load (given in
brackets) more than the code; peak RSS does not.  For speed, the same paths alternated in one
process (A B B A ..., 512 x 512 x 64, load < 1): streaming 9.3 s vs MONAI 10.7 s (median of 4),
streaming 8.9 s vs before 10.2 s (512 x 512 x 48, median of 3).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VARIANTS = ("streaming", "before", "monai")


def make_volume(shape: tuple[int, int, int], seed: int = 0):
    import numpy as np

    from ctseg_lib.data.nifti import Volume

    rng = np.random.default_rng(seed)
    X, Y, Z = shape
    x, y = np.meshgrid(np.linspace(-1, 1, X, dtype=np.float32), np.linspace(-1, 1, Y, dtype=np.float32),
                       indexing="ij")
    inside = (x / 0.8) ** 2 + (y / 0.6) ** 2 < 1
    outside_fov = np.hypot(x, y) > 1.0
    hu = np.empty(shape, np.float32)
    for k in range(Z):  # slice by slice: no float64 temporaries of the whole volume
        s = np.full((X, Y), -1000.0, np.float32)
        s[inside] = 50 + 40 * np.sin(6 * x[inside] + k / 20) + rng.normal(0, 20, int(inside.sum()))
        s[outside_fov] = -3024
        hu[:, :, k] = s
    aff = np.diag([0.7, 0.7, 1.0, 1.0])
    return Volume(hu, aff, (0.7, 0.7, 1.0), aff, shape, None)


def model_and_config():
    import torch

    from ctseg_lib.checkpoint import build_model
    from ctseg_lib.config import TrainConfig

    cfg = TrainConfig.from_file(HERE.parent / "ctseg_lib" / "configs" / "liver_2d.yaml")
    torch.manual_seed(0)
    model = build_model(cfg, 3).to(memory_format=torch.channels_last).eval()
    meta = {"preprocess": cfg.data.preprocess_params().to_dict(), "normalizer": None}
    return model, cfg, meta


def one(variant: str, shape: tuple[int, int, int], threads: int, batch: int) -> dict:
    """Run one variant in this process; returns seconds (prediction only) and peak RSS (whole process)."""
    import numpy as np
    import torch

    from ctseg_lib.inference import predict_case, predict_volume
    from ctseg_lib.preprocessing import PreprocessParams, preprocess_case, restore

    torch.set_num_threads(threads)
    vol = make_volume(shape)
    model, cfg, meta = model_and_config()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    if variant == "streaming":
        labels = predict_case(model, cfg, meta, vol, batch_size=batch)
    else:
        pre = preprocess_case(vol, None, PreprocessParams.from_dict(meta["preprocess"]))
        if variant == "before":
            probs = predict_volume(model, pre.image, cfg.model.context, batch)
        else:
            from monai.inferers import SliceInferer

            inferer = SliceInferer(roi_size=pre.image.shape[:2], sw_batch_size=batch, spatial_dim=2,
                                   progress=False)
            pad = int(getattr(model, "size_divisor", 1))
            img = torch.from_numpy(np.ascontiguousarray(pre.image))[None, None]
            sx, sy = img.shape[2:4]
            px, py = -(-sx // pad) * pad - sx, -(-sy // pad) * pad - sy

            def net(x):  # same padding to the size divisor as ctseg, then crop back
                x = torch.nn.functional.pad(x, (0, py, 0, px), mode="replicate")
                return torch.softmax(model(x.contiguous(memory_format=torch.channels_last)), 1)[:, :, :sx, :sy]

            with torch.inference_mode():
                probs = inferer(img, net)[0].numpy()
        labels = restore(probs, pre.meta).argmax(0).astype(np.uint8)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"variant": variant, "shape": list(shape), "seconds": round(seconds, 1),
            "peak_rss_gb": round(peak / 1e9, 2), "rss_before_gb": round(base / 1e9, 2),
            "foreground_voxels": int((labels > 0).sum()), "threads": threads}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=745)
    ap.add_argument("--size", type=int, default=512, help="in-plane voxels (square)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32, help="slices per forward pass (liver_2d's val_batch_size)")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run this variant here, print JSON
    args = ap.parse_args(argv)
    shape = (args.size, args.size, args.slices)
    if args.one:
        print(json.dumps(one(args.one, shape, args.threads, args.batch)))
        return 0
    rows = []
    for v in [v.strip() for v in args.variants.split(",") if v.strip()]:
        if v == "monai":
            try:
                import monai  # noqa: F401
            except ImportError:
                print("MONAI not installed: skipping its row", file=sys.stderr)
                continue
        cmd = [sys.executable, str(Path(__file__).resolve()), "--one", v, "--slices", str(args.slices),
               "--size", str(args.size), "--threads", str(args.threads), "--batch", str(args.batch)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            rows.append({"variant": v, "error": (res.stderr.strip().splitlines() or ["?"])[-1]})
        else:
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"\nvolume {shape[0]} x {shape[1]} x {shape[2]}, liver_2d UNet, {args.threads} threads\n")
    print("| variant | seconds | peak RSS (GB) |\n|---|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['variant']} | failed: {r['error']} | |")
        else:
            print(f"| {r['variant']} | {r['seconds']} | {r['peak_rss_gb']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

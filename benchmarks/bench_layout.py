"""2D inference in NCHW vs NHWC (``channels_last``): the choice behind ``load_model`` / ``predict_volume``.

    python benchmarks/bench_layout.py              # 1 thread and all threads, book-model size
    python benchmarks/bench_layout.py --threads 2

Times :func:`ctseg_lib.inference.predict_volume` of a U-Net the size of the book's liver model
(16 base channels, depth 4, 3 classes) on a 160×128×120 volume, batch 32, with the weights and the
input slices in either layout (best of ``--repeats`` after one warm-up).  Weights are random: the
time does not depend on their values.  Checks that both layouts give the same probabilities.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ctseg_lib.inference import predict_volume
from ctseg_lib.models.unet import UNet


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up: oneDNN picks and caches its kernels
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def run(threads: int, repeats: int = 2, shape: tuple[int, int, int] = (160, 128, 120)) -> dict[str, float]:
    """Seconds per volume for NCHW and NHWC weights (predict_volume always sends NHWC slices)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    vol = np.random.default_rng(0).random(shape, dtype=np.float32)
    net = UNet(2, 1, 3, base_channels=16, depth=4).eval()
    nchw = best_time(lambda: predict_volume(net, vol, batch_size=32), repeats)
    ref = predict_volume(net, vol, batch_size=32)
    net = net.to(memory_format=torch.channels_last)
    nhwc = best_time(lambda: predict_volume(net, vol, batch_size=32), repeats)
    diff = float(np.abs(predict_volume(net, vol, batch_size=32) - ref).max())
    if diff > 1e-4:
        raise AssertionError(f"NHWC and NCHW probabilities differ by {diff:.2e}")
    return {"threads": threads, "nchw_s": nchw, "nhwc_s": nhwc, "speedup": nchw / nhwc, "max_abs_diff": diff}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, nargs="*", default=None, help="default: 1 and all cores")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    for n in args.threads or sorted({1, torch.get_num_threads()}):
        r = run(n, args.repeats)
        print(f"{r['threads']} thread(s): NCHW weights {r['nchw_s']:.2f} s, NHWC weights {r['nhwc_s']:.2f} s per "
              f"volume → {r['speedup']:.2f}×; max |Δp| {r['max_abs_diff']:.1e}")


if __name__ == "__main__":
    main()

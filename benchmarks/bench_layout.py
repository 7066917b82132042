"""2D inference in NCHW vs NHWC (``channels_last``): the choice behind ``load_model`` / ``predict_volume``.

    python benchmarks/bench_layout.py              # 1 thread and all threads, book-model size
    python benchmarks/bench_layout.py --threads 2

Times :func:`ctseg_lib.inference.predict_volume` of a U-Net the size of the book's liver model
(16 base channels, depth 4, 3 classes) on a 160×128×120 volume, batch 32, with the weights and the
input slices in either layout (median of ``--repeats`` alternated runs after one warm-up, the
method of ``common.py``).  Weights are random: the
time does not depend on their values.  Checks that both layouts give the same probabilities.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch
from common import alternate, median

from ctseg_lib.inference import predict_volume
from ctseg_lib.models.unet import UNet


def run(threads: int, repeats: int = 2, shape: tuple[int, int, int] = (160, 128, 120)) -> dict[str, float]:
    """Median seconds per volume with NCHW and NHWC weights (predict_volume always sends NHWC slices),
    timed alternately after one warm-up (``common.alternate``)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    vol = np.random.default_rng(0).random(shape, dtype=np.float32)
    nchw = UNet(2, 1, 3, base_channels=16, depth=4).eval()
    nhwc = copy.deepcopy(nchw).to(memory_format=torch.channels_last)
    times = alternate({"nchw": lambda: predict_volume(nchw, vol, batch_size=32),
                       "nhwc": lambda: predict_volume(nhwc, vol, batch_size=32)}, repeats)
    diff = float(np.abs(predict_volume(nhwc, vol, batch_size=32) - predict_volume(nchw, vol, batch_size=32)).max())
    if diff > 1e-4:
        raise AssertionError(f"NHWC and NCHW probabilities differ by {diff:.2e}")
    t_nchw, t_nhwc = median(times["nchw"]), median(times["nhwc"])
    return {"threads": threads, "nchw_s": t_nchw, "nhwc_s": t_nhwc, "speedup": t_nchw / t_nhwc,
            "max_abs_diff": diff}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, nargs="*", default=None, help="default: 1 and all cores")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    for n in args.threads or sorted({1, torch.get_num_threads()}):
        r = run(n, args.repeats)
        print(f"{r['threads']} thread(s): NCHW weights {r['nchw_s']:.2f} s, NHWC weights {r['nhwc_s']:.2f} s per "
              f"volume → {r['speedup']:.2f}×; max |Δp| {r['max_abs_diff']:.1e}")


if __name__ == "__main__":
    main()

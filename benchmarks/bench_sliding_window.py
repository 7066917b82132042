"""Benchmark 2: 3D Gaussian sliding-window inference, ctseg vs ``monai.inferers.sliding_window_inference``.

Same network weights (a small 3D ctseg UNet in eval mode), same volume, same ROI, overlap 0.5,
σ = ROI/8, same ``sw_batch_size``.  MONAI blends the raw predictor output, so its predictor is
``softmax(net(x))`` (ctseg blends probabilities).

Window placement is identical here: MONAI's ``dense_patch_slices`` steps by ``int(roi·(1-overlap))``
and moves the last window flush with the border; ctseg spreads the windows evenly between the first
and the flush last one (nnU-Net), which is the same grid whenever ``(size - roi)`` is a multiple of
the step (256 and 128 with roi 64 and step 32).

Gaussian weights differ in one detail (``monai.data.utils.compute_importance_map``): MONAI clamps the
map from below at 1e-3 (of an un-normalised Gaussian), ctseg (like nnU-Net) only replaces exact
zeros by the smallest positive value.  With σ = 64/8 = 8 a corner voxel of a window has weight
≈ 4e-4³, so MONAI gives window corners relatively *more* weight.  The agreement check therefore
runs MONAI with ctseg's map (``roi_weight_map=``) and requires max |Δ| ≤ 1e-4; the difference with
MONAI's own map is reported next to it.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import Result, alternate, check, choose_threads, median, peak_rss_delta


def sizes(quick: bool) -> dict:
    """Full: 256×256×128 volume, roi 64³ (147 windows).  Quick: 64×64×48, roi 32³ (18 windows).

    The network is a UNet(base 4, depth 2): its cost is identical on both sides, so a small one
    leaves the part that differs (window extraction, weighting, blending) a larger share."""
    if quick:
        return {"shape": (64, 64, 48), "roi": (32, 32, 32), "base": 4, "depth": 2, "sw_batch": 4, "repeats": 3}
    return {"shape": (256, 256, 128), "roi": (64, 64, 64), "base": 4, "depth": 2, "sw_batch": 4, "repeats": 3}


def run(quick: bool = False) -> list[Result]:
    from monai.inferers import sliding_window_inference as monai_swi

    from ctseg_lib.inference import gaussian_importance_map, sliding_window_inference
    from ctseg_lib.models.unet import UNet

    s = sizes(quick)
    torch.manual_seed(0)
    net = UNet(3, 1, 3, base_channels=s["base"], depth=s["depth"], norm="batch").eval()
    vol = torch.randn(1, *s["shape"], generator=torch.Generator().manual_seed(1))

    def predictor(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(net(x), dim=1)

    def ctseg() -> torch.Tensor:
        return sliding_window_inference(net, vol, s["roi"], overlap=0.5, sigma_scale=0.125,
                                        sw_batch_size=s["sw_batch"])

    def monai(weight_map: torch.Tensor | None = None) -> torch.Tensor:
        with torch.inference_mode():
            return monai_swi(vol[None], s["roi"], s["sw_batch"], predictor, overlap=0.5, mode="gaussian",
                             sigma_scale=0.125, roi_weight_map=weight_map)[0]

    # Untimed warm-up on one window (oneDNN creates its convolution primitives on first use).
    warm = vol[(slice(None), *[slice(0, r) for r in s["roi"]])]
    sliding_window_inference(net, warm, s["roi"], sw_batch_size=s["sw_batch"])
    with torch.inference_mode():
        monai_swi(warm[None], s["roi"], s["sw_batch"], predictor, mode="gaussian")
    # The memory-measuring runs are timed too (A B), then the timed rounds continue B A, A B, ...
    t0 = time.perf_counter()
    ours, mem_c = peak_rss_delta(ctseg)
    t1 = time.perf_counter()
    theirs, mem_m = peak_rss_delta(monai)
    t2 = time.perf_counter()
    same_map = monai(gaussian_importance_map(s["roi"], 0.125))
    diff_same = float((ours - same_map).abs().max())
    diff_own = float((ours - theirs).abs().max())
    check("sliding window (same weight map)", diff_same, 1e-4)
    times = alternate({"monai": monai, "ctseg": ctseg}, s["repeats"] - 1, warmup=0)
    times = {"ctseg": [t1 - t0, *times["ctseg"]], "monai": [t2 - t1, *times["monai"]]}
    n_win = 1
    for n, r in zip(s["shape"], s["roi"]):
        n_win *= (n - r) // (r // 2) + 1
    size = f"{'×'.join(map(str, s['shape']))}, roi {s['roi'][0]}³, {n_win} windows"
    return [Result("sliding window 3D (Gaussian)", median(times["ctseg"]), median(times["monai"]),
                   f"max |Δ| {diff_same:.1e} (same map), {diff_own:.1e} (MONAI's map)", size=size,
                   extra={"runs": times, "peak_rss_mb": {"ctseg": mem_c / 2**20, "monai": mem_m / 2**20},
                          "max_abs_diff_same_map": diff_same, "max_abs_diff_monai_map": diff_own})]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    choose_threads()
    for r in run(ap.parse_args().quick):
        print(r.name, r.size, f"ctseg {r.ctseg_s:.3f}s MONAI {r.monai_s:.3f}s ratio {r.ratio:.2f}", r.agreement,
              r.extra["peak_rss_mb"])


if __name__ == "__main__":
    main()

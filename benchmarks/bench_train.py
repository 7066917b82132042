"""Benchmark 1: one 2D / 2.5D U-Net training step (forward + backward + Adam), ctseg vs MONAI.

Models at equal width, depth and normalisation:

* ``ctseg`` — :class:`ctseg_lib.models.unet.UNet` (two 3×3 conv + BN + LeakyReLU per level,
  2×2 max-pool down, 2×2 transposed conv up), ``depth=5``.
* ``monai_basic`` — ``monai.networks.nets.BasicUNet``: the *same* design (TwoConv, max-pool,
  deconv, 5 levels).  One difference: its last up-sampling keeps ``2·base`` channels instead of
  halving them, so it has slightly more parameters and FLOPs (both are reported).
* ``monai_unet`` — ``monai.networks.nets.UNet(channels=…, strides=2…, num_res_units=0)``: the
  design the issue names, but a *different* network: one strided 3×3 conv per encoder level and
  one strided 3×3 transposed conv (+ a conv) per decoder level, so roughly half the convolutions.
  Its time ratio is therefore partly architecture; the GFLOP/s column is the fair comparison.

Outputs cannot agree numerically (different random initialisations and layer layouts), so the
check is: same output shape and a finite loss for all three.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from common import AgreementError, Result, alternate, choose_threads, matmul_ceiling, median
from torch.utils.flop_counter import FlopCounterMode

LEAKY = ("LeakyReLU", {"negative_slope": 0.01, "inplace": True})


def sizes(quick: bool) -> dict:
    """Full: batch 16 of 256×256, base 8.  Quick: 4 of 64×64, base 8.

    Base 8 keeps the full run under 10 minutes on 2 shared cores (base 32, the library default,
    is 16× the FLOPs: ~20 s per step here).  FLOPs scale with width², so achieved GFLOP/s at base 8
    are a *lower* bound for wider networks, whose convolutions use the cores better.
    """
    if quick:
        return {"batch": 4, "side": 64, "base": 8, "depth": 5, "repeats": 3}
    return {"batch": 16, "side": 256, "base": 8, "depth": 5, "repeats": 3}


def build_models(in_ch: int, out_ch: int, base: int, depth: int = 5) -> dict[str, torch.nn.Module]:
    """``{"ctseg", "monai_basic", "monai_unet"}`` at equal width/depth, batch norm, LeakyReLU(0.01)."""
    from monai.networks.nets import BasicUNet
    from monai.networks.nets import UNet as MonaiUNet

    from ctseg_lib.models.unet import UNet

    chans = tuple(base * 2**i for i in range(depth))
    torch.manual_seed(0)
    models = {
        "ctseg": UNet(2, in_ch, out_ch, base_channels=base, depth=depth, norm="batch", max_channels=chans[-1]),
        "monai_unet": MonaiUNet(2, in_ch, out_ch, channels=chans, strides=(2,) * (depth - 1), num_res_units=0,
                                act=LEAKY, norm="batch"),
    }
    if depth == 5:  # BasicUNet has exactly 5 levels
        models["monai_basic"] = BasicUNet(2, in_ch, out_ch, features=(*chans, base), act=LEAKY,
                                          norm=("batch", {"affine": True}), bias=False)
    return models


def make_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    """A closure doing one Adam step with cross-entropy (the same loss for every model)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def step_flops(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """FLOPs of forward + backward (convolutions/matmuls, as counted by ``FlopCounterMode``)."""
    with FlopCounterMode(display=False) as fc:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return int(fc.get_total_flops())


def run(quick: bool = False, channels_last: bool = True, compile_: bool = False) -> list[Result]:
    s = sizes(quick)
    ceiling = matmul_ceiling(1024 if quick else 2048)
    results = []
    for in_ch, label in ((1, "2D"), (3, "2.5D")):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(s["batch"], in_ch, s["side"], s["side"], generator=g)
        y = torch.randint(0, 3, (s["batch"], s["side"], s["side"]), generator=g)
        models = build_models(in_ch, 3, s["base"], s["depth"])
        if in_ch == 3:
            models.pop("monai_unet")  # first-layer change only; one architecture-mismatched row is enough
        params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
        flops = {k: step_flops(m, x, y) for k, m in models.items()}
        shapes = set()
        for m in models.values():
            m.eval()
            with torch.no_grad():
                shapes.add(tuple(m(x[:1]).shape))
        if len(shapes) != 1:
            raise AgreementError(f"train {label}: output shapes differ {shapes}")
        fns = {k: make_step(m, x, y) for k, m in models.items()}
        if channels_last and in_ch == 1:
            import copy

            m_cl = copy.deepcopy(models["ctseg"]).to(memory_format=torch.channels_last)
            fns["ctseg_cl"] = make_step(m_cl, x.contiguous(memory_format=torch.channels_last), y)
            flops["ctseg_cl"], params["ctseg_cl"] = flops["ctseg"], params["ctseg"]
        compile_s = None
        if compile_:
            import copy
            import time

            m_c = torch.compile(copy.deepcopy(models["ctseg"]))
            fns["ctseg_compiled"] = make_step(m_c, x, y)
            t0 = time.perf_counter()
            fns["ctseg_compiled"]()
            compile_s = time.perf_counter() - t0
            flops["ctseg_compiled"], params["ctseg_compiled"] = flops["ctseg"], params["ctseg"]
        losses = {k: f() for k, f in fns.items()}  # warm-up step, also the agreement check
        bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
        if bad:
            raise AgreementError(f"train {label}: non-finite loss {bad}")
        times = alternate(fns, s["repeats"], warmup=0)
        med = {k: median(v) for k, v in times.items()}
        gflops = {k: flops[k] / med[k] / 1e9 for k in med}
        size = f"{s['batch']}×{in_ch}×{s['side']}² base {s['base']} depth {s['depth']}"
        common = {"runs": times, "params": params, "gflop_per_step": {k: v / 1e9 for k, v in flops.items()},
                  "gflops_achieved": gflops, "matmul_ceiling_gflops": ceiling,
                  "samples_per_s": {k: s["batch"] / v for k, v in med.items()}, "compile_warmup_s": compile_s}
        agree = f"same shape, finite loss; params ctseg {params['ctseg']:,}"
        for ref in ("monai_basic", "monai_unet"):
            if ref not in models:
                continue
            r = Result(f"train step {label} vs {ref}", med["ctseg"], med[ref],
                       agree + f" / MONAI {params[ref]:,}", size=size, extra=common)
            results.append(r)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow warm-up)")
    a = ap.parse_args()
    choose_threads()
    for r in run(a.quick, compile_=a.compile):
        e = r.extra
        print(f"{r.name}: ctseg {r.ctseg_s:.3f}s MONAI {r.monai_s:.3f}s ratio {r.ratio:.2f} | "
              f"GFLOP/s {({k: round(v, 1) for k, v in e['gflops_achieved'].items()})} "
              f"ceiling {e['matmul_ceiling_gflops']:.1f} compile warm-up {e['compile_warmup_s']}")


if __name__ == "__main__":
    main()

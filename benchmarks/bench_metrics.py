"""Benchmark 3: Dice, HD95 and NSD on a liver-sized pair with anisotropic spacing, ctseg vs MONAI.

Inputs: a smooth random blob as ground truth (about the size of a liver) and a prediction that is
the same blob eroded/dilated in places, on a 256×256×96 grid with spacing (0.8, 0.8, 2.5) mm.
MONAI gets one-channel ``(1, 1, X, Y, Z)`` float tensors (its layout for binary masks),
``include_background=True``.

Why ctseg is faster (see ``ctseg_lib/surface.py``): it works on the bounding box of the two masks
and queries a k-d tree of the surface voxels, while MONAI runs a Euclidean distance transform of
the whole volume per direction.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import Result, alternate, check, choose_threads, from_times
from scipy import ndimage

SPACING = (0.8, 0.8, 2.5)
TOL_MM = 2.0
#: HD95 agreement with MONAI (mm), as in tests/test_monai_agreement.py.
HD95_ATOL_MM = 1e-4


def sizes(quick: bool) -> dict:
    """Full: 256×256×96.  Quick: 128×128×48."""
    return {"shape": (128, 128, 48), "repeats": 3} if quick else {"shape": (256, 256, 96), "repeats": 5}


def make_pair(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(pred, gt)`` boolean masks: a smooth blob and a locally perturbed copy."""
    rng = np.random.default_rng(seed)
    small = tuple(max(4, s // 4) for s in shape)
    field = ndimage.gaussian_filter(rng.normal(size=small), 2.0)
    field = ndimage.zoom(field, [s / t for s, t in zip(shape, small)], order=1)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    ellipsoid = 1 - (x / 0.6) ** 2 - (y / 0.5) ** 2 - (z / 0.8) ** 2
    gt = ellipsoid + 3 * field > 0
    noise = ndimage.zoom(rng.normal(size=small), [s / t for s, t in zip(shape, small)], order=1)
    pred = np.where(noise > 0.5, ndimage.binary_dilation(gt, iterations=2),
                    np.where(noise < -0.5, ndimage.binary_erosion(gt, iterations=2), gt))
    return pred, gt


def run(quick: bool = False) -> list[Result]:
    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

    from ctseg_lib.metrics import dice, hd95, nsd

    s = sizes(quick)
    pred, gt = make_pair(s["shape"])
    pt, gtt = (torch.as_tensor(m[None, None].astype(np.float32)) for m in (pred, gt))
    size = f"{'×'.join(map(str, s['shape']))}, spacing {SPACING} mm"
    pairs = {
        "Dice": (lambda: dice(pred, gt),
                 lambda: float(compute_dice(pt, gtt, include_background=True)), 1e-6),
        "HD95": (lambda: hd95(pred, gt, SPACING),
                 lambda: float(compute_hausdorff_distance(pt, gtt, include_background=True, percentile=95,
                                                          spacing=list(SPACING))),
                 # same definition and the same distances: they agree to float rounding (~2e-7 mm); a
                 # looser bound (it was half a voxel diagonal) let a wrong HD95 definition pass
                 HD95_ATOL_MM),
        f"NSD@{TOL_MM:g}mm": (lambda: nsd(pred, gt, SPACING, TOL_MM),
                              lambda: float(compute_surface_dice(pt, gtt, class_thresholds=[TOL_MM],
                                                                 include_background=True,
                                                                 spacing=list(SPACING))), 1e-6),
    }
    results = []
    for name, (ours, theirs, tol) in pairs.items():
        a, b = ours(), theirs()
        check(name, a - b, tol)
        times = alternate({"ctseg": ours, "monai": theirs}, s["repeats"], warmup=0)
        results.append(from_times(f"metric {name}", times, f"ctseg {a:.6g} vs MONAI {b:.6g} (|Δ| {abs(a - b):.1e})",
                                  size=size, ctseg_value=a, monai_value=b))
    return results


def main() -> None:
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    choose_threads()
    for r in run(ap.parse_args().quick):
        print(r.name, r.size, f"ctseg {r.ctseg_s:.4f}s MONAI {r.monai_s:.4f}s ratio {r.ratio:.2f}", r.agreement)


if __name__ == "__main__":
    main()

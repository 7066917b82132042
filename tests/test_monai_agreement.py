"""Our metrics agree with MONAI's (optional dev dependency, see requirements-bench.txt)."""

from __future__ import annotations

import numpy as np
import pytest

from ctseg_lib.metrics import dice, hd95, nsd

monai_metrics = pytest.importorskip("monai.metrics")
torch = pytest.importorskip("torch")
ndimage = pytest.importorskip("scipy.ndimage")

SPACING = (0.8, 1.1, 2.5)
TOL = 2.0
#: HD95 agreement (mm): both compute the same distances; only float32/float64 rounding differs.
HD95_ATOL_MM = 1e-4


def _blob(rng, shape, thr):
    field = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
    return field > thr * field.std()


def _pairs(n=3, shape=(32, 28, 16)):
    rng = np.random.default_rng(42)
    for _ in range(n):
        gt = _blob(rng, shape, 0.8)
        pred = gt.copy() if rng.random() < 0.2 else (_blob(rng, shape, 0.8) | ndimage.binary_dilation(gt))
        yield pred, gt


def _t(m):  # (B=1, C=1, X, Y, Z) float tensor, MONAI's layout for binary one-channel inputs
    return torch.as_tensor(m[None, None].astype(np.float32))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI-internal deprecation notice
def test_dice_hd95_nsd_agree_with_monai():
    """Same definitions as MONAI, so the numbers agree to float rounding (measured max |Δ| ≈ 2e-7 mm).

    The HD95 bound used to be half a voxel diagonal (1.42 mm), which let HD95 from the pooled distances
    of both directions (a common wrong definition) pass; 1e-4 mm does not.
    """
    report = []
    for pred, gt in _pairs():
        assert pred.any() and gt.any()
        d_m = float(monai_metrics.compute_dice(_t(pred), _t(gt), include_background=True))
        h_m = float(monai_metrics.compute_hausdorff_distance(_t(pred), _t(gt), include_background=True,
                                                             percentile=95, spacing=list(SPACING)))
        s_m = float(monai_metrics.compute_surface_dice(_t(pred), _t(gt), class_thresholds=[TOL],
                                                       include_background=True, spacing=list(SPACING)))
        d, h, s = dice(pred, gt), hd95(pred, gt, SPACING), nsd(pred, gt, SPACING, TOL)
        report.append((d - d_m, h - h_m, s - s_m))
        assert d == pytest.approx(d_m, abs=1e-6)
        assert h == pytest.approx(h_m, abs=HD95_ATOL_MM)
        assert s == pytest.approx(s_m, abs=1e-6)
    print("max |diff| dice, hd95 (mm), nsd:", np.abs(np.array(report)).max(0))

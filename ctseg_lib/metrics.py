"""Evaluation metrics on integer label volumes (numpy), with anisotropic spacing ``(sx, sy, sz)`` mm.

Per-class metrics take two boolean masks of the same shape.  Overlap metrics are defined from the
voxel counts TP, FP, FN; surface metrics (HD95, NSD) live in :mod:`ctseg_lib.surface`.

Empty-case conventions (the same in every function, and tested):

=================  ======================  =====================  ======================
metric             both empty              only GT empty (FP)     only pred empty (FN)
=================  ======================  =====================  ======================
dice, iou, nsd     1.0                     0.0                    0.0
precision          NaN                     0.0                    NaN
recall             NaN                     NaN                    0.0
hd95 (mm)          0.0                     NaN                    NaN
vol_diff_rel       NaN                     NaN                    -1.0
=================  ======================  =====================  ======================

"Both empty → 1" reads "nothing to find and nothing found" — it matters for tumour labels, since
many lung/liver cases in a validation split may contain no tumour.  NaN means "undefined"; the
aggregation skips NaN *explicitly* and reports how many cases each mean is over.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from .surface import hd95, hd95_from_distances, nsd, nsd_from_distances, surface_distances

__all__ = ["dice", "iou", "precision", "recall", "volume_difference", "hd95", "nsd", "confusion",
           "evaluate_case", "aggregate", "format_table", "format_aggregate"]

NAN = float("nan")


def confusion(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, int]:
    """Voxel counts ``(TP, FP, FN)`` of two boolean masks."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"shape mismatch {pred.shape} vs {gt.shape}")
    tp = int(np.count_nonzero(pred & gt))
    return tp, int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(gt)) - tp


def dice_from_counts(tp: int, fp: int, fn: int) -> float:
    """Dice from voxel counts: ``2 TP / (2 TP + FP + FN)``; 1.0 when all three are 0 (both masks empty)."""
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice ``2|P∩G| / (|P| + |G|)``; 1.0 if both empty, 0.0 if exactly one is."""
    return dice_from_counts(*confusion(pred, gt))


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Jaccard index ``|P∩G| / |P∪G|``; 1.0 if both empty.  ``iou = dice / (2 - dice)``."""
    tp, fp, fn = confusion(pred, gt)
    return 1.0 if tp + fp + fn == 0 else tp / (tp + fp + fn)


def precision(pred: np.ndarray, gt: np.ndarray) -> float:
    """``TP / (TP + FP)``; NaN when the prediction is empty."""
    tp, fp, _ = confusion(pred, gt)
    return NAN if tp + fp == 0 else tp / (tp + fp)


def recall(pred: np.ndarray, gt: np.ndarray) -> float:
    """Sensitivity ``TP / (TP + FN)``; NaN when the ground truth is empty."""
    tp, _, fn = confusion(pred, gt)
    return NAN if tp + fn == 0 else tp / (tp + fn)


def volume_difference(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> tuple[float, float]:
    """Volume error ``(relative, absolute_ml)``.

    ``relative = (V_pred - V_gt) / V_gt`` (signed, NaN when the GT is empty) and
    ``absolute_ml = V_pred - V_gt`` in millilitres (signed; 1 mL = 1000 mm³).
    """
    voxel_ml = float(np.prod(np.asarray(spacing, dtype=np.float64))) / 1000.0
    vp, vg = int(np.count_nonzero(pred)) * voxel_ml, int(np.count_nonzero(gt)) * voxel_ml
    return (NAN if vg == 0 else (vp - vg) / vg), vp - vg


def _row(case: str, label: int | str, name: str, p: np.ndarray, g: np.ndarray,
         spacing: Sequence[float], tol: float) -> dict:
    tp, fp, fn = confusion(p, g)
    rel, ml = volume_difference(p, g, spacing)
    if tp + fp and tp + fn:  # both non-empty: one distance computation serves HD95 and NSD
        d_pg, d_gp = surface_distances(p, g, spacing)
        h, s = hd95_from_distances(d_pg, d_gp), nsd_from_distances(d_pg, d_gp, tol)
    else:
        h, s = hd95(p, g, spacing), nsd(p, g, spacing, tol)
    return {
        "case": case, "label": label, "label_name": name, "dice": dice_from_counts(tp, fp, fn),
        "iou": 1.0 if tp + fp + fn == 0 else tp / (tp + fp + fn),
        "precision": NAN if tp + fp == 0 else tp / (tp + fp),
        "recall": NAN if tp + fn == 0 else tp / (tp + fn),
        "vol_diff_ml": ml, "vol_diff_rel": rel, "hd95": h, "nsd": s,
        "gt_voxels": tp + fn, "pred_voxels": tp + fp, "tp_voxels": tp,
    }


def evaluate_case(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], labels: Mapping[int, str],
                  tolerance_mm: float = 2.0, case_id: str = "",
                  regions: Mapping[str, Iterable[int]] | None = None) -> list[dict]:
    """All metrics of one case, one row (dict) per label and per region.

    Args:
        pred, gt: integer label volumes ``(X, Y, Z)`` on the same grid.
        spacing: voxel size ``(sx, sy, sz)`` in mm.
        labels: ``{value: name}``; label 0 (background) is skipped.  Values in ``pred`` that are
            not listed are simply never counted.
        tolerance_mm: NSD tolerance τ.
        case_id: written to the ``case`` column.
        regions: merged labels evaluated as one mask, e.g. ``{"liver+tumour": (1, 2)}`` — how LiTS
            and nnU-Net report "liver" (the tumour is inside the liver).  Their ``label`` column is
            the joined values, e.g. ``"1+2"``.

    Returns:
        Rows with keys ``case, label, label_name, dice, iou, precision, recall, vol_diff_ml,
        vol_diff_rel, hd95, nsd, gt_voxels, pred_voxels, tp_voxels`` (see the module docstring for
        empty cases).
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"case {case_id!r}: prediction shape {pred.shape} != ground truth {gt.shape}")
    rows = [_row(case_id, int(v), str(n), pred == v, gt == v, spacing, tolerance_mm)
            for v, n in sorted(labels.items()) if int(v) != 0]
    for name, values in (regions or {}).items():
        vals = sorted(int(v) for v in values)
        rows.append(_row(case_id, "+".join(map(str, vals)), str(name), np.isin(pred, vals), np.isin(gt, vals),
                         spacing, tolerance_mm))
    return rows


def _nanmean(xs: list[float]) -> tuple[float, int]:
    vals = [float(x) for x in xs if x is not None and not math.isnan(float(x))]
    return (sum(vals) / len(vals) if vals else NAN), len(vals)


def aggregate(rows: Iterable[Mapping]) -> dict[str, dict]:
    """Summarise :func:`evaluate_case` rows per label.

    Returns ``{label: {label_name, n_cases, dice_mean, dice_global, iou_mean, precision_mean,
    recall_mean, hd95_mean, hd95_n, nsd_mean, vol_diff_ml_mean}}`` (``label`` as a string).

    * ``dice_mean`` — the **case-averaged** Dice, the MSD / nnU-Net convention: every patient counts
      equally, so one missed small tumour costs as much as a missed large one.
    * ``dice_global`` — Dice of the pooled counts ``2ΣTP / (2ΣTP + ΣFP + ΣFN)`` (LiTS "Dice global").
      Large livers/tumours dominate it, and empty cases do not count at all, so it is usually
      *higher* than ``dice_mean`` for tumours: it measures voxels, not patients.
    * ``hd95_mean`` ignores NaN (one mask empty) and ``hd95_n`` says over how many cases it is.
    """
    groups: dict[str, list[Mapping]] = {}
    for r in rows:
        groups.setdefault(str(r["label"]), []).append(r)
    out: dict[str, dict] = {}
    for label, rs in groups.items():
        tp = sum(int(r["tp_voxels"]) for r in rs)
        fp = sum(int(r["pred_voxels"]) - int(r["tp_voxels"]) for r in rs)
        fn = sum(int(r["gt_voxels"]) - int(r["tp_voxels"]) for r in rs)
        agg = {"label_name": rs[0]["label_name"], "n_cases": len(rs)}
        for key in ("dice", "iou", "precision", "recall", "nsd", "vol_diff_ml"):
            agg[f"{key}_mean"] = _nanmean([r[key] for r in rs])[0]
        agg["dice_global"] = dice_from_counts(tp, fp, fn)
        agg["hd95_mean"], agg["hd95_n"] = _nanmean([r["hd95"] for r in rs])
        out[label] = agg
    return out


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def format_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> str:
    """Plain-text, column-aligned table of ``rows`` (floats with 4 decimals, NaN as ``nan``)."""
    if not rows:
        return "(no rows)"
    cols = list(columns or rows[0].keys())
    cells = [cols] + [[_fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_aggregate(agg: Mapping[str, Mapping]) -> str:
    """The :func:`aggregate` summary as a plain-text table, one line per label."""
    cols = ["label", "label_name", "n_cases", "dice_mean", "dice_global", "hd95_mean", "hd95_n", "nsd_mean",
            "precision_mean", "recall_mean"]
    return format_table([{"label": k, **v} for k, v in agg.items()], cols)

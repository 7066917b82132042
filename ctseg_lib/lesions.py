"""Lesion-wise evaluation: count tumours found and false-positive lesions, not only voxels.

A Dice over a whole scan does not say *how* a lesion model fails: a missed small tumour barely
moves it, a false lesion in the other lung barely moves it either. Detection challenges therefore
also count lesions (LiTS reports lesion-wise recall next to Dice; Bilic et al. 2023). The rules
used here, stated once so that every chapter and test uses the same ones:

* **Lesions** are the connected components of a binary mask (:func:`label_lesions`):
  ``connectivity`` 1, 2 or 3 as in :func:`scipy.ndimage.generate_binary_structure` (3 in 3D =
  26-neighbourhood, the default). With ``merge_distance = d > 0`` islands closer than about ``d``
  voxels are *grouped* into one lesion first (the mask is dilated ``d`` times with the same
  structuring element, the dilated mask is labelled, and each original voxel takes the label of its
  group): a spiculated tumour whose spicules the voxel grid cuts into islands stays one lesion.
* A **reference lesion is detected** when at least one predicted voxel overlaps it (any overlap;
  no minimum Dice).
* A **predicted component** (labelled with the same connectivity, without grouping) that overlaps
  no reference lesion is a **false-positive lesion**. A component that overlaps two reference
  lesions detects both and is not a false positive.
* **Dice on detected lesions**: for each detected reference lesion, the Dice between that lesion
  and the union of the predicted components that overlap it (so a false positive elsewhere does
  not lower it).
* **Tumour-free scans**: a scan without reference lesions has no lesion-wise sensitivity (NaN,
  left out of means); every predicted component on it is a false positive. Pooled over scans
  (:func:`lesion_metrics`) the sensitivity is detected lesions / all reference lesions.

Other conventions exist (a minimum overlap Dice for a hit, one-to-one matching): state the rule
with the numbers. Uncertainty over few cases: :func:`bootstrap_ci`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .errors import CTSegError


def _structure(ndim: int, connectivity: int) -> np.ndarray:
    if not 1 <= connectivity <= ndim:
        raise CTSegError(f"connectivity must be 1 … {ndim} for a {ndim}D mask, got {connectivity}")
    return ndimage.generate_binary_structure(ndim, connectivity)


def label_lesions(mask: np.ndarray, connectivity: int = 3, merge_distance: int = 0) -> tuple[np.ndarray, int]:
    """Connected components of a binary ``mask`` (any shape, bool or 0/1).

    Returns ``(labels, n)``: ``labels`` int32 of ``mask``'s shape, 0 outside the mask and 1 … n for
    the lesions. ``connectivity`` as in :func:`scipy.ndimage.generate_binary_structure` (clipped to
    ``mask.ndim``: 3 means 26-connected in 3D, 8-connected in 2D). ``merge_distance`` > 0 groups
    islands closer than about that many voxels into one lesion (see the module docstring).
    """
    m = np.asarray(mask).astype(bool)
    st = _structure(m.ndim, min(connectivity, m.ndim))
    if merge_distance < 0:
        raise CTSegError(f"merge_distance must be ≥ 0 voxels, got {merge_distance}")
    grouped = ndimage.binary_dilation(m, st, iterations=merge_distance) if merge_distance and m.any() else m
    labels, n = ndimage.label(grouped, st)
    labels = labels.astype(np.int32, copy=False)
    labels[~m] = 0
    if merge_distance:  # renumber 1 … n (a group always contains original voxels, but be exact)
        ids = np.unique(labels[m])
        lut = np.zeros(int(labels.max()) + 1, dtype=np.int32)
        lut[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
        labels, n = lut[labels], len(ids)
    return labels, int(n)


@dataclass
class LesionMatch:
    """Lesion-wise comparison of one scan (see :func:`match_lesions`).

    ``reference``: one dict per reference lesion, ``{"lesion", "voxels", "volume_mm3", "detected",
    "dice"}`` (``dice`` NaN when not detected). ``predicted``: one dict per predicted component,
    ``{"component", "voxels", "volume_mm3", "false_positive"}``.
    """

    reference: list[dict] = field(default_factory=list)
    predicted: list[dict] = field(default_factory=list)

    @property
    def n_lesions(self) -> int:
        return len(self.reference)

    @property
    def n_detected(self) -> int:
        return sum(r["detected"] for r in self.reference)

    @property
    def n_false_positive(self) -> int:
        return sum(p["false_positive"] for p in self.predicted)

    @property
    def sensitivity(self) -> float:
        """Detected / reference lesions of this scan; NaN on a tumour-free scan."""
        return self.n_detected / self.n_lesions if self.n_lesions else math.nan


def match_lesions(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None,
                  connectivity: int = 3, merge_distance: int = 0) -> LesionMatch:
    """Match the lesions of binary masks ``pred`` and ``gt`` (same shape) of one scan.

    ``spacing`` (mm per axis) only converts voxel counts to ``volume_mm3`` (NaN without it).
    ``merge_distance`` groups reference islands (not predicted ones). Rules: module docstring.
    """
    p, g = np.asarray(pred).astype(bool), np.asarray(gt).astype(bool)
    if p.shape != g.shape:
        raise CTSegError(f"prediction shape {p.shape} differs from reference shape {g.shape}")
    voxel_mm3 = float(np.prod(spacing)) if spacing is not None else math.nan
    ref, n_ref = label_lesions(g, connectivity, merge_distance)
    comp, n_pred = label_lesions(p, connectivity)
    ref_sizes = np.bincount(ref.ravel(), minlength=n_ref + 1)
    comp_sizes = np.bincount(comp.ravel(), minlength=n_pred + 1)
    both = p & g
    pairs = np.unique(np.stack([ref[both], comp[both]]), axis=1) if both.any() else np.zeros((2, 0), int)
    out = LesionMatch()
    for k in range(1, n_ref + 1):
        hits = pairs[1][pairs[0] == k]
        dice = math.nan
        if hits.size:
            union_pred = np.isin(comp, hits)
            lesion = ref == k
            dice = 2.0 * float((union_pred & lesion).sum()) / float(union_pred.sum() + lesion.sum())
        out.reference.append({"lesion": k, "voxels": int(ref_sizes[k]), "volume_mm3": ref_sizes[k] * voxel_mm3,
                              "detected": bool(hits.size), "dice": dice})
    touching = set(pairs[1].tolist())
    for j in range(1, n_pred + 1):
        out.predicted.append({"component": j, "voxels": int(comp_sizes[j]), "volume_mm3": comp_sizes[j] * voxel_mm3,
                              "false_positive": j not in touching})
    return out


def lesion_metrics(matches: LesionMatch | Sequence[LesionMatch]) -> dict[str, float | int]:
    """Summary over scans: pooled lesion-wise sensitivity, false-positive lesions per scan, Dice.

    Returns ``{"scans", "tumour_free_scans", "tumour_free_with_fp", "lesions", "detected",
    "sensitivity", "false_positives", "fp_per_scan", "detected_dice"}``: ``sensitivity`` = detected
    / lesions over all scans (NaN if there is no lesion at all; tumour-free scans add no lesions but
    their false positives count); ``fp_per_scan`` = false-positive lesions / scans;
    ``tumour_free_with_fp`` = tumour-free scans with at least one false-positive lesion (LiTS counts
    any tumour voxel in a tumour-free liver as a failure); ``detected_dice`` = mean Dice over all
    detected lesions (NaN if none).
    """
    ms = [matches] if isinstance(matches, LesionMatch) else list(matches)
    lesions = sum(m.n_lesions for m in ms)
    detected = sum(m.n_detected for m in ms)
    fps = sum(m.n_false_positive for m in ms)
    dices = [r["dice"] for m in ms for r in m.reference if r["detected"]]
    return {"scans": len(ms), "tumour_free_scans": sum(m.n_lesions == 0 for m in ms),
            "tumour_free_with_fp": sum(m.n_lesions == 0 and m.n_false_positive > 0 for m in ms), "lesions": lesions,
            "detected": detected, "sensitivity": detected / lesions if lesions else math.nan,
            "false_positives": fps, "fp_per_scan": fps / len(ms) if ms else math.nan,
            "detected_dice": float(np.mean(dices)) if dices else math.nan}


def remove_small_components(mask: np.ndarray, min_voxels: int, connectivity: int = 3) -> np.ndarray:
    """``mask`` (bool) without its connected components of fewer than ``min_voxels`` voxels.

    A gentler postprocessing than keeping only the largest component: several lesions survive.
    To threshold a volume in mm³ use ``min_voxels = ceil(mm3 / prod(spacing))``.
    """
    labels, n = label_lesions(mask, connectivity)
    if n == 0:
        return labels > 0
    keep = np.bincount(labels.ravel()) >= min_voxels
    keep[0] = False
    return keep[labels]


def bootstrap_ci(values: Sequence[float] | np.ndarray, n: int = 2000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean over cases.

    Resamples the (non-NaN) ``values`` with replacement ``n`` times and returns the ``alpha/2`` and
    ``1 - alpha/2`` quantiles of the resampled means (0.95 interval by default). With few cases the
    interval is wide, and it is only as good as the cases are representative.
    """
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if v.size == 0:
        raise CTSegError("bootstrap_ci needs at least one non-NaN value")
    if not 0 < alpha < 1:
        raise CTSegError(f"alpha must be in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n, v.size))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)

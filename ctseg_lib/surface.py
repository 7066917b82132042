"""Surface-distance metrics: HD95 and normalised surface Dice (NSD), in millimetres.

Definitions (the Medical Segmentation Decathlon's, as implemented by MONAI's ``compute_hausdorff_distance``
and ``compute_surface_dice`` with ``use_subvoxels=False``):

* **Surface** of a boolean mask = the mask minus its binary erosion with the *face-connected*
  structuring element (6-neighbourhood in 3D, ``scipy.ndimage.generate_binary_structure(3, 1)``):
  a voxel is on the surface when at least one of its face neighbours is outside the mask (or outside
  the volume).  Full 26-connectivity would mark more voxels; we follow MONAI/MSD so the numbers agree.
* **Surface distances**: for every surface voxel of A, the Euclidean distance (mm, anisotropic
  ``spacing``) to the nearest surface voxel of B.  Two exact methods give identical numbers (tested):
  ``"edt"`` — ``scipy.ndimage.distance_transform_edt(~surface_B, sampling=spacing)`` read at A's
  surface voxels (what MONAI does); ``"kdtree"`` (default) — nearest-neighbour queries of the surface
  voxel coordinates in mm with ``scipy.spatial.cKDTree``.  The k-d tree touches only the ~10⁵
  surface voxels instead of every voxel of the box, ≈3× faster on a liver.
* **HD95** = max(95th percentile of d(A→B), 95th percentile of d(B→A)) (linear interpolation of the
  percentile, as ``torch.quantile``).  Some tools (e.g. medpy) instead take the percentile of the
  pooled distances; values differ slightly.
* **NSD at tolerance τ** (Nikolov et al. 2021, JMIR, "Clinically applicable segmentation of head and
  neck anatomy..."): fraction of surface voxels of both masks that lie within τ mm of the other
  surface, ``(|{a: d(a,B) ≤ τ}| + |{b: d(b,A) ≤ τ}|) / (|∂A| + |∂B|)``.  Nikolov et al. weight
  surface elements by their area; counting voxels (as MSD/MONAI do by default) is a close approximation.

Speed: surfaces (and the EDT) are computed only on the bounding box of ``A ∪ B`` plus a 1-voxel
margin.  This is exact (every surface voxel lies in that box, and the EDT of a sub-array gives the
distance to the nearest zero *in the sub-array*, which is where all the other surface is) and turns a
256×256×96 volume into a box about the size of the organ.  Measured on a liver-like pair in a
256×256×96 volume (box 208×163×96, ~9·10⁴ surface voxels each, CPU time on a loaded shared core):
HD95 with the k-d tree ≈ 0.3–0.5 s, with the EDT ≈ 1.6 s.

Empty masks: see :func:`hd95` and :func:`nsd`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

Spacing = Sequence[float]


def _bbox(mask: np.ndarray, margin: int = 1) -> tuple[slice, ...]:
    """Bounding box of the non-zero voxels of ``mask`` (non-empty) grown by ``margin``, clipped."""
    out = []
    for ax in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        out.append(slice(max(int(idx[0]) - margin, 0), min(int(idx[-1]) + 1 + margin, mask.shape[ax])))
    return tuple(out)


def surface(mask: np.ndarray) -> np.ndarray:
    """Boolean surface voxels of ``mask``: mask minus its face-connected erosion (volume edge = outside)."""
    mask = np.asarray(mask, dtype=bool)
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(pred: np.ndarray, gt: np.ndarray, spacing: Spacing,
                      method: str = "kdtree") -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm, float64) from every surface voxel of ``pred`` to the surface of ``gt`` and back.

    Args:
        pred, gt: boolean masks of equal shape ``(X, Y, Z)`` (or 2D), both non-empty.
        spacing: voxel size in mm per axis.
        method: ``"kdtree"`` or ``"edt"`` (same result, see the module docstring).

    Returns:
        ``(d_pred_to_gt, d_gt_to_pred)``, 1D arrays of length ``|∂pred|`` and ``|∂gt|``.
    """
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"shape mismatch {pred.shape} vs {gt.shape}")
    if len(spacing) != pred.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match {pred.ndim}D masks")
    if not pred.any() or not gt.any():
        raise ValueError("surface_distances needs two non-empty masks")
    box = _bbox(pred | gt, margin=1)
    sp, sg = surface(pred[box]), surface(gt[box])
    sampling = np.asarray(spacing, dtype=np.float64)
    if method == "kdtree":
        a, b = np.argwhere(sp) * sampling, np.argwhere(sg) * sampling  # surface voxel centres in mm
        return cKDTree(b).query(a)[0], cKDTree(a).query(b)[0]
    if method == "edt":
        # EDT gives, for each voxel, the distance to the nearest zero, so zeros must be the surface voxels.
        d_to_gt = ndimage.distance_transform_edt(~sg, sampling=sampling)
        d_to_pred = ndimage.distance_transform_edt(~sp, sampling=sampling)
        return d_to_gt[sp], d_to_pred[sg]
    raise ValueError(f"method must be 'kdtree' or 'edt', not {method!r}")


def hd95_from_distances(d_pg: np.ndarray, d_gp: np.ndarray) -> float:
    """Symmetric 95th-percentile Hausdorff distance from the two directed distance sets."""
    return float(max(np.percentile(d_pg, 95), np.percentile(d_gp, 95)))


def nsd_from_distances(d_pg: np.ndarray, d_gp: np.ndarray, tolerance_mm: float) -> float:
    """Normalised surface Dice from the two directed distance sets."""
    ok = np.count_nonzero(d_pg <= tolerance_mm) + np.count_nonzero(d_gp <= tolerance_mm)
    return float(ok / (d_pg.size + d_gp.size))


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: Spacing) -> float:
    """95th-percentile symmetric Hausdorff distance in mm.

    Empty cases: both empty → 0.0 (nothing to find, nothing found); exactly one empty → NaN (the
    distance is undefined; aggregation skips NaN and reports how many cases were counted).
    """
    pe, ge = not np.any(pred), not np.any(gt)
    if pe and ge:
        return 0.0
    if pe or ge:
        return float("nan")
    return hd95_from_distances(*surface_distances(pred, gt, spacing))


def nsd(pred: np.ndarray, gt: np.ndarray, spacing: Spacing, tolerance_mm: float = 2.0) -> float:
    """Normalised surface Dice in [0, 1] at ``tolerance_mm``.

    Empty cases: both empty → 1.0; exactly one empty → 0.0 (like Dice).
    """
    pe, ge = not np.any(pred), not np.any(gt)
    if pe and ge:
        return 1.0
    if pe or ge:
        return 0.0
    return nsd_from_distances(*surface_distances(pred, gt, spacing), tolerance_mm)

"""Anatomy-aware clean-up of predicted label maps (connected components).

A network deciding voxel by voxel produces small false-positive islands far from the organ.
Anatomy says there is one liver, and a liver tumour lies inside the liver, so:

* :func:`keep_largest_per_class` keeps only the largest connected component of each class
  (nnU-Net decides per class on validation data whether this helps; Isensee et al. 2021),
* :func:`restrict_to` removes tumour voxels that do not touch the (largest) liver-plus-tumour
  component.

Inputs are integer label arrays of any dimensionality; connectivity is face-connected
(``scipy.ndimage.label`` default: 6-neighbourhood in 3D).  Every function returns
``(new_labels, report)`` where ``report = {"removed_voxels": {label: count}}``; nothing is changed
in place.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import ndimage


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Boolean mask of the largest connected component of ``mask`` (all False if ``mask`` is empty)."""
    mask = np.asarray(mask, dtype=bool)
    comps, n = ndimage.label(mask)
    if n <= 1:
        return mask.copy()
    sizes = np.bincount(comps.ravel())
    sizes[0] = 0  # background
    return comps == int(np.argmax(sizes))


def _report(before: np.ndarray, after: np.ndarray) -> dict:
    changed = before != after
    removed = {int(v): int(c) for v, c in zip(*np.unique(before[changed], return_counts=True))}
    return {"removed_voxels": removed}


def keep_largest_per_class(labels: np.ndarray, classes: Iterable[int]) -> tuple[np.ndarray, dict]:
    """For each label in ``classes``, keep its largest component; the rest becomes background (0)."""
    out = np.array(labels, copy=True)
    for c in classes:
        m = out == c
        out[m & ~largest_component(m)] = 0
    return out, _report(np.asarray(labels), out)


def keep_largest_foreground(labels: np.ndarray) -> tuple[np.ndarray, dict]:
    """Keep the largest component of *all foreground together* (labels > 0), labels preserved."""
    out = np.array(labels, copy=True)
    fg = out > 0
    out[fg & ~largest_component(fg)] = 0
    return out, _report(np.asarray(labels), out)


def restrict_to(labels: np.ndarray, inner_label: int = 2,
                outer_labels: Iterable[int] = (1, 2)) -> tuple[np.ndarray, dict]:
    """Remove ``inner_label`` voxels outside the largest component of ``outer_labels``.

    For MSD Task03 (1 liver, 2 tumour): the organ is liver ∪ tumour; a tumour blob that does not
    touch that organ is a false positive and is set to background.  Liver voxels are untouched.
    """
    out = np.array(labels, copy=True)
    organ = largest_component(np.isin(out, list(outer_labels)))
    out[(out == inner_label) & ~organ] = 0
    return out, _report(np.asarray(labels), out)


POSTPROCESS_STEPS = ("lcc", "lcc_fg", "restrict")


def apply_postprocessing(labels: np.ndarray, steps: Iterable[str], label_names: dict[int, str]) -> tuple[
        np.ndarray, dict]:
    """Apply named steps in order: ``lcc`` (largest component of each foreground class — skipped
    for classes named like tumours, which can be several), ``lcc_fg`` (largest foreground
    component), ``restrict`` (tumour inside organ; needs labels 1 and 2)."""
    reports: dict = {}
    fg = [k for k in sorted(label_names) if k > 0]
    for step in steps:
        if step == "lcc":
            organs = [k for k in fg if not any(w in label_names[k].lower() for w in ("tumo", "cancer", "lesion"))]
            labels, reports[step] = keep_largest_per_class(labels, organs)
        elif step == "lcc_fg":
            labels, reports[step] = keep_largest_foreground(labels)
        elif step == "restrict":
            if len(fg) < 2:
                raise ValueError("'restrict' needs an organ label and a tumour label (e.g. Task03 liver)")
            labels, reports[step] = restrict_to(labels, inner_label=fg[-1], outer_labels=fg)
        else:
            raise ValueError(f"unknown postprocessing step {step!r}; choose from {POSTPROCESS_STEPS}")
    return labels, reports

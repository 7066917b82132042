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

from collections.abc import Iterable, Sequence

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


POSTPROCESS_STEPS = ("lcc", "lcc_fg", "restrict", "min_size")


def remove_small(labels: np.ndarray, classes: Iterable[int], min_mm3: float,
                 spacing: Sequence[float]) -> tuple[np.ndarray, dict]:
    """Set to background every 26-connected component of ``classes`` smaller than ``min_mm3`` mm³.

    The detection-aware alternative to keeping the largest component: *every* lesion of a plausible
    size survives (a scan may have several tumours, or the largest blob may be a false positive),
    while specks of a few voxels — below any lesion a reader would report — go.
    """
    from .lesions import remove_small_components

    out = np.array(labels, copy=True)
    min_voxels = int(np.ceil(float(min_mm3) / float(np.prod(spacing))))
    for k in classes:
        mask = out == k
        out[mask & ~remove_small_components(mask, min_voxels)] = 0
    return out, _report(np.asarray(labels), out)


def parse_steps(steps: Iterable[str] | str | None) -> list[str]:
    """Validated step list from ``["lcc", "min_size:30"]`` or ``"lcc,restrict"``; ``"none"`` / None / "" → [].

    ``min_size:<mm³>`` takes a volume in mm³; the other steps take no argument.
    """
    if steps is None:
        return []
    items = [t.strip() for t in (steps.split(",") if isinstance(steps, str) else steps) if str(t).strip()]
    if items == ["none"]:
        return []
    for t in items:
        name, _, arg = t.partition(":")
        if name not in POSTPROCESS_STEPS:
            raise ValueError(f"unknown postprocessing step {t!r}; choose from {list(POSTPROCESS_STEPS)} or 'none'")
        if name == "min_size":
            try:
                ok = float(arg) > 0
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"postprocessing step {t!r}: write min_size:<volume in mm³ > 0>, e.g. min_size:30")
        elif arg:
            raise ValueError(f"postprocessing step {t!r} takes no argument")
    return items


def apply_postprocessing(labels: np.ndarray, steps: Iterable[str], label_names: dict[int, str],
                         spacing: Sequence[float] | None = None) -> tuple[np.ndarray, dict]:
    """Apply named steps in order: ``lcc`` (largest component of each foreground class — skipped
    for classes named like tumours, which can be several), ``lcc_fg`` (largest foreground
    component), ``restrict`` (tumour inside organ; needs labels 1 and 2), ``min_size:<mm³>``
    (remove tumour-class components smaller than that volume; needs ``spacing`` in mm)."""
    reports: dict = {}
    fg = [k for k in sorted(label_names) if k > 0]
    tumours = [k for k in fg if _is_lesion(label_names[k])]
    for step in parse_steps(list(steps)):
        name, _, arg = step.partition(":")
        if name == "lcc":
            labels, reports[step] = keep_largest_per_class(labels, [k for k in fg if k not in tumours])
        elif name == "lcc_fg":
            labels, reports[step] = keep_largest_foreground(labels)
        elif name == "restrict":
            if len(fg) < 2:
                raise ValueError("'restrict' needs an organ label and a tumour label (e.g. Task03 liver)")
            labels, reports[step] = restrict_to(labels, inner_label=fg[-1], outer_labels=fg)
        else:  # min_size
            if spacing is None:
                raise ValueError(f"'{step}' needs the voxel spacing (mm)")
            labels, reports[step] = remove_small(labels, tumours or fg, float(arg), spacing)
    return labels, reports


def _is_lesion(name: str) -> bool:
    return any(w in name.lower() for w in ("tumo", "cancer", "lesion", "nodule"))

"""Anatomy-aware clean-up of predicted label maps (connected components).

A network deciding voxel by voxel produces small false-positive islands far from the organ.
Anatomy says there is one liver, a liver tumour lies inside the liver and a lung nodule inside
the lung, so:

* :func:`keep_largest_per_class` keeps only the largest connected component of each class
  (nnU-Net decides per class on validation data whether this helps; Isensee et al. 2021),
* :func:`restrict_to` removes tumour voxels that do not touch the (largest) liver-plus-tumour
  component,
* :func:`remove_small` removes lesion components below a volume in mm³ (inside an organ they
  become organ),
* :func:`keep_in_lung_fields` keeps only lesion components that lie mostly inside the lung fields
  of the CT image (:func:`lung_field`).

Inputs are integer label arrays of any dimensionality; connectivity is face-connected
(``scipy.ndimage.label`` default: 6-neighbourhood in 3D), except for the lesion-wise steps
``min_size`` and ``lung_fields`` (26-connected lesions, as :mod:`ctseg_lib.lesions` counts them).
Every function returns ``(new_labels, report)`` where ``report = {"removed_voxels": {label: count}}``;
nothing is changed in place.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy import ndimage

from .data.stats import body_mask


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


#: Default closing radius of :func:`lung_field` (mm): half the largest nodule diameter (30 mm), so
#: the dent a juxtapleural nodule makes in the air-filled lung is bridged.
LUNG_CLOSE_MM = 15.0
#: An air region counts as lung if it has at least this share of the largest air region's voxels.
LUNG_SHARE = 0.25


def lung_field(hu: np.ndarray, spacing: Sequence[float], close_mm: float = LUNG_CLOSE_MM) -> np.ndarray:
    """The lungs with what they enclose: the region where a lung nodule can lie.

    The large air-like (< -500 HU) connected regions (6-connected) inside the body
    (:func:`ctseg_lib.data.stats.body_mask`), closed with a ball of radius ``close_mm`` mm (dilation
    then erosion by exact Euclidean distance transforms in mm, so anisotropic voxels are handled),
    then holes filled in every axial slice (vessels, airway walls and nodules surrounded by lung
    become part of the field).  The two lungs are one region where the airways join them (as in the
    vendored ``lidc_0001``); where they do not (thick slices, a phantom's short bronchi), every air
    region of at least :data:`LUNG_SHARE` of the largest counts as lung — keeping only the largest
    deleted every nodule of the other lung (found on fresh phantoms: 2 of 7 detected tumours).

    Why the closing: a nodule is soft tissue (about -100 … 100 HU), so it is not air-like and is a
    dent in the air region.  A nodule *inside* the lung is a hole and is filled per slice; a
    *juxtapleural* nodule touches the pleura (the chest wall), so in its slices it is no hole and
    filling alone leaves it outside the field.  Closing with a ball of half the largest nodule
    diameter (15 mm: a nodule is at most 30 mm across, larger lesions are masses; Hansell et al.,
    Fleischner glossary, Radiology 2008) bridges that dent.  ``close_mm=0``: no closing (only the
    holes of each slice filled).

    Args:
        hu: CT volume ``(X, Y, Z)`` in Hounsfield units (any real dtype), Z the axial (slice) axis.
        spacing: voxel size ``(sx, sy, sz)`` in mm.
        close_mm: radius of the closing ball in mm (≥ 0).

    Returns:
        bool ``(X, Y, Z)``: the lung fields (all False if the body holds no air-like region).
    """
    hu = np.asarray(hu)
    if hu.ndim != 3 or len(spacing) != 3:
        raise ValueError(f"lung_field needs a 3D volume (X, Y, Z) and 3 spacings (mm), got shape {hu.shape} "
                         f"and spacing {tuple(spacing)}")
    if close_mm < 0:
        raise ValueError(f"close_mm must be ≥ 0 mm, got {close_mm}")
    air, n = ndimage.label(body_mask(hu) & (hu < -500))
    if n == 0:
        return np.zeros(hu.shape, dtype=bool)
    sizes = np.bincount(air.ravel())[1:]
    # both lungs: every air region at least LUNG_SHARE of the largest (bowel and stomach gas are far smaller)
    field = np.isin(air, np.flatnonzero(sizes >= LUNG_SHARE * sizes.max()) + 1)
    if close_mm > 0:  # closing = dilation then erosion, by exact distances in mm
        dilated = ndimage.distance_transform_edt(~field, sampling=spacing) <= close_mm
        field |= ndimage.distance_transform_edt(dilated, sampling=spacing) > close_mm
    for z in range(field.shape[2]):
        field[:, :, z] = ndimage.binary_fill_holes(field[:, :, z])
    return field


def keep_in_lung_fields(labels: np.ndarray, classes: Iterable[int], field: np.ndarray,
                        min_share: float = 0.5) -> tuple[np.ndarray, dict]:
    """Keep the components of ``classes`` that lie at least ``min_share`` inside ``field``.

    Lung nodules lie in the lung parenchyma — the solitary pulmonary nodule is an opacity of up to
    3 cm "surrounded completely by aerated lung" (Ost et al., N Engl J Med 2003), juxtapleural ones
    abut the pleura — so a predicted nodule in the mediastinum, the chest wall, the diaphragm or the
    abdomen is a false positive.  Each 26-connected component (:func:`ctseg_lib.lesions.label_lesions`)
    of each class is kept if at least ``min_share`` of its voxels are inside ``field`` (usually
    :func:`lung_field`); the rest of that class becomes background (0).  Other labels are untouched.

    Args:
        labels: integer label map, any shape.
        classes: the labels to filter (lesion classes).
        field: bool mask of ``labels``' shape.
        min_share: the fraction of a component's voxels that must lie in ``field`` (0 … 1).

    Returns:
        ``(new_labels, report)``; ``report["removed_voxels"]`` as for the other steps and
        ``report["removed_components"] = {label: count}`` (labels with at least one removed).
    """
    from .lesions import label_lesions

    field = np.asarray(field, dtype=bool)
    if field.shape != np.shape(labels):
        raise ValueError(f"lung field shape {field.shape} differs from the label shape {np.shape(labels)}")
    out = np.array(labels, copy=True)
    removed_components = {}
    for c in classes:
        comps, n = label_lesions(out == c)
        if n == 0:
            continue
        share = ndimage.mean(field, comps, np.arange(1, n + 1))
        drop = np.flatnonzero(np.asarray(share) < min_share) + 1
        if drop.size:
            out[np.isin(comps, drop)] = 0
            removed_components[int(c)] = int(drop.size)
    report = _report(np.asarray(labels), out)
    report["removed_components"] = removed_components
    return out, report


POSTPROCESS_STEPS = ("lcc", "lcc_fg", "restrict", "min_size", "lung_fields")


def remove_small(labels: np.ndarray, classes: Iterable[int], min_mm3: float,
                 spacing: Sequence[float], fill_labels: Iterable[int] = ()) -> tuple[np.ndarray, dict]:
    """Remove every 26-connected component of ``classes`` smaller than ``min_mm3`` mm³.

    The detection-aware alternative to keeping the largest component: *every* lesion of a plausible
    size survives (a scan may have several tumours, or the largest blob may be a false positive),
    while specks of a few voxels — below any lesion a reader would report — go.

    A removed component becomes what surrounds it: the most frequent of ``fill_labels`` in the
    one-voxel shell around it (e.g. ``[1]``: a tumour speck inside the liver becomes liver, not a hole
    in the liver), or background (0) where none of them touches it.  With ``fill_labels`` empty (the
    lung: no organ label) every removed component becomes background.
    """
    from .lesions import label_lesions

    out = np.array(labels, copy=True)
    min_voxels = int(np.ceil(float(min_mm3) / float(np.prod(spacing))))
    fill = [int(f) for f in fill_labels]
    shell_structure = ndimage.generate_binary_structure(out.ndim, out.ndim)
    for k in classes:
        comps, n = label_lesions(out == k)  # labelled once: the sizes and the boxes come from it
        small = np.flatnonzero(np.bincount(comps.ravel(), minlength=n + 1)[1:] < min_voxels) + 1
        if not fill:
            out[np.isin(comps, small)] = 0
            continue
        boxes = ndimage.find_objects(comps)
        for i in small:
            box = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in boxes[i - 1])
            comp = comps[box] == i
            around = out[box][ndimage.binary_dilation(comp, shell_structure) & ~comp]
            count, label = max((int(np.sum(around == f)), f) for f in fill)
            out[box][comp] = label if count > 0 else 0
    return out, _report(np.asarray(labels), out)


def parse_steps(steps: Iterable[str] | str | None) -> list[str]:
    """Validated step list from ``["lcc", "min_size:30"]`` or ``"lcc,restrict"``; ``"none"`` / None / "" → [].

    ``min_size:<mm³>`` takes a volume in mm³; the other steps (``lcc``, ``lcc_fg``, ``restrict``,
    ``lung_fields``) take no argument.
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
                         spacing: Sequence[float] | None = None,
                         image: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Apply named steps in order to ``labels`` (integer label map) and return ``(labels, reports)``.

    Steps: ``lcc`` (largest component of each foreground class — skipped for classes named like
    tumours, which can be several), ``lcc_fg`` (largest foreground component), ``restrict`` (tumour
    inside organ; needs labels 1 and 2), ``min_size:<mm³>`` (remove tumour-class components smaller
    than that volume; one inside the organ becomes organ, :func:`remove_small`; needs ``spacing``),
    ``lung_fields`` (keep only tumour-class components at least 50 % inside the lung fields of the
    CT, :func:`keep_in_lung_fields` with :func:`lung_field`; needs ``image`` and ``spacing``).  Tumour
    classes are those named like tumours (``tumour``, ``cancer``, ``lesion``, ``nodule``); without one,
    every foreground class.

    Args:
        labels: integer label map ``(X, Y, Z)`` (any shape for the steps without an image).
        steps: step names as :func:`parse_steps` accepts them.
        label_names: ``{label: name}`` of the model (0 = background).
        spacing: voxel size ``(sx, sy, sz)`` in mm, for ``min_size`` and ``lung_fields``.
        image: the CT in HU on the same grid as ``labels`` (same shape, same canonical axes), for
            ``lung_fields``.

    Returns:
        ``(new_labels, {step: report})``; every report has ``removed_voxels`` ``{label: count}``.
    """
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
        elif name == "lung_fields":
            if image is None:
                raise ValueError("'lung_fields' needs the CT image in HU (image=...) on the labels' grid")
            if spacing is None:
                raise ValueError("'lung_fields' needs the voxel spacing (mm)")
            if np.shape(image) != np.shape(labels):
                raise ValueError(f"'lung_fields': image shape {np.shape(image)} differs from the label shape "
                                 f"{np.shape(labels)}")
            labels, reports[step] = keep_in_lung_fields(labels, tumours or fg, lung_field(image, spacing))
        else:  # min_size
            if spacing is None:
                raise ValueError(f"'{step}' needs the voxel spacing (mm)")
            organs = [k for k in fg if k not in tumours] if tumours else []
            labels, reports[step] = remove_small(labels, tumours or fg, float(arg), spacing, fill_labels=organs)
    return labels, reports


def _is_lesion(name: str) -> bool:
    return any(w in name.lower() for w in ("tumo", "cancer", "lesion", "nodule"))

"""Dataset summary for ``ctseg info``: geometry, orientations, class balance, HU per label.

The numbers a reader should look at before training (cf. the "dataset fingerprint" of nnU-Net,
Isensee et al. 2021): the spread of voxel spacings (→ resampling target), the orientations stored
(→ why canonicalisation matters), how rare each label is, by voxel and by axial slice (→ loss and
sampling choices), and the HU of each label and of air/body (→ a sanity check that the data are CT
in Hounsfield units).  Cases are loaded one at a time through :class:`~.msd.MSDDataset`.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from scipy import ndimage

from .msd import MSDDataset
from .nifti import GeometryWarning, Volume, geometry_issues, is_fov_padding


def body_mask(hu: np.ndarray) -> np.ndarray:
    """Body = voxels above -500 HU plus everything they enclose per axial slice (lungs, bowel gas)."""
    mask = hu > -500
    for k in range(hu.shape[2]):
        mask[:, :, k] = ndimage.binary_fill_holes(mask[:, :, k])
    return mask


def dataset_summary(root: str | Path, max_cases: int | None = None) -> dict:
    """Summarise the training cases of the MSD folder ``root`` (the first ``max_cases`` if given).

    Returns a JSON-ready dict: ``name``, ``num_training``, ``num_test``, ``cases_summarised``,
    ``shape``/``spacing`` ``{"min", "max"}`` (voxels / mm, canonical RAS axes), ``orientations``
    ``{"RAS": n, ...}`` (as stored), ``labels`` ``{name: {voxel_fraction, hu_mean, hu_std,
    slice_fraction, cases_present}}``, ``tissue`` ``{air_hu_mean, body_hu_mean, body_fraction,
    fov_padding_voxels}`` (padding below -1024 HU excluded from air) and ``geometry_issues``
    ``{case_id: [problem, ...]}`` (identity or oblique affines, see :func:`.nifti.geometry_issues`).
    """
    ds = MSDDataset(root)
    cases = ds.cases[: max_cases] if max_cases is not None else ds.cases
    shapes, spacings, orient = [], [], Counter()
    acc = {v: np.zeros(3) for v in ds.labels}  # count, sum HU, sum HU²
    slices = {v: 0 for v in ds.labels}
    present = {v: 0 for v in ds.labels}
    n_slices = 0
    tissue = np.zeros(5)  # air count, air HU sum, body count, body HU sum, FOV padding count
    geometry: dict[str, list[str]] = {}
    for c in cases:
        with warnings.catch_warnings():  # listed in the summary instead
            warnings.simplefilter("ignore", GeometryWarning)
            img, lab = ds.load_case(c.id)
        issues = geometry_issues(img.original_affine)
        if issues:
            geometry[c.id] = issues
        hu, lb = img.array.astype(np.float64), lab.array
        shapes.append(hu.shape)
        spacings.append(img.spacing)
        orient[img.orientation] += 1
        n_slices += hu.shape[2]
        for v in ds.labels:
            m = lb == v
            n = int(m.sum())
            if n:
                vals = hu[m]
                acc[v] += (n, vals.sum(), (vals ** 2).sum())
                slices[v] += int(m.any(axis=(0, 1)).sum())
                present[v] += 1
        body = body_mask(img.array)
        pad = is_fov_padding(img.array)
        air = ~body & ~pad  # FOV padding is neither air nor body: it would drag the air mean to -2000
        tissue += (np.count_nonzero(air), hu[air].sum(), np.count_nonzero(body), hu[body].sum(),
                   np.count_nonzero(pad))
    total = sum(a[0] for a in acc.values())
    labels = {}
    for v, name in ds.labels.items():
        n, s, s2 = acc[v]
        mean = s / n if n else None
        labels[name] = {
            "value": v,
            "voxel_fraction": float(n / total) if total else 0.0,
            "hu_mean": None if mean is None else round(float(mean), 2),
            "hu_std": None if mean is None else round(float(np.sqrt(max(s2 / n - mean ** 2, 0.0))), 2),
            "slice_fraction": float(slices[v] / n_slices) if n_slices else 0.0,
            "cases_present": present[v],
        }
    arr = np.array(shapes) if shapes else np.zeros((0, 3))
    sp = np.array(spacings) if spacings else np.zeros((0, 3))
    return {
        "root": str(ds.root), "name": ds.name, "num_training": len(ds.cases), "num_test": len(ds.test_images),
        "cases_summarised": len(cases),
        "shape": _range(arr, 0), "spacing": _range(sp, 3), "orientations": dict(sorted(orient.items())),
        "labels": labels,
        "tissue": {
            "air_hu_mean": round(tissue[1] / tissue[0], 1) if tissue[0] else None,
            "body_hu_mean": round(tissue[3] / tissue[2], 1) if tissue[2] else None,
            "body_fraction": float(tissue[2] / (tissue[0] + tissue[2])) if tissue[0] + tissue[2] else 0.0,
            "fov_padding_voxels": int(tissue[4]),
        },
        "geometry_issues": geometry,
    }


def _range(a: np.ndarray, digits: int) -> dict | None:
    if not len(a):
        return None
    return {"min": [round(float(v), digits) for v in a.min(0)], "max": [round(float(v), digits) for v in a.max(0)]}


def format_summary(s: dict) -> str:
    """Human-readable text of :func:`dataset_summary`'s dict."""
    lines = [f"{s['name']}  ({s['root']})",
             f"cases: {s['num_training']} training, {s['num_test']} test; summarised {s['cases_summarised']}"]
    if s["shape"]:
        lines.append(f"shape (X,Y,Z) voxels: min {s['shape']['min']}  max {s['shape']['max']}")
        lines.append(f"spacing (mm):         min {s['spacing']['min']}  max {s['spacing']['max']}")
    lines.append("orientations (as stored): " + ", ".join(f"{k} {v}" for k, v in s["orientations"].items()))
    lines.append(f"{'label':<16}{'voxels %':>10}{'HU mean':>10}{'HU std':>9}{'slices %':>10}{'cases':>7}")
    for name, d in s["labels"].items():
        mean = "-" if d["hu_mean"] is None else f"{d['hu_mean']:.1f}"
        std = "-" if d["hu_std"] is None else f"{d['hu_std']:.1f}"
        lines.append(f"{d['value']}:{name:<14}{100 * d['voxel_fraction']:>10.4f}{mean:>10}{std:>9}"
                     f"{100 * d['slice_fraction']:>10.1f}{d['cases_present']:>7}")
    t = s["tissue"]
    lines.append(f"tissue check: air outside body {t['air_hu_mean']} HU, body {t['body_hu_mean']} HU "
                 f"({100 * t['body_fraction']:.1f}% of voxels)")
    if t.get("fov_padding_voxels"):
        lines.append(f"FOV padding (< -1024 HU, outside the scanned circle): {t['fov_padding_voxels']:,} voxels, "
                     "treated as air")
    lines += _format_geometry(s.get("geometry_issues", {}))
    return "\n".join(lines)


def _format_geometry(issues: dict[str, list[str]]) -> list[str]:
    if not issues:
        return []
    out = [f"geometry issues in {len(issues)} case(s):"]
    for cid, problems in issues.items():
        out += [f"  {cid}: {p}" for p in problems]
    return out


def volume_summary(vol: Volume) -> dict:
    """Summary of one volume (a NIfTI file or a DICOM series) for ``ctseg info FILE|DICOM_DIR``.

    Returns a JSON-ready dict: ``path``, ``shape`` (voxels, canonical RAS), ``spacing`` (mm),
    ``orientation`` (as stored), ``hu`` ``{min, max, mean}`` of voxels ≥ -1024 HU,
    ``fov_padding_voxels``, ``body_fraction`` and ``geometry_issues`` (list of strings).
    """
    a = vol.array
    pad = is_fov_padding(a)
    valid = a[~pad]
    body = body_mask(a)
    return {
        "path": str(vol.path), "shape": [int(v) for v in a.shape], "spacing": [round(float(v), 4) for v in vol.spacing],
        "orientation": vol.orientation,
        "hu": None if not valid.size else {"min": float(valid.min()), "max": float(valid.max()),
                                            "mean": round(float(valid.mean(dtype=np.float64)), 1)},
        "fov_padding_voxels": int(pad.sum()), "body_fraction": float(body.mean()),
        "geometry_issues": geometry_issues(vol.original_affine),
    }


def format_volume_summary(s: dict) -> str:
    """Human-readable text of :func:`volume_summary`'s dict."""
    lines = [s["path"],
             f"shape (X,Y,Z) voxels: {s['shape']}   spacing (mm): {s['spacing']}   stored as {s['orientation']}"]
    if s["hu"]:
        lines.append(f"HU: min {s['hu']['min']:.0f}, max {s['hu']['max']:.0f}, mean {s['hu']['mean']}; "
                     f"body {100 * s['body_fraction']:.1f}% of voxels")
    if s["fov_padding_voxels"]:
        lines.append(f"FOV padding (< -1024 HU, outside the scanned circle): {s['fov_padding_voxels']:,} voxels, "
                     "treated as air")
    lines += [f"geometry: {p}" for p in s["geometry_issues"]]
    return "\n".join(lines)

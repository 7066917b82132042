"""Synthetic CT phantoms in the MSD layout: the book's built-in dataset (no download needed).

:func:`write_dataset` writes a folder that looks like ``Task03_Liver`` / ``Task06_Lung`` of the
Medical Segmentation Decathlon (Antonelli et al. 2022): ``dataset.json``, ``imagesTr/liver_0.nii.gz``,
``labelsTr/...``, ``imagesTs/...``; images are int16 HU, labels uint8 with the MSD label names.

What makes the phantoms useful for teaching is that they carry the *difficulties* of the real data:

* geometry varies per case like real scans: in-plane spacing, slice thickness (1-5 mm), matrix size,
  body size, field of view, and every other case is stored **LPS** instead of RAS (real collections
  mix orientations), so a loader that skips :func:`nibabel.as_closest_canonical` sees mirrored anatomy;
* realistic HU values, partial-volume blur and correlated noise (:func:`~.phantom_shapes.form_image`);
  liver phantoms also randomise what differs between real studies — contrast phase, scanned range
  (heart to pelvis), noise level and grain, blur, field-of-view padding (:func:`sample_scanner`);
* real class imbalance: small lung tumours (≲ 0.2 % of voxels), tumour-free liver cases.

Each case is drawn from ``numpy.random.default_rng([seed, index, task])``, so case ``i`` is the
same whatever the number of cases written (and byte-identical for the same seed).  Anatomy is drawn
in canonical RAS+ (:mod:`.phantom_abdomen`, :mod:`.phantom_thorax`), then flipped for LPS cases.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CTSegError
from ..io import write_json_atomic
from ..tasks import get_task
from .nifti import save_nifti
from .phantom_shapes import Grid, form_image

#: Version of the phantom generator: bumped whenever the same (task, seed, index) draws a different
#: phantom, so cached phantom folders (``ctseg_lib.notebook.get_dataset``) are regenerated.
#: 2: one random stream per structure (``phantom_shapes.organ_streams``).
#: 3: (development state of 2026-11-29, superseded by 4)
#: 4: liver phantoms from the heart to the pelvis, contrast phases (portal-venous, delayed), a heart
#:    with wall and pericardial fat, spleens of varied size, scanner randomisation
#:    (:func:`sample_scanner`); lung phantoms unchanged.
GENERATOR_VERSION = 4
#: Marker file that identifies a folder written by :func:`write_dataset` (safe to overwrite).
MARKER = ".ctseg_synth.json"
SLICE_MM = np.array([1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0])


@dataclass(frozen=True)
class Geometry:
    """Sampled acquisition of one case: grid in anatomical mm and where it sits in scanner space."""

    x0: float
    y0: float
    z0: float
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    half_axes: tuple[float, float]  # body half-width (lateral) and half-depth (AP), mm
    fov_mm: float
    table_z: float  # scanner z of anatomical z = 0 (couch position), mm

    def grid(self) -> Grid:
        return Grid(*(np.asarray(o + s * np.arange(n), np.float32)
                      for o, s, n in zip((self.x0, self.y0, self.z0), self.spacing, self.shape)))

    def ras_affine(self) -> np.ndarray:
        aff = np.diag([*self.spacing, 1.0])
        aff[:3, 3] = (self.x0, self.y0, self.z0 + self.table_z)
        return aff


def sample_geometry(task: str, rng: np.random.Generator, scale: float = 1.0) -> Geometry:
    """Body size, field of view (≈ body width + 10-25 %), matrix, spacing and z coverage of a case.

    At ``scale=1`` matrices are 160-224 (≤ 256) in-plane with ≤ 2 mm pixels and 48-96 slices of
    1-5 mm (liver: up to 200 slices covering 280-600 mm, from the heart down to the pelvis when
    the slices are thick enough); ``scale`` multiplies the voxel counts and keeps the physical
    extent (spacing grows).
    """
    a = rng.uniform(140, 190) if task == "liver" else rng.uniform(145, 185)
    b = a * (rng.uniform(0.66, 0.8) if task == "liver" else rng.uniform(0.62, 0.74))
    fov = 2 * a / rng.uniform(0.78, 0.9)
    n = max(int(rng.integers(160, 225)), int(np.ceil(fov / 2.0)))
    n = min(n, 256)
    sz = float(rng.choice(SLICE_MM, p=[0.08, 0.07, 0.1, 0.15, 0.15, 0.15, 0.1, 0.2]))
    extent = rng.uniform(280, 600) if task == "liver" else rng.uniform(220, 320)
    nz = int(np.clip(round(extent / sz), 48, 200 if task == "liver" else 96))
    ns, nzs = max(16, round(n * scale)), max(8, round(nz * scale))
    sx, szs = fov / ns, sz * nz / nzs
    if task == "liver":  # a liver scan holds the whole liver (~170 mm below the dome): thin-slice scans,
        top = rng.uniform(10, 100 if nz * sz >= 300 else 40)  # which cover less, start just above it
    else:
        top = rng.uniform(-30, 0) + nz * sz / 2
    return Geometry(
        x0=-(ns - 1) / 2 * sx + rng.uniform(-15, 15), y0=-(ns - 1) / 2 * sx + rng.uniform(-20, 10),
        z0=top - (nzs - 1) * szs, shape=(ns, ns, nzs), spacing=(sx, sx, szs), half_axes=(a, b),
        fov_mm=fov, table_z=-rng.uniform(100, 800),
    )


#: Values scanners write outside the reconstructed field of view, and how often the phantoms use them.
PADDING_HU = {-1024: 0.5, -2048: 0.2, -3024: 0.3}


def sample_scanner(rng: np.random.Generator) -> dict:
    """What varies between scanners and protocols, as keyword arguments of :func:`form_image`.

    Noise 6-35 HU (dose, patient size), its grain 0.5-1.3 voxel (reconstruction kernel),
    partial-volume blur 0.5-1.1 voxel, and the field-of-view padding value (:data:`PADDING_HU`).
    """
    pads = list(PADDING_HU)
    return {"noise_sd": float(rng.uniform(6, 35)), "noise_sigma": float(rng.uniform(0.5, 1.3)),
            "blur": float(rng.uniform(0.5, 1.1)),
            "padding": int(pads[int(rng.choice(len(pads), p=list(PADDING_HU.values())))])}


def to_lps(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Store a RAS+ array as LPS: flip array axes 0 and 1; the affine keeps world coordinates."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = array.shape[0] - 1, array.shape[1] - 1
    return np.ascontiguousarray(array[::-1, ::-1, :]), affine @ flip


def generate_case(task: str, seed: int, index: int = 0, scale: float = 1.0,
                  orientation: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw case ``index`` of ``task`` ("liver" or "lung").

    Returns:
        ``(image, label, affine)``: int16 HU ``(X, Y, Z)``, uint8 labels (MSD values), 4×4 affine
        (mm) — arrays in *file order*, i.e. flipped when ``orientation`` is "LPS".  Default
        orientation: LPS for odd ``index + seed``, so any two consecutive cases give both kinds.
    """
    spec = get_task(task)
    if not scale > 0:
        raise CTSegError(f"scale must be > 0, got {scale}")
    rng = np.random.default_rng([int(seed), int(index), spec.code])
    geo = sample_geometry(task, rng, scale)
    g = geo.grid()
    cv = spec.phantom_function()(g, rng, *geo.half_axes)
    if task == "liver":  # scanner randomisation (generator version 3; the lung phantoms are as in 2)
        scanner = sample_scanner(rng)
        image = form_image(cv, g, rng, fov_radius=geo.fov_mm / 2, **scanner)
    else:
        image = form_image(cv, g, rng, noise_sd=rng.uniform(10, 25), fov_radius=geo.fov_mm / 2)
    label, affine = cv.lab, geo.ras_affine()
    orientation = orientation or ("LPS" if (index + seed) % 2 else "RAS")
    if orientation == "LPS":
        image, affine2 = to_lps(image, affine)
        label, affine = to_lps(label, affine)[0], affine2
    elif orientation != "RAS":
        raise CTSegError(f"orientation must be 'RAS' or 'LPS', got {orientation!r}")
    return image, label, affine


def write_dataset(task: str, out: str | Path, cases: int, seed: int = 0, test_cases: int = 0,
                  scale: float = 1.0, overwrite: bool = False, progress=None) -> Path:
    """Write an MSD-layout synthetic dataset to ``out`` and return ``out``.

    Training cases are ``{prefix}_0 .. {prefix}_{cases-1}``; test images continue from
    ``max(100, cases)`` (no labels).  Refuses a non-empty folder that is not an earlier synth output
    unless ``overwrite``; files of an earlier synth output that the new listing drops are removed.
    ``progress(i, n)`` is called after each case.
    """
    spec = get_task(task)
    if cases < 1 or test_cases < 0:
        raise CTSegError(f"need cases ≥ 1 and test cases ≥ 0, got {cases} and {test_cases}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CTSegError("output exists and is not a folder", out)
    previous = _previous_listing(out)
    if out.is_dir() and any(out.iterdir()) and previous is None and not overwrite:
        raise CTSegError("folder is not empty and was not written by 'ctseg synth'; "
                         "choose an empty folder or pass --overwrite", out)
    out.mkdir(parents=True, exist_ok=True)
    params = {"task": task, "cases": cases, "test_cases": test_cases, "seed": seed, "scale": scale,
              "generator_version": GENERATOR_VERSION}
    write_json_atomic(out / MARKER, params)
    p = spec.name
    training = [{"image": f"./imagesTr/{p}_{i}.nii.gz", "label": f"./labelsTr/{p}_{i}.nii.gz"}
                for i in range(cases)]
    first_test = max(100, cases)
    test = [f"./imagesTs/{p}_{first_test + j}.nii.gz" for j in range(test_cases)]
    for previous_file in (previous or set()) - {*(e[k] for e in training for k in e), *test}:
        target = (out / previous_file).resolve()
        if out.resolve() in target.parents:
            target.unlink(missing_ok=True)
    total = cases + test_cases
    for n, i in enumerate([*range(cases), *range(first_test, first_test + test_cases)]):
        img, lab, aff = generate_case(task, seed, i, scale)
        split = "Tr" if i < cases else "Ts"
        save_nifti(out / f"images{split}" / f"{p}_{i}.nii.gz", img, aff)
        if split == "Tr":
            save_nifti(out / "labelsTr" / f"{p}_{i}.nii.gz", lab, aff)
        if progress is not None:
            progress(n + 1, total)
    write_json_atomic(out / "dataset.json", {
        "name": spec.synthetic_name, "description": spec.description, "reference": "ctseg_lib.data.synthetic",
        "licence": "CC0", "tensorImageSize": "3D", "modality": {"0": "CT"}, "labels": spec.json_labels(),
        "numTraining": cases, "numTest": test_cases, "training": training, "test": test,
        "ctseg_synthetic": params,
    })
    return out


def _previous_listing(out: Path) -> set[str] | None:
    """Relative paths listed by an earlier synth output in ``out`` (None if it is not one)."""
    if not (out / MARKER).is_file():
        return None
    try:
        meta = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
        files = {e[k] for e in meta["training"] for k in ("image", "label")} | set(meta["test"])
        return {f for f in files if isinstance(f, str)}
    except (OSError, ValueError, KeyError, TypeError):
        return set()  # interrupted earlier run: marker but no (valid) dataset.json

"""Two real patient CT scans with reference masks, vendored in the repository (``samples/realct``).

The book runs on phantoms; these two small, redistributable real scans are for the real-CT lessons
(HU, headers, domain shift) and for tests of the real-data path:

* ``msd_liver_0`` — MSD Task03 ``liver_0`` (= LiTS training volume 0), contrast-enhanced abdominal
  CT, stored LAS, 5 mm slices, -3024 HU outside the scanner's field of view; one mask ``liver``
  (liver *with the tumour merged in*).  CC BY-SA 4.0 (share-alike: the compact copies stay CC BY-SA 4.0).
* ``lidc_0001`` — LIDC-IDRI-0001, thoracic CT, stored LPS, 2.5 mm slices, -2048 HU outside the field
  of view, one large nodule outlined by four radiologists; masks ``nodule_consensus`` (≥ 2 of 4
  readers) and ``nodule_readers`` (0-4, how many readers outlined the voxel).  CC BY 3.0.

The files are compact copies (cropped to the body, 1.5 mm in-plane, original slice spacing and
orientation) made by ``tools/make_samples.py`` from the full-size originals; ``samples/realct/README.md``
has the provenance, the attribution to keep on every page that uses them, and the licences.  They
are for teaching and research, not clinical use.  They are *not* installed with the pip package:
:func:`sample_dir` finds them in the repository checkout (or wherever ``CTSEG_SAMPLES`` points).

Example::

    from ctseg_lib.data.samples import load_sample
    s = load_sample("msd_liver_0")
    s.image.array.shape, s.image.spacing, s.image.orientation   # (240, 180, 75), (1.5, 1.5, 5.0), 'LAS'
    liver = s.labels["liver"].array > 0
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CTSegError
from .msd import check_same_grid
from .nifti import Volume, load_nifti

#: Environment variable that overrides where the samples are looked for (the folder holding the files).
ENV_VAR = "CTSEG_SAMPLES"

_MSD_ATTRIBUTION = (
    "Medical Segmentation Decathlon, Task03_Liver case liver_0 (= LiTS training volume 0), CC BY-SA 4.0; "
    "Antonelli et al., 'The Medical Segmentation Decathlon', Nature Communications 13, 4128 (2022); "
    "Bilic et al., 'The Liver Tumor Segmentation Benchmark (LiTS)', Medical Image Analysis 84, 102680 (2023). "
    "Cropped and resampled to 1.5 mm in-plane by tools/make_samples.py; the derived files are CC BY-SA 4.0."
)
_LIDC_ATTRIBUTION = (
    "LIDC-IDRI-0001 via The Cancer Imaging Archive, CC BY 3.0; Armato et al., 'The Lung Image Database "
    "Consortium (LIDC) and Image Database Resource Initiative (IDRI)', Medical Physics 38(2), 915-931 (2011); "
    "Clark et al., 'The Cancer Imaging Archive (TCIA)', Journal of Digital Imaging 26(6), 1045-1057 (2013). "
    "Nodule masks filled from the four readers' outlines; cropped and resampled to 1.5 mm in-plane by "
    "tools/make_samples.py."
)


@dataclass(frozen=True)
class SampleInfo:
    """What a vendored sample is: its files (names inside :func:`sample_dir`) and how to cite it."""

    task: str
    image: str
    labels: dict[str, str]
    licence: str
    licence_url: str
    attribution: str
    label_semantics: str


#: The vendored samples, by name.  ``tools/make_samples.py`` writes exactly these files.
SAMPLES: dict[str, SampleInfo] = {
    "msd_liver_0": SampleInfo(
        task="liver",
        image="msd_liver_0_ct.nii.gz",
        labels={"liver": "msd_liver_0_liver.nii.gz"},
        licence="CC BY-SA 4.0",
        licence_url="https://creativecommons.org/licenses/by-sa/4.0/",
        attribution=_MSD_ATTRIBUTION,
        label_semantics="liver: 1 = liver with the tumour merged in (no separate tumour label); "
                        "a good but not perfect reference, edges may be off by a slice",
    ),
    "lidc_0001": SampleInfo(
        task="lung",
        image="lidc_0001_ct.nii.gz",
        labels={"nodule_consensus": "lidc_0001_nodule_consensus.nii.gz",
                "nodule_readers": "lidc_0001_nodule_readers.nii.gz"},
        licence="CC BY 3.0",
        licence_url="https://creativecommons.org/licenses/by/3.0/",
        attribution=_LIDC_ATTRIBUTION,
        label_semantics="nodule_consensus: 1 = nodule where at least 2 of the 4 radiologists agree; "
                        "nodule_readers: 0-4 = how many of the 4 radiologists outlined the voxel as nodule",
    ),
}


@dataclass
class RealSample:
    """One real CT with its reference masks, all canonical RAS+ on the same grid.

    Attributes:
        name: sample name, e.g. ``"msd_liver_0"``.
        task: ``"liver"`` or ``"lung"``.
        image: the CT, float32 HU ``(X, Y, Z)``; :attr:`Volume.orientation` is the file's own
            convention (``"LAS"`` / ``"LPS"``).
        labels: ``{name: Volume}`` of uint8 masks on the image's grid (see ``label_semantics``).
        licence: e.g. ``"CC BY-SA 4.0"``; ``licence_url`` its deed.
        attribution: the citation to show wherever the sample is used.
        label_semantics: what the label values mean.
    """

    name: str
    task: str
    image: Volume
    labels: dict[str, Volume]
    licence: str
    licence_url: str
    attribution: str
    label_semantics: str
    files: dict[str, Path] = field(default_factory=dict)


def checkout_candidates(relative: str) -> list[Path]:
    """Where a folder of the repository checkout (``relative``, e.g. ``"samples/realct"``) may be: beside
    the package this module was imported from, then under the current directory and each of its parents."""
    cwd = Path.cwd().resolve()
    return [Path(__file__).resolve().parents[2] / relative, *(d / relative for d in (cwd, *cwd.parents))]


def find_checkout_folder(env_var: str, candidates: list[Path], what: str) -> Path:
    """``$env_var`` when set, else the first existing folder of ``candidates``: the lookup of the files
    that live in the repository but not in the pip package (real CT samples, shipped weights).

    Raises:
        CTSegError: ``$env_var`` names no folder, or no candidate exists (naming the first one).
    """
    env = os.environ.get(env_var)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise CTSegError(f"{env_var} is set but is not a folder with the {what}", path)
        return path
    for path in candidates:
        if path.is_dir():
            return path
    raise CTSegError(f"{what} not found: they are in the repository ({candidates[0].parent.name}/"
                     f"{candidates[0].name}), not in the pip package; clone the repository or set {env_var} "
                     "to that folder", candidates[0])


def _candidates() -> list[Path]:
    return checkout_candidates("samples/realct")


def sample_dir() -> Path:
    """The folder with the vendored sample files.

    ``$CTSEG_SAMPLES`` when set; otherwise ``samples/realct`` of the repository checkout this
    package was imported from, or of the current directory or one of its parents.

    Raises:
        CTSegError: the folder does not exist (a pip-installed package has no samples: clone the
            repository or point ``CTSEG_SAMPLES`` at its ``samples/realct``).
    """
    return find_checkout_folder(ENV_VAR, _candidates(), "real CT samples")


def list_samples() -> list[str]:
    """Names of the samples present in :func:`sample_dir` (whose CT file exists), sorted."""
    root = sample_dir()
    return sorted(name for name, info in SAMPLES.items() if (root / info.image).is_file())


def load_sample(name: str) -> RealSample:
    """Load a vendored real CT and its masks as canonical RAS+ :class:`Volume` s.

    Args:
        name: one of :data:`SAMPLES` (``"msd_liver_0"``, ``"lidc_0001"``).

    Returns:
        A :class:`RealSample`: ``image.array`` float32 HU ``(X, Y, Z)``, ``labels[k].array`` uint8,
        spacing in mm (1.5 mm in-plane; 5.0 / 2.5 mm slices).

    Raises:
        CTSegError: unknown name, samples folder or a file missing/corrupt, a mask off the CT's grid.
    """
    if name not in SAMPLES:
        raise CTSegError(f"unknown real CT sample {name!r}; available: {', '.join(sorted(SAMPLES))}")
    info = SAMPLES[name]
    root = sample_dir()
    files = {"image": root / info.image, **{k: root / f for k, f in info.labels.items()}}
    image = load_nifti(files["image"], kind="image")
    labels = {}
    for key, f in info.labels.items():
        lab = load_nifti(root / f, kind="label")
        check_same_grid(image, lab)
        labels[key] = lab
    return RealSample(name=name, task=info.task, image=image, labels=labels, licence=info.licence,
                      licence_url=info.licence_url, attribution=info.attribution,
                      label_semantics=info.label_semantics, files=files)

"""The Medical Segmentation Decathlon (MSD) dataset layout.

An MSD task folder (Antonelli et al. 2022, http://medicaldecathlon.com) looks like::

    Task03_Liver/
        dataset.json      # name, labels, modality, training [{image, label}], test [paths]
        imagesTr/liver_0.nii.gz ...
        labelsTr/liver_0.nii.gz ...
        imagesTs/liver_132.nii.gz ...

Cases are listed **from dataset.json, never by globbing**: the official tar also contains macOS
resource-fork files (``imagesTr/._liver_0.nii.gz``) that are not NIfTI at all and would crash a
``glob("*.nii.gz")`` loader.  Real volumes are large (Task03: 512×512×up to ~1000 slices), so
:class:`MSDDataset` loads one case at a time.  The synthetic phantoms of
:mod:`ctseg_lib.data.synthetic` use exactly this layout, so the same code runs on both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import CTSegError
from .nifti import Volume, load_nifti

REQUIRED_KEYS = ("name", "labels", "training")
#: Tolerance (mm) when comparing image and label affines.
AFFINE_ATOL_MM = 1e-3


@dataclass(frozen=True)
class Case:
    """One training case: its id (file name without ``.nii.gz``) and absolute paths."""

    id: str
    image: Path
    label: Path | None


def case_id(path: str | Path) -> str:
    """``"./imagesTr/liver_7.nii.gz"`` → ``"liver_7"``."""
    name = Path(path).name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


class MSDDataset:
    """An MSD task folder, described by its ``dataset.json``.

    Args:
        root: the task folder (contains ``dataset.json``).
        check_files: verify that every listed file exists (cheap; no NIfTI is read).

    Attributes:
        name, description, modality: from the JSON.
        labels: ``{0: "background", 1: "liver", 2: "cancer"}`` (int keys).
        cases: training :class:`Case` list, in JSON order.
        test_images: paths of the unlabelled test images.
    """

    def __init__(self, root: str | Path, check_files: bool = True) -> None:
        self.root = Path(root).resolve()
        self.json_path = self.root / "dataset.json"
        meta = self._read_json()
        self.meta = meta
        self.name: str = str(meta["name"])
        self.description: str = str(meta.get("description", ""))
        self.modality = meta.get("modality", {})
        self.labels = self._parse_labels(meta["labels"])
        self.cases = self._parse_training(meta["training"], check_files)
        test = meta.get("test", [])
        if not isinstance(test, list):
            raise CTSegError("'test' must be a list of paths", self.json_path)
        self.test_images = [self._resolve(p, "test", check_files) for p in test]

    # -- parsing ---------------------------------------------------------------------------
    def _read_json(self) -> dict:
        if not self.root.is_dir():
            raise CTSegError("dataset folder not found", self.root)
        if not self.json_path.is_file():
            raise CTSegError("dataset.json is missing: not an MSD task folder", self.json_path)
        try:
            meta = json.loads(self.json_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CTSegError(f"invalid JSON ({e})", self.json_path) from None
        except RecursionError:  # e.g. "[[[[..." 100k deep: a hostile file, not a bug of ours
            raise CTSegError("invalid JSON (nested too deeply)", self.json_path) from None
        if not isinstance(meta, dict):
            raise CTSegError("top level must be a JSON object", self.json_path)
        missing = [k for k in REQUIRED_KEYS if k not in meta]
        if missing:
            raise CTSegError(f"missing required key(s) {missing}", self.json_path)
        return meta

    def _parse_labels(self, labels: object) -> dict[int, str]:
        if not isinstance(labels, dict) or not labels:
            raise CTSegError("'labels' must be a non-empty object like {\"0\": \"background\"}", self.json_path)
        out: dict[int, str] = {}
        for k, v in labels.items():
            try:
                out[int(k)] = str(v)
            except (TypeError, ValueError):
                raise CTSegError(f"label key {k!r} is not an integer", self.json_path) from None
        if 0 not in out:
            raise CTSegError("'labels' must declare 0 (background)", self.json_path)
        return dict(sorted(out.items()))

    def _resolve(self, rel: object, what: str, check: bool) -> Path:
        if not isinstance(rel, str) or not rel:
            raise CTSegError(f"{what}: path must be a non-empty string, got {rel!r}", self.json_path)
        if "\x00" in rel:  # Path.resolve() raises a bare ValueError on NUL bytes
            raise CTSegError(f"{what}: path {rel!r} contains a NUL byte", self.json_path)
        # Containment is checked on the path as written (relative, no '..'), not on where it points:
        # case files that are symbolic links to a shared disk (a common MSD/nnU-Net layout) are fine.
        written = PurePosixPath(rel.replace("\\", "/"))
        drive = bool(written.parts) and written.parts[0][1:2] == ":"  # "C:/..." written on Windows
        if written.is_absolute() or drive or ".." in written.parts or not written.parts:
            raise CTSegError(f"{what}: path {rel!r} escapes the dataset folder", self.json_path)
        p = self.root.joinpath(*written.parts)
        if Path(rel).name.startswith("._"):
            raise CTSegError(f"{what}: {rel!r} is a macOS resource-fork file, not an image", self.json_path)
        if check and not p.is_file():
            raise CTSegError(f"{what}: listed file {rel!r} does not exist", self.json_path)
        return p

    def _parse_training(self, training: object, check: bool) -> list[Case]:
        if not isinstance(training, list):
            raise CTSegError("'training' must be a list of {image, label} objects", self.json_path)
        cases: list[Case] = []
        seen: set[str] = set()
        for i, entry in enumerate(training):
            if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
                raise CTSegError(f"training[{i}] must have 'image' and 'label'", self.json_path)
            img = self._resolve(entry["image"], f"training[{i}].image", check)
            lab = self._resolve(entry["label"], f"training[{i}].label", check)
            cid = case_id(img)
            if cid in seen:
                raise CTSegError(f"duplicate case id {cid!r} in training[{i}]", self.json_path)
            seen.add(cid)
            cases.append(Case(cid, img, lab))
        return cases

    # -- access ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.cases)

    def __repr__(self) -> str:
        return f"MSDDataset({self.name!r}, {len(self)} training cases, labels={self.labels})"

    @property
    def case_ids(self) -> list[str]:
        return [c.id for c in self.cases]

    @property
    def num_classes(self) -> int:
        """Number of output channels a segmentation model needs (background included)."""
        return max(self.labels) + 1

    def case(self, key: int | str) -> Case:
        """A case by index or id."""
        if isinstance(key, str):
            for c in self.cases:
                if c.id == key:
                    return c
            raise CTSegError(f"no case {key!r} in dataset", self.json_path)
        return self.cases[key]

    def load_image(self, key: int | str) -> Volume:
        return load_nifti(self.case(key).image, "image")

    def load_label(self, key: int | str) -> Volume:
        c = self.case(key)
        if c.label is None:
            raise CTSegError("case has no label", c.image)
        lab = load_nifti(c.label, "label")
        declared = set(self.labels)
        found = set(np.unique(lab.array).tolist())
        undeclared = sorted(found - declared)
        if undeclared:
            raise CTSegError(f"label values {undeclared} are not declared in dataset.json "
                             f"(declared: {sorted(declared)})", c.label)
        return lab

    def load_case(self, key: int | str | Case) -> tuple[Volume, Volume]:
        """Load image and label of one case (index, id or a :class:`Case` of ``.cases``), checking that they
        share one voxel grid."""
        if isinstance(key, Case):
            if key not in self.cases:
                raise CTSegError(f"case {key.id!r} ({key.image}) is not a case of this dataset", self.json_path)
            key = key.id
        img, lab = self.load_image(key), self.load_label(key)
        check_same_grid(img, lab)
        return img, lab


def check_same_grid(a: Volume, b: Volume, atol_mm: float = AFFINE_ATOL_MM) -> None:
    """Raise :class:`CTSegError` unless ``a`` and ``b`` have the same shape and affine."""
    if a.original_shape != b.original_shape:
        raise CTSegError(f"shape {b.original_shape} does not match image shape {a.original_shape} "
                         f"({a.path})", b.path)
    diff = float(np.max(np.abs(a.original_affine - b.original_affine)))
    if diff > atol_mm:
        raise CTSegError(f"affine differs from the image's ({a.path}) by up to {diff:.4g} mm", b.path)

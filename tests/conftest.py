"""Shared fixtures: tiny MSD-layout datasets written on the fly (RAS and LPS cases)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from ctseg_lib.data.nifti import save_nifti

# The suite checks algorithms with float32 tolerances on every machine: CPU bfloat16 inference (on by
# default where the CPU has native bf16, see ctseg_lib.inference.cpu_bf16) is tested on its own in
# tests/test_inference_bf16.py, which sets the variable itself.
os.environ["CTSEG_CPU_BF16"] = "0"


def ras_affine(spacing=(1.5, 1.2, 3.0), origin=(-30.0, -20.0, 10.0)) -> np.ndarray:
    a = np.diag([*spacing, 1.0])
    a[:3, 3] = origin
    return a


def to_lps(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same scan stored LPS: flip array axes 0 and 1 and adjust the affine so world coords agree."""
    flipped = array[::-1, ::-1, :].copy()
    flip = np.eye(4)
    flip[0, 0] = flip[1, 1] = -1
    flip[0, 3] = array.shape[0] - 1
    flip[1, 3] = array.shape[1] - 1
    return flipped, affine @ flip


def toy_case(shape=(24, 20, 8), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """An 'abdomen': body ellipse of fat/muscle, a bright 'liver' and a dark 'tumour' inside it."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    cx, cy = shape[0] / 2, shape[1] / 2
    body = ((x - cx) / (0.45 * shape[0])) ** 2 + ((y - cy) / (0.45 * shape[1])) ** 2 <= 1
    liver = ((x - cx - 3) / 6) ** 2 + ((y - cy) / 5) ** 2 + ((z - shape[2] / 2) / 3) ** 2 <= 1
    tumour = ((x - cx - 3) / 2) ** 2 + ((y - cy) / 2) ** 2 + ((z - shape[2] / 2) / 1.5) ** 2 <= 1
    img = np.full(shape, -1000.0, np.float32)
    img[body] = 40
    img[liver] = 100
    img[tumour] = 40
    img += rng.normal(0, 10, shape).astype(np.float32)
    lab = np.zeros(shape, np.uint8)
    lab[liver] = 1
    lab[tumour] = 2
    return img.astype(np.int16), lab


def write_msd(root: Path, n: int = 3, lps: tuple[int, ...] = (1,), shape=(24, 20, 8),
              labels=None, junk: bool = True) -> Path:
    """Write an MSD-layout dataset with ``n`` cases; indices in ``lps`` are stored LPS."""
    root = Path(root)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    training = []
    for i in range(n):
        img, lab = toy_case(shape, seed=i)
        aff = ras_affine()
        if i in lps:
            img, aff = to_lps(img, aff)
            lab, _ = to_lps(lab, ras_affine())
        save_nifti(root / "imagesTr" / f"toy_{i}.nii.gz", img, aff)
        save_nifti(root / "labelsTr" / f"toy_{i}.nii.gz", lab, aff)
        training.append({"image": f"./imagesTr/toy_{i}.nii.gz", "label": f"./labelsTr/toy_{i}.nii.gz"})
    if junk:  # what the real MSD tar contains: macOS resource forks that are not NIfTI
        (root / "imagesTr" / "._toy_0.nii.gz").write_bytes(b"\x00\x05\x16\x07Mac OS X        ")
        (root / "labelsTr" / "._toy_0.nii.gz").write_bytes(b"\x00\x05\x16\x07Mac OS X        ")
    meta = {
        "name": "Toy", "description": "test data", "modality": {"0": "CT"},
        "labels": labels or {"0": "background", "1": "liver", "2": "cancer"},
        "numTraining": n, "numTest": 0, "training": training, "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.fixture
def msd_root(tmp_path: Path) -> Path:
    """A 3-case MSD-layout dataset (case 1 stored LPS) with ``._*`` junk files present."""
    return write_msd(tmp_path / "Task99_Toy")

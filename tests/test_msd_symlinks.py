"""MSD folders whose case files are symbolic links (issue 19).

Many people lay out MSD / nnU-Net data on shared disks as a folder of symlinks.  Containment is about
the path *written in dataset.json* (relative, no ``..``), not where a symlink points: the old check
resolved the links first and refused every such dataset with "escapes the dataset folder".
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from ctseg_lib.data.msd import MSDDataset
from ctseg_lib.errors import CTSegError
from tests.conftest import write_msd

pytestmark = pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")


def _symlinked_dataset(tmp_path, per_file: bool = True):
    """A dataset whose NIfTI files live in ``shared/`` and are linked into the task folder.

    ``per_file``: one symlink per case file (targets renamed to blob-like names, so the link name and
    the target name differ); otherwise ``imagesTr/`` and ``labelsTr/`` are links to folders.
    """
    src = write_msd(tmp_path / "build" / "Task99_Toy", junk=False)
    shared = tmp_path / "shared"
    task = tmp_path / "datasets" / "Task99_Toy"
    task.mkdir(parents=True)
    shutil.copy(src / "dataset.json", task / "dataset.json")
    for sub in ("imagesTr", "labelsTr"):
        if per_file:
            (shared / sub).mkdir(parents=True)
            (task / sub).mkdir()
            for i, f in enumerate(sorted((src / sub).iterdir())):
                blob = shared / sub / f"blob_{sub}_{i:03d}.nii.gz"
                shutil.move(f, blob)
                (task / sub / f.name).symlink_to(blob)
        else:
            shutil.move(src / sub, shared / sub)
            (task / sub).symlink_to(shared / sub, target_is_directory=True)
    return task


@pytest.mark.parametrize("per_file", [True, False], ids=["file-links", "folder-links"])
def test_symlinked_case_files_load(tmp_path, per_file):
    task = _symlinked_dataset(tmp_path, per_file)
    ds = MSDDataset(task)
    assert ds.case_ids == ["toy_0", "toy_1", "toy_2"]  # ids from the names in dataset.json, not the targets
    assert ds.cases[0].image == task.resolve() / "imagesTr" / "toy_0.nii.gz"
    assert ds.cases[0].image.resolve() != ds.cases[0].image  # really a link to elsewhere
    img, lab = ds.load_case("toy_1")
    assert img.orientation == "LPS" and img.array.shape == lab.array.shape == (24, 20, 8)
    assert set(np.unique(lab.array)) <= {0, 1, 2}


def test_dangling_symlink_is_reported_as_missing(tmp_path):
    task = _symlinked_dataset(tmp_path)
    (tmp_path / "shared" / "labelsTr" / "blob_labelsTr_002.nii.gz").unlink()
    with pytest.raises(CTSegError, match=r"training\[2\]\.label: listed file './labelsTr/toy_2.nii.gz' does not exist"):
        MSDDataset(task)


@pytest.mark.parametrize("bad", [
    "../Task99_Toy/imagesTr/toy_0.nii.gz",          # '..' even though it comes back inside
    "./imagesTr/../../shared/imagesTr/blob_imagesTr_000.nii.gz",
    "imagesTr/..\\..\\x.nii.gz",                     # Windows separators
    "/etc/passwd",
    "C:/data/toy_0.nii.gz",
    ".",
])
def test_dotdot_and_absolute_paths_are_still_refused(tmp_path, bad):
    task = _symlinked_dataset(tmp_path)
    meta = json.loads((task / "dataset.json").read_text())
    meta["training"][0]["image"] = bad
    (task / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(CTSegError, match="escapes the dataset folder") as e:
        MSDDataset(task, check_files=False)
    assert "dataset.json" in str(e.value)

from __future__ import annotations

import json

import numpy as np
import pytest

from ctseg_lib.data.msd import MSDDataset, case_id
from ctseg_lib.data.nifti import save_nifti
from ctseg_lib.errors import CTSegError
from tests.conftest import ras_affine, write_msd


def test_parses_json_ignores_junk_and_loads_cases(msd_root):
    ds = MSDDataset(msd_root)
    assert ds.case_ids == ["toy_0", "toy_1", "toy_2"]  # ._toy_0 junk present on disk, not listed
    assert ds.labels == {0: "background", 1: "liver", 2: "cancer"}
    assert ds.num_classes == 3
    img0, lab0 = ds.load_case(0)
    img1, lab1 = ds.load_case("toy_1")  # stored LPS
    assert img1.orientation == "LPS" and img0.orientation == "RAS"
    assert img0.array.shape == img1.array.shape == lab1.array.shape
    assert set(np.unique(lab1.array)) <= {0, 1, 2}


def test_case_id():
    assert case_id("./imagesTr/liver_7.nii.gz") == "liver_7"
    assert case_id("a/b.nii") == "b"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda m: m.pop("training"), "missing required key"),
        (lambda m: m.update(labels=[]), "labels"),
        (lambda m: m["training"][0].update(image="../../etc/passwd"), "escapes the dataset folder"),
        (lambda m: m["training"].append(dict(m["training"][0])), "duplicate case id"),
        (lambda m: m["training"][0].update(image="./imagesTr/._toy_0.nii.gz"), "resource-fork"),
        (lambda m: m["training"][1].update(label="./labelsTr/missing.nii.gz"), "does not exist"),
        (lambda m: m.update(labels={"x": "bg"}), "not an integer"),
    ],
)
def test_malformed_dataset_json(msd_root, mutate, message):
    meta = json.loads((msd_root / "dataset.json").read_text())
    mutate(meta)
    (msd_root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(CTSegError, match=message) as e:
        MSDDataset(msd_root)
    assert "dataset.json" in str(e.value)


def test_missing_and_invalid_json(tmp_path, msd_root):
    with pytest.raises(CTSegError, match="dataset.json is missing"):
        MSDDataset(tmp_path / "Task99_Toy" / "imagesTr")
    (msd_root / "dataset.json").write_text("{not json")
    with pytest.raises(CTSegError, match="invalid JSON"):
        MSDDataset(msd_root)


def test_undeclared_label_values(tmp_path):
    root = write_msd(tmp_path / "T", labels={"0": "background", "1": "liver"})
    ds = MSDDataset(root)
    with pytest.raises(CTSegError, match=r"label values \[2\] are not declared"):
        ds.load_case(0)


def test_shape_and_affine_mismatch(msd_root):
    ds = MSDDataset(msd_root)
    lab = ds.load_label(0)
    save_nifti(msd_root / "labelsTr" / "toy_0.nii.gz", lab.array[:-1], ras_affine())
    with pytest.raises(CTSegError, match="shape"):
        ds.load_case(0)
    shifted = ras_affine()
    shifted[0, 3] += 5.0
    save_nifti(msd_root / "labelsTr" / "toy_0.nii.gz", lab.array, shifted)
    with pytest.raises(CTSegError, match="affine differs"):
        ds.load_case(0)

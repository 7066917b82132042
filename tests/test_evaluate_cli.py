"""``ctseg evaluate`` on tiny NIfTIs: matching by case id, CSV contents, geometry and missing-file errors."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from ctseg_lib.cli import main
from ctseg_lib.data.nifti import save_nifti

from .conftest import ras_affine, write_msd


def _lab(shift=0):
    a = np.zeros((12, 10, 6), np.uint8)
    a[2 + shift:8 + shift, 2:8, 1:5] = 1
    a[4:6, 4:6, 2:4] = 2
    return a


def _folders(tmp_path: Path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for i, shift in enumerate([0, 1]):
        save_nifti(gt / f"case_{i}.nii.gz", _lab(), ras_affine())
        save_nifti(pred / f"case_{i}.nii.gz", _lab(shift), ras_affine())
    (pred / "._case_0.nii.gz").write_bytes(b"\x00\x05\x16\x07Mac OS X")  # must be ignored
    return gt, pred


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_evaluate_writes_csv_and_prints_table(tmp_path, capsys):
    gt, pred = _folders(tmp_path)
    out = tmp_path / "m" / "metrics.csv"
    rc = main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out),
               "--labels", '{"0": "bg", "1": "liver", "2": "tumour"}', "--regions", '{"liver+tumour": [1, 2]}'])
    assert rc == 0
    rows = _read(out)
    assert [(r["case"], r["label"]) for r in rows] == [
        ("case_0", "1"), ("case_0", "2"), ("case_0", "1+2"), ("case_1", "1"), ("case_1", "2"), ("case_1", "1+2")]
    assert {"case", "label", "dice", "hd95", "nsd", "iou", "vol_diff_ml", "gt_voxels"} <= set(rows[0])
    assert float(rows[0]["dice"]) == 1.0 and float(rows[0]["hd95"]) == 0.0
    # case_1 liver+tumour: 6×6×4 block shifted by one voxel along x → TP 5·6·4 = 120 of 144
    assert float(rows[5]["dice"]) == pytest.approx(2 * 120 / 288)
    assert float(rows[5]["hd95"]) == pytest.approx(1.5)  # sx = 1.5 mm
    text = capsys.readouterr().out
    assert "dice_mean" in text and "liver+tumour" in text
    assert not list(out.parent.glob(".tmp-*"))


def test_labels_inferred_when_not_given(tmp_path):
    gt, pred = _folders(tmp_path)
    out = tmp_path / "metrics.csv"
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out)]) == 0
    assert [r["label_name"] for r in _read(out)][:2] == ["label_1", "label_2"]


def test_geometry_mismatch_names_the_file(tmp_path, capsys):
    gt, pred = _folders(tmp_path)
    save_nifti(pred / "case_1.nii.gz", _lab(), ras_affine(spacing=(1.0, 1.2, 3.0)))
    rc = main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "m.csv")])
    err = capsys.readouterr().err
    assert rc == 2 and "case_1.nii.gz" in err and "affine" in err
    assert not (tmp_path / "m.csv").exists()
    save_nifti(pred / "case_1.nii.gz", _lab()[:, :, :5], ras_affine())
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "m.csv")]) == 2
    assert "shape" in capsys.readouterr().err


def test_missing_prediction_error_or_allowed(tmp_path, capsys):
    gt, pred = _folders(tmp_path)
    (pred / "case_1.nii.gz").unlink()
    out = tmp_path / "m.csv"
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out)]) == 2
    assert "case_1" in capsys.readouterr().err and not out.exists()
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out), "--allow-missing"]) == 0
    r = [r for r in _read(out) if r["case"] == "case_1"][0]
    assert float(r["dice"]) == 0.0 and r["hd95"] == "nan" and int(r["pred_voxels"]) == 0


def test_msd_folder_as_gt(tmp_path, capsys):
    root = write_msd(tmp_path / "Task99_Toy", n=2, lps=())
    pred = tmp_path / "pred"
    for i in range(2):
        import nibabel as nib
        img = nib.load(str(root / "labelsTr" / f"toy_{i}.nii.gz"))
        save_nifti(pred / f"toy_{i}.nii.gz", np.asarray(img.dataobj), img.affine)
    out = tmp_path / "m.csv"
    assert main(["evaluate", "--pred", str(pred), "--gt", str(root), "--out", str(out)]) == 0
    rows = _read(out)
    assert {r["label_name"] for r in rows} == {"liver", "cancer"} and all(float(r["dice"]) == 1 for r in rows)
    # refuses to write into the dataset; labels from a dataset.json file
    assert main(["evaluate", "--pred", str(pred), "--gt", str(root), "--out", str(root / "m.csv")]) == 2
    assert "refusing" in capsys.readouterr().err
    assert main(["evaluate", "--pred", str(pred), "--gt", str(root / "labelsTr"), "--out", str(out),
                 "--labels", str(root / "dataset.json")]) == 0


@pytest.mark.parametrize("labels,regions,msg", [
    ('{"a": "x"}', None, "keys must be integers"), ("[1, 2]", None, "JSON object"), ("{oops", None, "valid JSON"),
    (None, '{"r": "x"}', "--regions"),
])
def test_bad_label_arguments(tmp_path, capsys, labels, regions, msg):
    gt, pred = _folders(tmp_path)
    argv = ["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "m.csv")]
    argv += ["--labels", labels] if labels else []
    argv += ["--regions", regions] if regions else []
    assert main(argv) == 2
    assert msg in capsys.readouterr().err


def test_empty_or_missing_folders(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", "--pred", str(tmp_path), "--gt", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "m.csv")]) == 2
    assert "no ground-truth" in capsys.readouterr().err
    gt, _ = _folders(tmp_path)
    assert main(["evaluate", "--pred", str(tmp_path / "nope"), "--gt", str(gt), "--out", str(tmp_path / "m.csv")]) == 2
    assert "folder not found" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(gt), "--out", str(tmp_path / "m.csv"),
                 "--labels", str(bad)]) == 2
    assert "cannot read JSON" in capsys.readouterr().err
    save_nifti(tmp_path / "pred" / "case_0.nii", _lab(), ras_affine())  # case_0.nii and case_0.nii.gz
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(gt), "--out", str(tmp_path / "m.csv")]) == 2
    assert "two files for case 'case_0'" in capsys.readouterr().err


def test_lesion_wise_summary_detection_and_tumour_free_rule(tmp_path, capsys):
    """Three scans: two tumours (one found, one missed) + a false positive; a tumour-free scan with a
    false positive; a tumour-free scan without.  The printed summary must count each correctly."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    shape = (20, 20, 8)
    g0, p0 = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    g0[1:19, 1:19, :] = 1
    p0[...] = g0
    g0[2:5, 2:5, 2:5] = 2      # found
    p0[2:5, 2:5, 2:4] = 2      # Dice 2*18/(27+18) = 0.8
    g0[12:15, 12:15, 2:5] = 2  # missed
    p0[8:10, 14:16, 6:8] = 2   # false positive
    g1, p1 = g0.copy(), p0.copy()
    g1[g1 == 2] = 1
    p1[p1 == 2] = 1
    p1[5:7, 5:7, 1:3] = 2      # tumour-free scan, one false positive
    g2 = g1.copy()
    for name, g, p in (("a", g0, p0), ("b", g1, p1), ("c", g2, g2)):
        save_nifti(gt / f"{name}.nii.gz", g, ras_affine())
        save_nifti(pred / f"{name}.nii.gz", p, ras_affine())
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "m.csv"),
                 "--task", "liver"]) == 0
    text = capsys.readouterr().out
    assert "1/2 lesions found (sensitivity 0.50)" in text
    assert "0.67 false-positive lesions per scan" in text  # 2 false positives / 3 scans
    assert "1/2 tumour-free scans with a false positive" in text
    assert "Dice over detected lesions 0.800" in text
    # case-mean over the one scan with a lesion: Dice of label 2 in scan a = 2*18 / (54 + 26)
    assert f"case-mean Dice over the 1 scans with a lesion {2 * 18 / 80:.3f}" in text
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "m.csv"),
                 "--task", "liver", "--lesions", "none"]) == 0
    assert "lesions of label" not in capsys.readouterr().out


@pytest.mark.parametrize("value, words", [("7", "not among the labels"), ("a", "comma-separated")])
def test_lesions_option_errors(tmp_path, capsys, value, words):
    gt, pred = _folders(tmp_path)
    out = tmp_path / "m.csv"
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out), "--lesions", value]) != 0
    err = capsys.readouterr().err
    assert "--lesions" in err and words in err and len(err.strip().splitlines()) == 1
    assert not out.exists()

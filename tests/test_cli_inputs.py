"""Real-world CLI inputs and output (issue 18): DICOM folders for predict / view / info, quiet logs when
stderr is not a terminal, ``evaluate --task``, ``MSDDataset.load_case(Case)``."""

from __future__ import annotations

import csv
import io
import sys

import numpy as np
import pytest

from ctseg_lib.cli import main
from ctseg_lib.data.msd import Case, MSDDataset
from ctseg_lib.data.nifti import load_nifti, save_nifti
from ctseg_lib.errors import CTSegError
from ctseg_lib.progress import progress
from tests.conftest import toy_case, write_msd


class FakeStream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_progress_one_line_per_item_when_not_a_tty(monkeypatch):
    err = FakeStream(tty=False)
    monkeypatch.setattr(sys, "stderr", err)
    assert list(progress(range(3), "epoch 1/3")) == [0, 1, 2]
    out = err.getvalue()
    assert "\r" not in out and out.count("\n") == 3 and out.startswith("epoch 1/3: 1/3 (")
    err2 = FakeStream(tty=False)
    monkeypatch.setattr(sys, "stderr", err2)
    assert list(progress(iter("ab"), "batches", lines=False)) == ["a", "b"]
    assert list(progress([1], "x", disable=True)) == [1]
    assert err2.getvalue() == ""


def test_progress_bar_on_a_tty(monkeypatch):
    err = FakeStream(tty=True)
    monkeypatch.setattr(sys, "stderr", err)
    assert list(progress(range(3), "bar")) == [0, 1, 2]
    assert "\r" in err.getvalue()  # tqdm redraws in place


def test_synth_log_has_no_carriage_returns(tmp_path, monkeypatch, capsys):
    err = FakeStream(tty=False)
    monkeypatch.setattr(sys, "stderr", err)
    assert main(["synth", "--task", "lung", "--out", str(tmp_path / "d"), "--cases", "2", "--scale", "0.2"]) == 0
    log = err.getvalue()
    assert "\r" not in log and log.count("\n") == 2 and "lung: 2/2 cases" in log


def test_load_case_accepts_a_case(tmp_path):
    ds = MSDDataset(write_msd(tmp_path / "ds", n=2))
    img, lab = ds.load_case(ds.cases[1])
    ref, _ = ds.load_case("toy_1")
    np.testing.assert_array_equal(img.array, ref.array)
    stranger = Case("toy_1", tmp_path / "elsewhere.nii.gz", None)
    with pytest.raises(CTSegError, match="not a case of this dataset"):
        ds.load_case(stranger)


def test_evaluate_task_gives_label_names(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    _, lab = toy_case()
    aff = np.diag([1.0, 1.0, 2.0, 1.0])
    save_nifti(gt / "c1.nii.gz", lab, aff)
    save_nifti(pred / "c1.nii.gz", lab, aff)
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "m.csv"),
                 "--task", "liver"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert {r["label_name"] for r in rows} == {"liver", "cancer"}
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "m2.csv")]) == 0
    assert {r["label_name"] for r in csv.DictReader(open(tmp_path / "m2.csv"))} == {"label_1", "label_2"}
    with pytest.raises(SystemExit):
        main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "m3.csv"),
              "--task", "kidney"])
    capsys.readouterr()


def _dicom_of_toy(tmp_path):
    from tests.test_dicom import make_affine, write_series

    img, _ = toy_case((24, 20, 8))
    aff = make_affine(np.diag([-1.0, -1.0, 1.0]), spacing=(1.5, 1.2, 3.0))
    write_series(tmp_path / "dcm", img, aff, shuffle=True)
    return tmp_path / "dcm", img, aff


def test_predict_view_info_accept_a_dicom_folder(tmp_path, capsys):
    pytest.importorskip("pydicom")
    from tests.test_inference import _fake_run

    folder, img, aff = _dicom_of_toy(tmp_path)
    _, ck = _fake_run(tmp_path)
    assert main(["predict", "--checkpoint", str(ck), "--input", str(folder), "--out", str(tmp_path / "p"),
                 "--device", "cpu", "--quiet"]) == 0
    pred = load_nifti(tmp_path / "p" / "dcm.nii.gz", kind="label")
    src = load_nifti(save_nifti(tmp_path / "ref.nii.gz", img, aff))
    assert pred.array.shape == src.array.shape
    np.testing.assert_allclose(pred.affine, src.affine, atol=1e-4)  # on the DICOM grid
    assert main(["view", str(folder), "--pred", str(tmp_path / "p" / "dcm.nii.gz"),
                 "--out", str(tmp_path / "v.html")]) == 0
    assert (tmp_path / "v.html").stat().st_size > 5_000
    assert main(["info", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "[24, 20, 8]" in out and "stored as LPS" in out
    assert main(["predict", "--checkpoint", str(ck), "--input", str(folder), "--out", str(tmp_path / "q"),
                 "--series", "9.9", "--device", "cpu", "--quiet"]) == 2
    assert "no series '9.9'" in capsys.readouterr().err

"""The whole pipeline from the command line alone, on tiny phantoms:
synth → info → preprocess → train → predict → evaluate → view."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from ctseg_lib.cli import main
from ctseg_lib.data.nifti import load_nifti


@pytest.mark.slow
def test_cli_pipeline(tmp_path, capsys):
    data, run, preds = tmp_path / "Task03_Liver", tmp_path / "run", tmp_path / "preds"
    assert main(["synth", "--task", "liver", "--out", str(data), "--cases", "5", "--scale", "0.25",
                 "--test-cases", "1"]) == 0
    assert main(["info", str(data)]) == 0
    assert "liver" in capsys.readouterr().out
    assert main(["preprocess", "--data", str(data), "--out", str(tmp_path / "cache"), "--size", "32"]) == 0
    cfg = json.loads(json.dumps({
        "name": "e2e", "model": {"base_channels": 4, "depth": 2},
        "data": {"task": "liver", "slice_size": [32, 32], "val_fraction": 0.2, "test_fraction": 0.2},
        "epochs": 1, "iterations_per_epoch": 2, "batch_size": 2, "val_every": 1}))
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    assert main(["train", "--config", str(tmp_path / "cfg.json"), "--data", str(data), "--out", str(run),
                 "--quiet", "--device", "cpu"]) == 0
    assert (run / "best.pt").is_file() and (run / "history.csv").is_file()
    assert main(["predict", "--checkpoint", str(run / "best.pt"), "--input", str(data), "--split", "test",
                 "--out", str(preds), "--quiet", "--device", "cpu", "--postprocess", "lcc,restrict"]) == 0
    written = sorted(preds.glob("*.nii.gz"))
    assert len(written) == 1
    case = written[0].name[: -len(".nii.gz")]
    src = load_nifti(data / "imagesTr" / f"{case}.nii.gz")
    pred = load_nifti(written[0], kind="label")
    np.testing.assert_allclose(pred.original_affine, src.original_affine)  # overlays the source
    assert main(["evaluate", "--pred", str(preds), "--gt", str(data), "--out", str(tmp_path / "m.csv")]) == 2
    assert "no prediction for" in capsys.readouterr().err  # the other cases were not predicted
    assert main(["evaluate", "--pred", str(preds), "--gt", str(data), "--split", f"{run / 'split.json'}:test",
                 "--out", str(tmp_path / "m.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert {"case", "label", "dice", "hd95", "nsd"} <= set(rows[0])
    assert {r["case"] for r in rows} == {case}
    assert main(["view", str(data / "imagesTr" / f"{case}.nii.gz"), "--label",
                 str(data / "labelsTr" / f"{case}.nii.gz"), "--pred", str(written[0]),
                 "--out", str(tmp_path / "v.html")]) == 0
    assert (tmp_path / "v.html").stat().st_size > 10_000
    # --gif: an animated GIF, ground truth | prediction side by side, one frame per slice, feet to head
    from PIL import Image

    assert main(["view", str(data / "imagesTr" / f"{case}.nii.gz"), "--label",
                 str(data / "labelsTr" / f"{case}.nii.gz"), "--pred", str(written[0]), "--window", "liver",
                 "--gif", str(tmp_path / "v.gif"), "--max-size", "64"]) == 0
    with Image.open(tmp_path / "v.gif") as gif:
        assert gif.n_frames == src.array.shape[2] and gif.is_animated
        assert gif.size[0] == 2 * gif.size[1] or abs(gif.size[0] / gif.size[1] - 2 * src.array.shape[0] * src.spacing[0]
                                                     / (src.array.shape[1] * src.spacing[1])) < 0.1
    assert (tmp_path / "v.gif").stat().st_size < 2_000_000
    assert main(["view", str(data / "imagesTr" / f"{case}.nii.gz")]) == 2
    assert "nothing to write" in capsys.readouterr().err
    # the source dataset is never written into
    assert main(["predict", "--checkpoint", str(run / "best.pt"), "--input", str(data), "--split", "test",
                 "--out", str(data / "preds"), "--quiet", "--device", "cpu"]) == 2
    assert "refusing" in capsys.readouterr().err

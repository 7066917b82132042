"""``dataset_summary`` / ``format_summary`` / ``ctseg info`` on hand-built and synthetic datasets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ctseg_lib.cli import main
from ctseg_lib.data.stats import body_mask, dataset_summary, format_summary
from ctseg_lib.data.synthetic import write_dataset
from ctseg_lib.errors import CTSegError
from tests.conftest import toy_case, write_msd


def test_summary_matches_hand_computed(tmp_path):
    root = write_msd(tmp_path / "toy", n=3, lps=(1,))
    s = dataset_summary(root)
    assert s["num_training"] == 3 and s["cases_summarised"] == 3
    assert s["orientations"] == {"LPS": 1, "RAS": 2}
    assert s["shape"] == {"min": [24, 20, 8], "max": [24, 20, 8]}
    assert s["spacing"]["min"] == [1.5, 1.2, 3.0]
    imgs, labs = zip(*(toy_case((24, 20, 8), seed=i) for i in range(3)))
    img, lab = np.concatenate([a.ravel() for a in imgs]).astype(float), np.concatenate([b.ravel() for b in labs])
    liver = s["labels"]["liver"]
    assert liver["voxel_fraction"] == pytest.approx((lab == 1).mean())
    assert liver["hu_mean"] == pytest.approx(img[lab == 1].mean(), abs=0.01)
    assert liver["hu_std"] == pytest.approx(img[lab == 1].std(), abs=0.01)
    # the toy tumour spans z 3..5 of 8 slices (hand-computed from the ellipsoid in conftest)
    slices = np.mean([labs[i][..., k].__eq__(2).any() for i in range(3) for k in range(8)])
    assert s["labels"]["cancer"]["slice_fraction"] == pytest.approx(slices)
    assert s["labels"]["cancer"]["cases_present"] == 3
    assert s["tissue"]["air_hu_mean"] < -950 and -100 < s["tissue"]["body_hu_mean"] < 150


def test_max_cases_and_format(tmp_path):
    root = write_msd(tmp_path / "toy", n=3)
    s = dataset_summary(root, max_cases=1)
    assert s["cases_summarised"] == 1 and s["num_training"] == 3
    text = format_summary(s)
    assert "orientations (as stored): RAS 1" in text and "1:liver" in text and "tissue check" in text


def test_body_mask_fills_lungs():
    hu = np.full((20, 20, 2), -1000.0)
    hu[4:16, 4:16] = 40
    hu[7:13, 7:13] = -850  # "lung" enclosed by the body
    m = body_mask(hu)
    assert m[10, 10, 0] and not m[1, 1, 0] and m.sum() == 2 * 12 * 12


def test_cli_info_text_and_json(tmp_path, capsys):
    root = write_dataset("lung", tmp_path / "lung", cases=2, seed=0, scale=0.15)
    assert main(["info", str(root)]) == 0
    out = capsys.readouterr().out
    assert "SyntheticLung" in out and "RAS 1" in out and "LPS 1" in out and "1:cancer" in out
    assert main(["info", str(root), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["labels"]["cancer"]["voxel_fraction"] < 0.01 and d["tissue"]["air_hu_mean"] < -900


def test_info_errors(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
    root = write_msd(tmp_path / "toy", n=1)
    assert main(["info", str(root), "--max-cases", "0"]) == 2
    assert "--max-cases" in capsys.readouterr().err
    with pytest.raises(CTSegError):
        dataset_summary(tmp_path)

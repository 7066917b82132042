"""Tests for ctseg_lib.cache (CaseCache) and the ``ctseg preprocess`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import ctseg_lib.cache as cache_mod
import ctseg_lib.data.msd as msd
from ctseg_lib.cache import CaseCache, file_fingerprint
from ctseg_lib.cli import main
from ctseg_lib.data.msd import MSDDataset
from ctseg_lib.datasets import SliceDataset, load_split
from ctseg_lib.errors import CTSegError
from ctseg_lib.preprocessing import CTNormalizer, PreprocessParams, preprocess_case

PARAMS = PreprocessParams(target_spacing=(3.0, 2.4, 3.0), normalization="window:abdomen")


@pytest.fixture
def load_counter(monkeypatch):
    """Count NIfTI reads done through MSDDataset."""
    calls = []
    real = msd.load_nifti

    def counting(path, kind="image"):
        calls.append(Path(path).name)
        return real(path, kind)

    monkeypatch.setattr(msd, "load_nifti", counting)
    return calls


def test_cache_hit_does_not_reload_nifti(msd_root, tmp_path, load_counter):
    ds = MSDDataset(msd_root)
    cache = CaseCache(tmp_path / "cache", PARAMS, dataset=ds)
    first = cache.get(ds.cases[1])  # the LPS case
    assert len(load_counter) == 2 and (cache.hits, cache.misses) == (0, 1)
    second = CaseCache(tmp_path / "cache", PARAMS, dataset=ds).get(ds.cases[1])
    assert len(load_counter) == 2  # no NIfTI opened
    assert isinstance(second.image.base, np.memmap) or isinstance(second.image, np.memmap)
    assert second.image.shape == (12, 10, 8) and second.image.dtype == np.float32
    np.testing.assert_array_equal(first.image, second.image)
    np.testing.assert_array_equal(first.label, second.label)
    # same content as preprocessing the canonical (RAS) volumes directly
    img, lab = ds.load_case(1)
    direct = preprocess_case(img, lab, PARAMS)
    np.testing.assert_array_equal(second.image, direct.image)
    np.testing.assert_array_equal(second.label, direct.label)
    assert second.spacing == direct.spacing and second.case_id == "toy_1"
    assert second.meta["params"] == PARAMS.to_dict()
    assert not list((tmp_path / "cache").rglob(".tmp-*"))


def test_parameter_or_source_change_invalidates(msd_root, tmp_path, load_counter):
    ds = MSDDataset(msd_root)
    case = ds.cases[0]
    a = CaseCache(tmp_path / "c", PARAMS, dataset=ds)
    a.get(case)
    other = PreprocessParams(target_spacing=(3.0, 2.4, 3.0), normalization="window:lung")
    b = CaseCache(tmp_path / "c", other, dataset=ds)
    assert b.key(case) != a.key(case)
    assert float(b.get(case).image.max()) != float(a.get(case).image.max())
    assert (b.misses, a.hits) == (1, 1) and len(load_counter) == 4
    n1, n2 = CTNormalizer(-100, 200, 50, 30), CTNormalizer(-100, 200, 50, 31)
    nn = PreprocessParams(normalization="nnunet")
    assert CaseCache(tmp_path / "c", nn, n1).key(case) != CaseCache(tmp_path / "c", nn, n2).key(case)
    key_before = a.key(case)
    raw = bytearray(case.label.read_bytes())
    raw[-1] ^= 0xFF  # gzip trailer byte: the file changed
    case.label.write_bytes(bytes(raw))
    assert a.key(case) != key_before


def test_corrupted_entry_is_rebuilt(msd_root, tmp_path, load_counter):
    ds = MSDDataset(msd_root)
    case = ds.cases[2]
    cache = CaseCache(tmp_path / "c", PARAMS, dataset=ds)
    good = np.array(cache.get(case).image)
    entry = cache.entry_dir(case)
    npy = entry / "image.npy"
    npy.write_bytes(npy.read_bytes()[:-100])  # truncated copy
    again = cache.get(case)
    assert cache.misses == 2 and len(load_counter) == 4
    np.testing.assert_array_equal(again.image, good)
    (entry / "meta.json").write_text("{not json")
    cache.get(case)
    assert cache.misses == 3
    (entry / "label.npy").unlink()
    cache.get(case)
    assert cache.misses == 4 and (entry / "label.npy").is_file()
    assert cache.get(case) is not None and cache.hits == 1


def test_unlabelled_case(msd_root, tmp_path):
    case = msd.Case("toy_0", MSDDataset(msd_root).cases[0].image, None)
    pre = CaseCache(tmp_path / "c", PARAMS).get(case)
    again = CaseCache(tmp_path / "c", PARAMS)
    assert pre.label is None and again.get(case).label is None and again.hits == 1


def test_nnunet_cache_needs_normalizer(tmp_path):
    with pytest.raises(CTSegError, match="CTNormalizer"):
        CaseCache(tmp_path, PreprocessParams(normalization="nnunet"))


def test_fingerprint_large_file_uses_size_head_tail(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_mod, "FULL_HASH_BYTES", 1024)
    monkeypatch.setattr(cache_mod, "_CHUNK", 256)
    p = tmp_path / "f.bin"
    data = bytearray(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    p.write_bytes(bytes(data))
    h0 = file_fingerprint(p)
    data[-1] ^= 1
    p.write_bytes(bytes(data))
    h_tail = file_fingerprint(p)
    data[2000] ^= 1  # middle byte: not read for large files (documented trade-off)
    p.write_bytes(bytes(data))
    assert h_tail != h0 and file_fingerprint(p) == h_tail
    p.write_bytes(bytes(data) + b"x")
    assert file_fingerprint(p) != h_tail


def test_slice_dataset_from_cache(msd_root, tmp_path):
    ds = MSDDataset(msd_root)
    cache = CaseCache(tmp_path / "c", PreprocessParams(slice_size=(16, 16)), dataset=ds)
    cases = [cache.get(c) for c in ds.cases]
    sd = SliceDataset(cases, context=1, fg_fraction=0.5, samples_per_epoch=20)
    x, y = sd[0]
    assert x.shape == (3, 16, 16) and y.shape == (16, 16)


# -- CLI --------------------------------------------------------------------------------------
def test_cli_preprocess(msd_root, tmp_path, capsys):
    out = tmp_path / "cache"
    args = ["preprocess", "--data", str(msd_root), "--out", str(out), "--spacing", "3", "2.4", "3",
            "--size", "16", "--split", "0", "--crop-body"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "toy_0: (24, 20, 8) -> (16, 16, 8) voxels" in text and "[built]" in text
    split = load_split(out / "split.json")
    assert sorted(sum(split.values(), [])) == ["toy_0", "toy_1", "toy_2"]
    assert json.loads((out / "params.json").read_text())["slice_size"] == [16, 16]
    assert main(args) == 0
    assert "3 case(s): 0 built, 3 from cache" in capsys.readouterr().out


def test_cli_preprocess_nnunet_and_errors(msd_root, tmp_path, capsys):
    out = tmp_path / "cache"
    assert main(["preprocess", "--data", str(msd_root), "--out", str(out), "--norm", "nnunet", "--split", "1"]) == 0
    norm = json.loads((out / "normalizer.json").read_text())
    assert norm["lower"] < norm["mean"] < norm["upper"]
    capsys.readouterr()
    assert main(["preprocess", "--data", str(msd_root), "--out", str(msd_root / "cache")]) == 2
    assert "refusing to write the cache inside" in capsys.readouterr().err
    assert main(["preprocess", "--data", str(msd_root), "--out", str(out), "--norm", "window:bogus"]) == 2
    assert "unknown window preset 'bogus'" in capsys.readouterr().err
    assert main(["preprocess", "--data", str(msd_root), "--out", str(out), "--size", "1", "2", "3"]) == 2

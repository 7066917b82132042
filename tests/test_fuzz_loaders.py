"""Fuzzing the loaders of untrusted files: the only exception allowed to escape is CTSegError.

Corrupt downloads, hand-edited headers and hostile files must never surface as a nibabel/numpy
traceback, a MemoryError or a hang: either the file loads (valid 3D volume) or CTSegError names it.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctseg_lib.data.msd import MSDDataset
from ctseg_lib.data.nifti import load_nifti
from ctseg_lib.errors import CTSegError
from tests.conftest import write_msd

# CTSEG_FUZZ_EXAMPLES=2000 for a long hunt; the default keeps the file at a few seconds.
SETTINGS = settings(max_examples=int(os.environ.get("CTSEG_FUZZ_EXAMPLES", 80)), deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
HDR = 348  # NIfTI-1 header size; the data of a single-file .nii starts at vox_offset = 352


def _valid_nii() -> bytes:
    arr = np.random.default_rng(0).integers(0, 3, (6, 5, 4)).astype(np.int16)  # valid as image AND label
    aff = np.diag([0.8, 0.9, 2.5, 1.0])
    aff[:3, 3] = (-10, 5, 3)
    img = nib.Nifti1Image(arr, aff)
    img.header.set_xyzt_units("mm")
    return img.to_bytes()


VALID = _valid_nii()


def _check_load(path: Path, kind: str) -> None:
    """The property: a successful load returns a sane 3D volume; a failure is a CTSegError naming the file."""
    try:
        v = load_nifti(path, kind)
    except CTSegError as e:
        assert path.name in str(e)
        return
    assert v.array.ndim == 3 and sorted(v.array.shape) == sorted(v.original_shape)  # a permutation
    assert all(math.isfinite(s) and s > 0 for s in v.spacing)
    if kind == "image":
        assert v.array.dtype == np.float32 and np.all(np.isfinite(v.array))
    else:
        assert v.array.dtype in (np.uint8, np.int16) and int(v.array.min()) >= 0


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@SETTINGS
@given(flips=st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(1, 255)), min_size=1, max_size=8),
       header_only=st.booleans(), gz=st.booleans(), kind=st.sampled_from(["image", "label"]))
def test_flipped_bytes(work, flips, header_only, gz, kind):
    data = bytearray(VALID)
    for pos, xor in flips:
        data[pos % HDR if header_only else pos] ^= xor
    p = work / ("f.nii.gz" if gz else "f.nii")
    p.write_bytes(gzip.compress(bytes(data), mtime=0) if gz else bytes(data))
    _check_load(p, kind)


@SETTINGS
@given(cut=st.integers(0, len(VALID) - 1), gz=st.booleans(), flip_gz=st.one_of(st.none(), st.integers(0, 10**6)))
def test_truncated_and_corrupt_gzip(work, cut, gz, flip_gz):
    data = gzip.compress(VALID, mtime=0) if gz else VALID
    data = bytearray(data[: cut % len(data)] if flip_gz is None else data)
    if flip_gz is not None:  # corrupt the compressed stream itself (CRC / deflate errors)
        data[flip_gz % len(data)] ^= 0x5A
    p = work / ("t.nii.gz" if gz else "t.nii")
    p.write_bytes(bytes(data))
    _check_load(p, "image")


_INT16 = st.integers(-(2**15), 2**15 - 1)
_FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.sampled_from([0.0, -1.0, 1e-9, 1e30]))
FIELDS = {
    "dim": st.lists(_INT16, min_size=8, max_size=8),
    "pixdim": st.lists(_FLOATS, min_size=8, max_size=8),
    "datatype": st.one_of(_INT16, st.sampled_from([2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 2304])),
    "bitpix": _INT16,
    "vox_offset": st.one_of(_FLOATS, st.sampled_from([0.0, 351.0, 352.0, 353.0, 1e12, -352.0])),
    "scl_slope": _FLOATS,
    "scl_inter": _FLOATS,
    "qform_code": st.integers(-5, 5),
    "sform_code": st.integers(-5, 5),
    "quatern_b": _FLOATS,
    "srow_x": st.lists(_FLOATS, min_size=4, max_size=4),
    "srow_z": st.lists(_FLOATS, min_size=4, max_size=4),
    "sizeof_hdr": st.integers(-(2**31), 2**31 - 1),
    "magic": st.sampled_from([b"n+1\x00", b"ni1\x00", b"n+2\x00", b"xyz\x00", b"\x00\x00\x00\x00"]),
}


@SETTINGS
@given(edits=st.lists(st.sampled_from(sorted(FIELDS)).flatmap(lambda k: st.tuples(st.just(k), FIELDS[k])),
                      min_size=1, max_size=3),
       kind=st.sampled_from(["image", "label"]), gz=st.booleans())
def test_mutated_header_fields(work, edits, kind, gz):
    hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(VALID), check=False)
    for field, value in edits:
        with np.errstate(all="ignore"):
            hdr[field] = value  # raw structured-array edit: no nibabel validation or "fixing"
    data = hdr.binaryblock + VALID[HDR:]
    p = work / ("h.nii.gz" if gz else "h.nii")
    p.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    _check_load(p, kind)


# -- dataset.json -----------------------------------------------------------------------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False) |
    st.sampled_from(["", "./imagesTr/toy_0.nii.gz", "./labelsTr/toy_1.nii.gz", "../../etc/passwd", "/etc/passwd",
                     "./imagesTr/._toy_0.nii.gz", "imagesTr", ".", "0", "background", "\x00"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["image", "label", "0", "1", "x", "-1", "name", "training"]), children, max_size=3),
    max_leaves=8,
)
KEYS = ["name", "labels", "training", "test", "modality", "description"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    root = write_msd(tmp_path_factory.mktemp("ds") / "Task99_Toy", n=2, shape=(6, 5, 4))
    return root, json.loads((root / "dataset.json").read_text())


def _check_dataset(root: Path) -> None:
    try:
        ds = MSDDataset(root)
        for i in range(len(ds)):
            ds.load_case(i)
    except CTSegError as e:
        assert "dataset.json" in str(e) or root.name in str(e)


@SETTINGS
@given(key=st.sampled_from(KEYS), value=JSON, where=st.sampled_from(["top", "entry", "labels", "delete"]))
def test_mutated_dataset_json(dataset, key, value, where):
    root, meta = dataset
    meta = json.loads(json.dumps(meta))
    if where == "top":
        meta[key] = value
    elif where == "entry":
        meta["training"][0][key if key in ("image", "label") else "image"] = value
    elif where == "labels":
        meta["labels"] = {**meta["labels"], str(key): value} if isinstance(value, str) else value
    else:
        meta.pop(key, None)
    (root / "dataset.json").write_text(json.dumps(meta))
    _check_dataset(root)


@SETTINGS
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_random_bytes_as_dataset_json(work, raw):
    d = work / "rawjson"
    d.mkdir(exist_ok=True)
    (d / "dataset.json").write_bytes(raw)
    try:
        MSDDataset(d, check_files=False)
    except CTSegError as e:
        assert "dataset.json" in str(e)

"""Bad inputs, through the Python API and the CLI: every one is a CTSegError naming the file.

Each case below corrupts one thing in an otherwise valid 2-case MSD folder.  Through the API the
error must be a :class:`CTSegError` whose message names the offending file; through ``ctseg info``
the exit status must be non-zero with exactly one readable line on stderr and no traceback.
Regression tests for the loader bugs found while writing this matrix are at the end.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import struct
import subprocess
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ctseg_lib.cli import build_parser, main
from ctseg_lib.data.msd import MSDDataset
from ctseg_lib.data.nifti import MAX_VOXELS, load_nifti, save_nifti
from ctseg_lib.errors import CTSegError
from tests.conftest import ras_affine, to_lps, write_msd

SHAPE = (8, 6, 4)
IMG0 = "imagesTr/toy_0.nii.gz"
LAB0 = "labelsTr/toy_0.nii.gz"


def _nii_bytes(arr: np.ndarray, aff: np.ndarray | None = None, two: bool = False) -> bytes:
    cls = nib.Nifti2Image if two else nib.Nifti1Image
    return cls(arr, ras_affine() if aff is None else aff).to_bytes()


def _patch(data: bytes, fmt: str, offset: int, *values) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, *values)
    return bytes(b)


def _gz(b: bytes) -> bytes:
    return gzip.compress(b, mtime=0)


#: A refused file must not make the loader allocate more than this (the toy volumes are a few kB; a
#: huge header claims terabytes).  Measured with tracemalloc, which also sees numpy's buffers.
ALLOC_LIMIT = 64 * 2**20


@contextlib.contextmanager
def _peak_allocation() -> Iterator[Callable[[], int]]:
    """Trace allocations in the block; yields a function returning the peak (bytes) once the block ends."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    result: list[int] = []
    try:
        yield lambda: result[0]
    finally:
        result.append(tracemalloc.get_traced_memory()[1] - base)
        if not was_tracing:
            tracemalloc.stop()

def _valid_img() -> np.ndarray:
    return np.random.default_rng(0).integers(-100, 100, SHAPE).astype(np.int16)


# -- file-level corruptions: (name, file in the dataset, new bytes, expected message) ------------------
# NIfTI-1 header offsets: dim int16[8] @40, datatype @70, pixdim float32[8] @76, vox_offset @108.
def _huge_nifti1() -> bytes:  # 32767³ int16 voxels ≈ 70 TB claimed by a 400-byte file
    return _patch(_nii_bytes(_valid_img()), "<4h", 40, 3, 32767, 32767, 32767)


def _huge_nifti2() -> bytes:  # NIfTI-2 dims are int64: 100000³ voxels ≈ 2 PB claimed
    return _patch(_nii_bytes(_valid_img(), two=True), "<4q", 16, 3, 100000, 100000, 100000)


def _truncated() -> bytes:
    big = np.random.default_rng(1).integers(-1000, 1000, (40, 40, 20)).astype(np.int16)
    data = _gz(_nii_bytes(big))
    return data[: len(data) // 2]


def _nan() -> bytes:
    a = _valid_img().astype(np.float32)
    a[1, 2, 3], a[0, 0, 0] = np.nan, np.inf
    return _gz(_nii_bytes(a))


def _labels(values: float, dtype=np.float32) -> bytes:
    a = np.zeros(SHAPE, dtype)
    a[2, 2, 2] = values
    return _gz(_nii_bytes(a))


def _spacing(value: float) -> bytes:  # raw pixdim[1]; nibabel would silently turn 0 into 1 and -1 into 1
    return _gz(_patch(_nii_bytes(_valid_img()), "<f", 80, value))


NIFTI_CASES: list[tuple[str, str, Callable[[], bytes], str]] = [
    ("truncated .nii.gz", IMG0, _truncated, r"corrupt or truncated|not a readable NIfTI"),
    ("wrong magic", IMG0, lambda: _gz(_patch(_nii_bytes(_valid_img()), "4s", 344, b"XYZ\0")), "not a readable NIfTI"),
    ("zero-byte file", IMG0, lambda: b"", r"file is empty \(0 bytes\)"),
    ("not gzip at all", IMG0, lambda: b"<html>404 Not Found</html>" * 20, "not a readable NIfTI"),
    ("4D image", IMG0, lambda: _gz(_nii_bytes(np.zeros((*SHAPE, 2), np.int16))), r"expected a 3D volume, got 4D"),
    ("2D image", IMG0, lambda: _gz(_nii_bytes(np.zeros(SHAPE[:2], np.int16))), r"expected a 3D volume, got 2D"),
    ("NaN/inf voxels", IMG0, _nan, r"2 voxels are NaN or infinite"),
    ("non-integer labels", LAB0, lambda: _labels(1.5), r"non-integer values, e.g. \[1.5\]"),
    ("negative labels", LAB0, lambda: _labels(-1, np.int16), r"negative values \(min -1\)"),
    ("labels not declared", LAB0, lambda: _labels(7, np.uint8), r"label values \[7\] are not declared"),
    ("shape mismatch", LAB0, lambda: _gz(_nii_bytes(np.zeros((8, 6, 5), np.uint8))),
     r"shape \(8, 6, 5\) does not match image shape \(8, 6, 4\)"),
    ("affine mismatch 2 mm", LAB0,
     lambda: _gz(_nii_bytes(np.zeros(SHAPE, np.uint8), ras_affine(origin=(-28, -20, 10)))),
     r"affine differs .* by up to 2 mm"),
    ("spacing 0", IMG0, lambda: _spacing(0.0), r"absurd voxel spacing \(0\.0,"),
    ("spacing negative", IMG0, lambda: _spacing(-1.5), r"absurd voxel spacing \(-1\.5,"),
    ("spacing 1e6 mm", IMG0, lambda: _spacing(1e6), r"absurd voxel spacing \(1000000\.0,"),
    ("32767^3 NIfTI-1 header", IMG0, lambda: _gz(_huge_nifti1()), r"35,181,150,961,663 voxels.*refusing"),
    ("100000^3 NIfTI-2 header", IMG0, lambda: _gz(_huge_nifti2()), r"1,000,000,000,000,000 voxels.*refusing"),
]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """2 RAS cases of shape 8×6×4, with macOS ``._*`` junk files on disk (must be ignored)."""
    return write_msd(tmp_path / "Task99_Toy", n=2, lps=(), shape=SHAPE)


def _cli_fails_cleanly(argv: list[str], capsys) -> str:
    """Run ``ctseg ARGV`` in-process; assert non-zero exit, one stderr line, no traceback."""
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc != 0
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"ctseg {argv[0]}: error: ")
    return err


def _has_command(name: str) -> bool:
    return name in build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001


requires_info = pytest.mark.skipif(not _has_command("info"), reason="`ctseg info` not built yet")


@pytest.mark.parametrize("name, rel, make, message", NIFTI_CASES, ids=[c[0] for c in NIFTI_CASES])
def test_bad_nifti_api(root, name, rel, make, message):
    (root / rel).write_bytes(make())
    with _peak_allocation() as peak, pytest.raises(CTSegError, match=message) as e:
        MSDDataset(root).load_case(0)
    assert e.value.path == (root / rel).resolve() and str(root / rel) in str(e.value)
    # Refused before any large allocation (huge headers claim terabytes).  This used to be a wall-clock
    # limit (< 2 s), flaky on a loaded machine; the speed is measured in benchmarks/bench_refusal.py.
    assert peak() < ALLOC_LIMIT, f"{peak() / 2**20:.0f} MiB allocated while refusing the file"
    MSDDataset(root).load_case(1)  # the other case is unaffected


@requires_info
@pytest.mark.parametrize("name, rel, make, message", NIFTI_CASES, ids=[c[0] for c in NIFTI_CASES])
def test_bad_nifti_cli(root, name, rel, make, message, capsys):
    (root / rel).write_bytes(make())
    err = _cli_fails_cleanly(["info", str(root)], capsys)
    assert rel.split("/")[1] in err


# -- dataset.json corruptions ---------------------------------------------------------------------------
def _edit(fn: Callable[[dict], object]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        meta = json.loads((root / "dataset.json").read_text())
        fn(meta)
        (root / "dataset.json").write_text(json.dumps(meta))
    return apply


JSON_CASES: list[tuple[str, Callable[[Path], None], str]] = [
    ("missing dataset.json", lambda r: (r / "dataset.json").unlink(), "dataset.json is missing"),
    ("invalid JSON", lambda r: (r / "dataset.json").write_text('{"name": "x",'), "invalid JSON"),
    ("not UTF-8", lambda r: (r / "dataset.json").write_bytes(b'{"name": "\xff\xfe"}'), "invalid JSON"),
    ("top level a list", lambda r: (r / "dataset.json").write_text("[]"), "top level must be a JSON object"),
    ("deeply nested", lambda r: (r / "dataset.json").write_text("[" * 100_000), r"nested too deeply"),
    ("missing 'training'", _edit(lambda m: m.pop("training")), r"missing required key\(s\) \['training'\]"),
    ("missing 'labels'", _edit(lambda m: m.pop("labels")), r"missing required key\(s\) \['labels'\]"),
    ("labels without 0", _edit(lambda m: m.update(labels={"1": "liver"})), "must declare 0"),
    ("entry without label", _edit(lambda m: m["training"][0].pop("label")), r"training\[0\] must have"),
    ("path escapes root", _edit(lambda m: m["training"][0].update(image="../../etc/passwd")),
     r"training\[0\].image: path '../../etc/passwd' escapes the dataset folder"),
    ("absolute path", _edit(lambda m: m["training"][1].update(label="/etc/passwd")), "escapes the dataset folder"),
    ("NUL byte in path", _edit(lambda m: m["training"][0].update(image="./imagesTr/a\x00.nii.gz")), "NUL byte"),
    ("duplicate case id", _edit(lambda m: m["training"].append(dict(m["training"][0]))),
     r"duplicate case id 'toy_0' in training\[2\]"),
    ("._ junk listed", _edit(lambda m: m["training"][0].update(image="./imagesTr/._toy_0.nii.gz")),
     "macOS resource-fork file"),
    ("listed file missing", _edit(lambda m: m["training"][1].update(label="./labelsTr/gone.nii.gz")),
     r"listed file './labelsTr/gone.nii.gz' does not exist"),
    ("'test' not a list", _edit(lambda m: m.update(test="imagesTs")), "'test' must be a list"),
]


@pytest.mark.parametrize("name, corrupt, message", JSON_CASES, ids=[c[0] for c in JSON_CASES])
def test_bad_dataset_json_api(root, name, corrupt, message):
    corrupt(root)
    with pytest.raises(CTSegError, match=message) as e:
        MSDDataset(root)
    assert str(root / "dataset.json") in str(e.value)


@requires_info
@pytest.mark.parametrize("name, corrupt, message", JSON_CASES, ids=[c[0] for c in JSON_CASES])
def test_bad_dataset_json_cli(root, name, corrupt, message, capsys):
    corrupt(root)
    assert "dataset.json" in _cli_fails_cleanly(["info", str(root)], capsys)


def test_junk_files_on_disk_are_ignored(root):
    assert (root / "imagesTr" / "._toy_0.nii.gz").exists()
    ds = MSDDataset(root)
    assert ds.case_ids == ["toy_0", "toy_1"]
    assert ds.load_case(0)[0].array.shape == SHAPE


@requires_info
def test_cli_subprocess_no_traceback(root):
    (root / IMG0).write_bytes(b"")
    r = subprocess.run([sys.executable, "-m", "ctseg_lib", "info", str(root)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"ctseg info: error: {root / IMG0}: file is empty (0 bytes)"


def test_huge_header_fails_fast_without_memory_error(tmp_path):
    for name, data in [("h1.nii", _huge_nifti1()), ("h2.nii.gz", _gz(_huge_nifti2()))]:
        (tmp_path / name).write_bytes(data)
        assert (tmp_path / name).stat().st_size < 1000
        with _peak_allocation() as peak, pytest.raises(
                CTSegError, match=f"{name}: header claims .* more than the limit {MAX_VOXELS:,}"):
            load_nifti(tmp_path / name)
        assert peak() < ALLOC_LIMIT  # nothing the size of the claimed volume was ever allocated


# -- regression tests for bugs fixed in nifti.py / msd.py -----------------------------------------------
@pytest.mark.parametrize("dims", [(2**32, 2**32, 1), (2**62, 4, 1), (2**31, 2**31, 4)])
def test_regression_int64_overflow_of_voxel_count(tmp_path, dims):
    # np.prod(dims, dtype=int64) wrapped to 0 → passed the limit → OverflowError in nibabel.
    p = tmp_path / "ovf.nii"
    p.write_bytes(_patch(_nii_bytes(_valid_img(), two=True), "<4q", 16, 3, *dims))
    with pytest.raises(CTSegError, match=f"{math.prod(dims):,} voxels"):
        load_nifti(p)


@pytest.mark.parametrize("value", [0.0, -2.0])
def test_regression_zero_or_negative_pixdim_not_silently_fixed(tmp_path, value):
    # nibabel "fixes" pixdim 0 → 1 and -2 → 2 on load, so the file used to load with a made-up spacing.
    p = tmp_path / "pd.nii"
    p.write_bytes(_patch(_nii_bytes(_valid_img()), "<f", 84, value))  # pixdim[2]
    with pytest.raises(CTSegError, match=r"pd.nii: absurd voxel spacing \(1\.5, " + f"{value}"):
        load_nifti(p)


def test_regression_spacing_follows_affine_for_ras_and_lps(tmp_path):
    # pixdim (1, 1, 1) disagreeing with the sform (0.8, 0.8, 2.5): the RAS file used to report
    # the pixdim and the LPS copy the affine, so the same scan had two spacings.
    img = _valid_img()
    aff = ras_affine((0.8, 0.8, 2.5))
    for name, (arr, a) in {"ras.nii": (img, aff), "lps.nii": to_lps(img, aff)}.items():
        nimg = nib.Nifti1Image(arr, a)
        nimg.header.set_qform(None, code=0)
        (tmp_path / name).write_bytes(_patch(nimg.to_bytes(), "<3f", 80, 1.0, 1.0, 1.0))
    ras, lps = load_nifti(tmp_path / "ras.nii"), load_nifti(tmp_path / "lps.nii")
    assert ras.spacing == pytest.approx((0.8, 0.8, 2.5)) and lps.spacing == pytest.approx((0.8, 0.8, 2.5))


def test_regression_huge_vox_offset(tmp_path):
    p = tmp_path / "vo.nii"  # uncompressed: numpy memmap raised OverflowError
    p.write_bytes(_patch(_nii_bytes(_valid_img()), "<f", 108, 1e30))
    with pytest.raises(CTSegError, match="vo.nii: corrupt or truncated NIfTI data"):
        load_nifti(p)


def test_regression_label_values_beyond_int16_do_not_wrap(tmp_path):
    for dtype, value in [(np.int32, 40000), (np.float32, 1e30)]:
        p = tmp_path / f"big_{np.dtype(dtype).name}.nii.gz"
        p.write_bytes(_labels(value, dtype))
        with pytest.raises(CTSegError, match=f"{p.name}: label map has absurd label values"):
            load_nifti(p, "label")


def test_regression_nul_byte_and_deep_json(root):
    _edit(lambda m: m["training"][0].update(label="x\x00y"))(root)
    with pytest.raises(CTSegError, match=r"training\[0\].label: path .* contains a NUL byte"):
        MSDDataset(root)  # was a bare ValueError from Path.resolve()
    (root / "dataset.json").write_text("{\"a\":" * 50_000)
    with pytest.raises(CTSegError, match="nested too deeply"):
        MSDDataset(root)  # was RecursionError


def test_save_then_load_roundtrip_still_exact(tmp_path):
    # guard for the fixes above: a normal file still loads with exact values and spacing
    arr = _valid_img()
    save_nifti(tmp_path / "ok.nii.gz", arr, ras_affine((0.7, 0.9, 5.0)))
    v = load_nifti(tmp_path / "ok.nii.gz")
    np.testing.assert_array_equal(v.array, arr.astype(np.float32))
    assert v.spacing == pytest.approx((0.7, 0.9, 5.0))

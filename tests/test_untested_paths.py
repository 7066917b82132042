"""Code paths no other test executed (issue 19): the tar-extraction fallbacks, LAS / permuted files going
back through ``Volume.to_original``, and the ``CTSEG_DATA`` branch of :mod:`ctseg_lib.notebook`."""

from __future__ import annotations

import io
import itertools
import tarfile

import nibabel as nib
import numpy as np
import pytest

from ctseg_lib import notebook
from ctseg_lib.data import download
from ctseg_lib.data.download import safe_extract
from ctseg_lib.data.msd import MSDDataset
from ctseg_lib.data.nifti import load_nifti, save_nifti
from ctseg_lib.data.synthetic import GENERATOR_VERSION
from ctseg_lib.errors import CTSegError
from tests.conftest import write_msd


# -- tar extraction fallbacks ------------------------------------------------------------------------------
def _tar(path, files: dict[str, bytes], dirs=(), links: dict[str, str] | None = None):
    with tarfile.open(path, "w") as tf:
        for d in dirs:
            t = tarfile.TarInfo(d)
            t.type = tarfile.DIRTYPE
            tf.addfile(t)
        for name, data in files.items():
            t = tarfile.TarInfo(name)
            t.size = len(data)
            tf.addfile(t, io.BytesIO(data))
        for name, target in (links or {}).items():
            t = tarfile.TarInfo(name)
            t.type, t.linkname = tarfile.SYMTYPE, target
            tf.addfile(t)
    return path


def test_archive_without_a_single_top_folder_is_extracted_into_dest(tmp_path):
    """Fallback of ``_single_top_folder``: members at the top level (no ``Task03_Liver/`` wrapper) go
    straight into ``dest``; top-level ``._*`` files do not count as a second top-level entry."""
    tar = _tar(tmp_path / "flat.tar", {"dataset.json": b"{}", "imagesTr/a.nii.gz": b"a", "._dataset.json": b"x"},
               dirs=["imagesTr"])
    dest = safe_extract(tar, tmp_path / "out" / "Task")
    assert (dest / "dataset.json").read_bytes() == b"{}" and (dest / "imagesTr" / "a.nii.gz").read_bytes() == b"a"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["Task"]  # no temporary folder left


def test_single_top_level_symlink_is_not_taken_as_the_dataset_folder(tmp_path):
    """A lone top-level *symlink* to a folder must not become ``dest`` (it would be renamed away from
    what it points to): the whole extraction folder becomes ``dest`` instead."""
    tar = _tar(tmp_path / "l.tar", {"real/dataset.json": b"{}"}, dirs=["real"], links={"Task": "real"})
    dest = safe_extract(tar, tmp_path / "out" / "T")
    assert (dest / "real" / "dataset.json").is_file() and (dest / "Task").is_symlink()


def test_single_top_folder_with_macos_junk_next_to_it(tmp_path):
    """The real MSD tar has ``._Task03_Liver`` next to ``Task03_Liver/``: the folder still becomes dest."""
    root = write_msd(tmp_path / "src" / "Task03_Liver", n=1, junk=False)
    tar = tmp_path / "msd.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(root, arcname="Task03_Liver")
        t = tarfile.TarInfo("._Task03_Liver")
        t.size = 4
        tf.addfile(t, io.BytesIO(b"\x00\x05\x16\x07"))
    dest = safe_extract(tar, tmp_path / "out" / "Task03_Liver", validate=MSDDataset)
    assert MSDDataset(dest).case_ids == ["toy_0"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["Task03_Liver"]


def test_data_filter_is_the_second_line_of_defence(tmp_path, monkeypatch):
    """If our own member checks missed something, the PEP 706 ``data`` filter still refuses it, and the
    error is a one-line CTSegError naming the archive (the ``tarfile.FilterError`` branch)."""
    monkeypatch.setattr(download, "_check_member", lambda m, p: None)  # pretend our checks have a hole
    tar = _tar(tmp_path / "evil.tar", {"Task/ok": b"ok"}, links={"Task/passwd": "/etc/passwd"})
    with pytest.raises(CTSegError, match=r"evil.tar: unsafe member refused by the tar data filter"):
        safe_extract(tar, tmp_path / "out" / "Task")
    assert list((tmp_path / "out").iterdir()) == []


# -- LAS and permuted files back through to_original --------------------------------------------------------
def _affine(perm: tuple[int, int, int], signs: tuple[int, int, int], spacing=(0.8, 1.1, 2.5)) -> np.ndarray:
    """Stored array axis ``a`` runs along world axis ``perm[a]`` with sign ``signs[a]``."""
    aff = np.zeros((4, 4))
    for a, (w, s) in enumerate(zip(perm, signs)):
        aff[w, a] = s * spacing[a]
    aff[:3, 3] = (12.0, -7.0, 30.0)
    aff[3, 3] = 1.0
    return aff


ORIENTATIONS = {
    "LAS": ((0, 1, 2), (-1, 1, 1)),
    "LPS": ((0, 1, 2), (-1, -1, 1)),
    "RAI": ((0, 1, 2), (1, 1, -1)),
    "SRA (permuted)": ((2, 0, 1), (1, 1, 1)),        # stored (Z, X, Y): a cyclic permutation, not self-inverse
    "IPL (permuted+flipped)": ((2, 1, 0), (-1, -1, -1)),
    "ALI": ((1, 0, 2), (1, -1, -1)),
}


@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_to_original_round_trip_and_world_coordinates(tmp_path, name):
    perm, signs = ORIENTATIONS[name]
    stored = np.arange(5 * 4 * 3, dtype=np.int16).reshape(5, 4, 3)
    aff = _affine(perm, signs)
    save_nifti(tmp_path / "img.nii.gz", stored, aff)
    v = load_nifti(tmp_path / "img.nii.gz")
    assert v.orientation == "".join(nib.aff2axcodes(aff))
    assert v.orientation == name.split()[0]
    # canonical: every voxel's world position (through the canonical affine) is the stored voxel's
    inv = np.linalg.inv(v.original_affine)
    for ijk in itertools.product(*[range(n) for n in v.array.shape]):
        world = v.affine @ [*ijk, 1.0]
        src = np.rint(inv @ world)[:3].astype(int)
        assert v.array[ijk] == stored[tuple(src)]
    # back to file order: exactly the stored array, and a prediction saved that way overlays the source
    np.testing.assert_array_equal(v.to_original(v.array), stored)
    pred = (v.array % 7).astype(np.uint8)
    save_nifti(tmp_path / "pred.nii.gz", v.to_original(pred), v.original_affine)
    raw = nib.load(tmp_path / "pred.nii.gz")
    np.testing.assert_array_equal(np.asanyarray(raw.dataobj), stored % 7)
    np.testing.assert_allclose(raw.affine, aff)
    back = load_nifti(tmp_path / "pred.nii.gz", kind="label")
    np.testing.assert_array_equal(back.array, pred)


# -- CTSEG_DATA in the chapters' data switch ----------------------------------------------------------------
def test_get_dataset_uses_ctseg_data_and_generates_nothing(tmp_path, monkeypatch):
    real = tmp_path / "msd"
    write_msd(real / "Task03_Liver", n=1, junk=False)
    monkeypatch.setenv("CTSEG_DATA", str(real))
    monkeypatch.setattr(notebook, "DEFAULT_CACHE", tmp_path / "cache")

    def no_synthesis(*a, **k):
        raise AssertionError("phantoms generated although CTSEG_DATA is set")

    monkeypatch.setattr("ctseg_lib.data.synthetic.write_dataset", no_synthesis)
    assert notebook.get_dataset("liver") == real / "Task03_Liver"
    assert not (tmp_path / "cache").exists()
    with pytest.raises(CTSegError, match=r"CTSEG_DATA is set but Task06_Lung/dataset.json is missing "
                                         r"\(run: ctseg download --task lung --out "):
        notebook.get_dataset("lung")
    with pytest.raises(CTSegError, match="unknown task 'brain'"):
        notebook.get_dataset("brain")


def test_get_dataset_explicit_root_wins_over_ctseg_data(tmp_path, monkeypatch):
    monkeypatch.setenv("CTSEG_DATA", str(tmp_path / "nowhere"))
    calls = []

    def fake_write(task, path, **kw):
        calls.append((task, path.name, kw["cases"]))
        path.mkdir(parents=True)

    monkeypatch.setattr("ctseg_lib.data.synthetic.write_dataset", fake_write)
    p = notebook.get_dataset("lung", cases=3, test_cases=1, seed=5, root=tmp_path / "phantoms")
    assert p == tmp_path / "phantoms" / f"lung_3_1_5_g{GENERATOR_VERSION}" and (p / ".complete").is_file()
    assert notebook.get_dataset("lung", cases=3, test_cases=1, seed=5, root=tmp_path / "phantoms") == p
    assert calls == [("lung", p.name, 3)]  # generated once, then reused via the marker


def test_held_out_cases_are_fresh_phantoms_or_the_splits_test_cases(tmp_path, monkeypatch):
    monkeypatch.delenv("CTSEG_DATA", raising=False)
    calls = []

    def fake_write(task, path, **kw):
        calls.append((task, kw["cases"], kw["seed"], kw["test_cases"]))
        write_msd(path, n=kw["cases"], junk=False)

    monkeypatch.setattr(notebook, "DEFAULT_CACHE", tmp_path / "cache")
    monkeypatch.setattr("ctseg_lib.data.synthetic.write_dataset", fake_write)
    split = {"train": ["toy_0"], "val": [], "test": ["toy_1", "toy_2"]}
    train_ds = MSDDataset(write_msd(tmp_path / "train", n=3, junk=False))
    test_ds, ids = notebook.held_out_cases(train_ds, split, cases=2)
    assert calls == [("liver", 2, notebook.LIVER_TEST_SEED, 0)] and test_ds.root != train_ds.root
    assert ids == ["toy_0", "toy_1"] == test_ds.case_ids
    monkeypatch.setenv("CTSEG_DATA", str(tmp_path / "msd"))  # real data: nothing generated, the split's test cases
    assert notebook.held_out_cases(train_ds, split) == (train_ds, ["toy_1", "toy_2"])
    assert len(calls) == 1


def test_setup_chapter_reports_real_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CTSEG_DATA", str(tmp_path))
    s = notebook.setup_chapter("Chapter X", cpu_minutes=2)
    assert s.real_data and s.data_root == tmp_path
    assert f"real MSD from CTSEG_DATA={tmp_path}" in capsys.readouterr().out
    monkeypatch.delenv("CTSEG_DATA")
    s = notebook.setup_chapter("Chapter X", cpu_minutes=2)
    assert not s.real_data and s.data_root == notebook.DEFAULT_CACHE
    assert "synthetic CT phantoms" in capsys.readouterr().out

"""The vendored real CT samples (samples/realct), their loader and the script that makes them.

Comparisons with the full-size originals need ``../shared/realct`` beside the repository and are
skipped where it is absent (a fresh clone elsewhere); everything else always runs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import scipy.ndimage as ndi

from ctseg_lib.data import samples as samples_mod
from ctseg_lib.data.nifti import load_nifti
from ctseg_lib.data.samples import SAMPLES, list_samples, load_sample, sample_dir
from ctseg_lib.errors import CTSegError

ROOT = Path(__file__).resolve().parent.parent
VENDORED = ROOT / "samples" / "realct"
ORIGINALS = ROOT.parent / "shared" / "realct"
needs_originals = pytest.mark.skipif(not (ORIGINALS / "msd_liver_0_ct.nii.gz").is_file(),
                                     reason="full-size originals (../shared/realct) not present")
PADDING = {"msd_liver_0": -3024, "lidc_0001": -2048}
SLICE_MM = {"msd_liver_0": 5.0, "lidc_0001": 2.5}
STORED = {"msd_liver_0": "LAS", "lidc_0001": "LPS"}

_spec = importlib.util.spec_from_file_location("make_samples", ROOT / "tools" / "make_samples.py")
make_samples = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_samples)


@pytest.fixture(scope="module")
def loaded():
    return {name: load_sample(name) for name in SAMPLES}


@pytest.fixture(scope="module")
def originals():
    out = {}
    for name, info in SAMPLES.items():
        out[name] = (load_nifti(ORIGINALS / info.image),
                     {k: load_nifti(ORIGINALS / f, kind="label") for k, f in info.labels.items()})
    return out


def _world(vol, idx: np.ndarray) -> np.ndarray:
    """World (RAS mm) coordinates of voxel indices ``idx`` (N, 3) of a canonical Volume."""
    return (np.c_[idx, np.ones(len(idx))] @ vol.affine.T)[:, :3]


def _body(hu: np.ndarray) -> np.ndarray:
    """Largest connected region above -500 HU, holes filled slice by slice (lungs, bowel gas inside)."""
    lab, _ = ndi.label(hu > -500)
    body = lab == int(np.argmax(np.bincount(lab.ravel())[1:])) + 1
    return ndi.binary_fill_holes(body, structure=np.array([[[0] * 3, [0, 1, 0], [0] * 3],
                                                           [[0, 1, 0], [1, 1, 1], [0, 1, 0]],
                                                           [[0] * 3, [0, 1, 0], [0] * 3]]).transpose(1, 2, 0))


# --- always run: the vendored files and the loader ---------------------------------------------------------

def test_files_exist_total_size_and_licences():
    files = [VENDORED / f for info in SAMPLES.values() for f in (info.image, *info.labels.values())]
    assert all(f.is_file() for f in files), [f.name for f in files if not f.is_file()]
    total = sum(f.stat().st_size for f in VENDORED.iterdir())
    assert total <= 15e6, f"samples/realct holds {total / 1e6:.1f} MB, the budget is 15 MB"
    readme = (VENDORED / "README.md").read_text()
    assert "CC BY-SA 4.0" in readme and "CC BY 3.0" in readme and "not clinical use" in " ".join(readme.split())
    assert "Attribution-ShareAlike 4.0 International" in (VENDORED / "LICENSE-CC-BY-SA-4.0.txt").read_text()
    assert "creativecommons.org/licenses/by/3.0" in (VENDORED / "LICENSE-CC-BY-3.0.txt").read_text()


def test_loader_finds_and_describes_the_samples(loaded):
    assert sample_dir().resolve() == VENDORED.resolve()
    assert list_samples() == sorted(SAMPLES)
    liver, lidc = loaded["msd_liver_0"], loaded["lidc_0001"]
    assert (liver.task, lidc.task) == ("liver", "lung")
    assert set(liver.labels) == {"liver"} and set(lidc.labels) == {"nodule_consensus", "nodule_readers"}
    assert liver.licence == "CC BY-SA 4.0" and lidc.licence == "CC BY 3.0"
    assert "Antonelli" in liver.attribution and "Armato" in lidc.attribution
    assert "tumour merged" in liver.label_semantics
    for s in loaded.values():
        assert s.image.array.dtype == np.float32
        for lab in s.labels.values():
            assert lab.array.dtype == np.uint8 and lab.array.shape == s.image.array.shape
            np.testing.assert_allclose(lab.affine, s.image.affine)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_orientation_spacing_and_padding(loaded, name):
    s = loaded[name]
    assert "".join(nib.aff2axcodes(s.image.affine)) == "RAS"  # canonical in memory ...
    assert s.image.orientation == STORED[name]  # ... the file keeps its own convention
    sx, sy, sz = s.image.spacing
    assert 1.4 <= sx <= 1.6 and 1.4 <= sy <= 1.6 and sz == pytest.approx(SLICE_MM[name])
    a = s.image.array
    # The field-of-view padding is kept exactly, with no interpolated values between it and air.
    assert np.array_equal(np.unique(a[a < -1024]), [PADDING[name]])
    assert 0.05 < np.mean(a == PADDING[name]) < 0.3


def test_hu_plausible(loaded):
    liver, lidc = loaded["msd_liver_0"], loaded["lidc_0001"]
    for s in (liver, lidc):
        a = s.image.array
        body = _body(a)
        outside = ~ndi.binary_dilation(body, iterations=3) & (a > -1024) & (a < -500)  # air around the patient
        assert -1030 < np.median(a[outside]) < -950
        hist, edges = np.histogram(a[body], bins=40, range=(-200, 0))
        assert -130 <= edges[np.argmax(hist)] <= -70  # the fat peak
    a = liver.image.array
    assert 80 < a[liver.labels["liver"].array > 0].mean() < 160  # portal-venous liver, tumour included
    a, readers = lidc.image.array, lidc.labels["nodule_readers"].array
    nodule = readers > 0
    shell = ndi.binary_dilation(nodule, iterations=8) & ~ndi.binary_dilation(nodule, iterations=3)
    assert -900 < np.median(a[shell]) < -700  # lung around the nodule
    assert -150 < np.median(a[readers == 4]) < 100  # solid nodule core


def test_anatomy_sides(loaded):
    """Liver on the patient's right (+x in RAS), the LIDC-0001 nodule in the left lung (-x), posterior half."""
    for name, key, sign in (("msd_liver_0", "liver", 1), ("lidc_0001", "nodule_consensus", -1)):
        s = loaded[name]
        body_c = _world(s.image, np.array([ndi.center_of_mass(_body(s.image.array))]))[0]
        c = _world(s.image, np.array([ndi.center_of_mass(s.labels[key].array > 0)]))[0]
        assert sign * (c[0] - body_c[0]) > 30, (name, c, body_c)
    assert c[1] < body_c[1]  # the nodule is posterior to the body's centre (RAS: +y anterior)
    assert loaded["msd_liver_0"].labels["liver"].array.any(axis=(0, 1)).nonzero()[0].max() > 60  # upper slices


def test_mask_volumes_match_manifest(loaded):
    """Each mask's volume equals the original's (recorded by the script) within 2 %."""
    manifest = json.loads((VENDORED / "manifest.json").read_text())
    for name, info in SAMPLES.items():
        s = loaded[name]
        for key, f in info.labels.items():
            ml = np.count_nonzero(s.labels[key].array) * np.prod(s.image.spacing) / 1000
            orig = manifest["samples"][name]["files"][f]["volume_ml_original"]
            assert ml == pytest.approx(orig, rel=0.02), (name, key, ml, orig)
    consensus, readers = (loaded["lidc_0001"].labels[k].array for k in ("nodule_consensus", "nodule_readers"))
    assert np.array_equal(consensus > 0, readers >= 2)


def test_loader_errors(monkeypatch, tmp_path):
    with pytest.raises(CTSegError, match="unknown real CT sample 'nope'.*msd_liver_0"):
        load_sample("nope")
    monkeypatch.setenv(samples_mod.ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(CTSegError, match="CTSEG_SAMPLES") as e:
        sample_dir()
    assert e.value.path == tmp_path / "missing"
    monkeypatch.setenv(samples_mod.ENV_VAR, str(tmp_path))
    assert list_samples() == []
    with pytest.raises(CTSegError, match="file not found") as e:
        load_sample("lidc_0001")
    assert e.value.path == tmp_path / "lidc_0001_ct.nii.gz"


def test_loader_rejects_a_mask_off_the_grid(monkeypatch, tmp_path):
    info = SAMPLES["msd_liver_0"]
    (tmp_path / info.image).write_bytes((VENDORED / info.image).read_bytes())
    img = nib.load(str(VENDORED / info.labels["liver"]))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[1:], img.affine), str(tmp_path / info.labels["liver"]))
    monkeypatch.setenv(samples_mod.ENV_VAR, str(tmp_path))
    with pytest.raises(CTSegError, match="does not match image shape"):
        load_sample("msd_liver_0")


def test_sample_dir_without_checkout(monkeypatch, tmp_path):
    """Installed without the repository (pip): a clear error naming where it looked."""
    monkeypatch.delenv(samples_mod.ENV_VAR, raising=False)
    monkeypatch.setattr(samples_mod, "_candidates", lambda: [tmp_path / "samples" / "realct"])
    with pytest.raises(CTSegError, match="not in the pip package") as e:
        sample_dir()
    assert e.value.path == tmp_path / "samples" / "realct"


# --- always run: the script on a small synthetic scan -------------------------------------------------------

def test_make_samples_compact_keeps_world_positions_and_padding():
    rng = np.random.default_rng(0)
    n, step = 128, 0.703125
    xx, yy = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    inside_fov = (xx - 63.5) ** 2 + (yy - 63.5) ** 2 < 60 ** 2
    body = (xx - 63.5) ** 2 / 58 ** 2 + (yy - 70) ** 2 / 30 ** 2 < 1
    ct = np.where(body, 40, -1000)[..., None] + rng.normal(0, 20, (n, n, 6))
    ct = np.where(inside_fov[..., None], np.rint(ct), -3024).astype(np.int16)
    lab = (body & (xx > 70))[..., None].repeat(6, axis=2).astype(np.uint8)
    affine = np.array([[-step, 0, 0, 40.0], [0, step, 0, -30.0], [0, 0, 5.0, -100.0], [0, 0, 0, 1]])  # LAS
    out, labels, aff, info = make_samples.compact(nib.Nifti1Image(ct, affine), {"m": nib.Nifti1Image(lab, affine)})
    assert info["orientation"] == "LAS" and info["padding_value"] == -3024
    np.testing.assert_allclose(info["spacing_mm"], [1.5, 1.5, 5.0])
    assert info["crop_voxels"][0] == [0, 128] and info["crop_voxels"][1][1] - info["crop_voxels"][1][0] < n
    assert out.dtype == np.int16 and labels["m"].dtype == np.uint8 and labels["m"].shape == out.shape
    assert np.array_equal(np.unique(out[out < -1500]), [-3024])  # no smear at the field-of-view edge
    # Away from the padding, every output voxel equals the input interpolated at the same world point.
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in out.shape], indexing="ij"), -1).reshape(-1, 3)
    src = (np.c_[idx, np.ones(len(idx))] @ (np.linalg.inv(affine) @ aff).T)[:, :3]
    ref = ndi.map_coordinates(ct.astype(np.float32), src.T, order=1, mode="nearest")
    clean = ndi.map_coordinates((ndi.minimum_filter(ct, size=(3, 3, 1)) > -3024).astype(np.uint8), src.T, order=0) > 0
    assert clean.sum() > 0.5 * clean.size
    assert np.abs(out.reshape(-1)[clean] - ref[clean]).max() <= 0.55
    # The mask keeps its volume (nearest neighbour) and stays on the right part of the body.
    vol_in, vol_out = lab.sum() * step * step * 5, labels["m"].sum() * 1.5 * 1.5 * 5
    assert vol_out == pytest.approx(vol_in, rel=0.03)


def test_make_samples_refuses_missing_source(tmp_path):
    assert make_samples.main([str(tmp_path / "nothing"), "--out", str(tmp_path / "out")]) == 2


# --- against the full-size originals (../shared/realct) ------------------------------------------------------

@needs_originals
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_grid_matches_original(loaded, originals, name):
    s, (orig, _) = loaded[name], originals[name]
    assert s.image.orientation == orig.orientation
    assert s.image.spacing[2] == pytest.approx(orig.spacing[2], abs=1e-4)
    assert min(s.image.spacing[:2]) >= 1.4 and max(s.image.spacing[:2]) <= 1.6
    np.testing.assert_allclose(s.image.affine[:3, :3] @ [0, 0, 1], orig.affine[:3, :3] @ [0, 0, 1], atol=1e-4)
    # The padding's area inside the crop box (file order, from manifest.json) is kept.
    box = json.loads((VENDORED / "manifest.json").read_text())["samples"][name]["crop_voxels"]
    orig_box = orig.to_original(orig.array)[tuple(slice(a, b) for a, b in box)]
    pad_mm2 = np.count_nonzero(s.image.array == PADDING[name]) * np.prod(s.image.spacing[:2])
    assert pad_mm2 == pytest.approx(np.count_nonzero(orig_box == PADDING[name]) * np.prod(orig.spacing[:2]), rel=0.02)


@needs_originals
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_hu_equals_original_at_the_same_world_points(loaded, originals, name):
    s, (orig, _) = loaded[name], originals[name]
    rng = np.random.default_rng(0)
    idx = np.stack([rng.integers(0, d, 50_000) for d in s.image.array.shape], 1)
    src = (np.c_[_world(s.image, idx), np.ones(len(idx))] @ np.linalg.inv(orig.affine).T)[:, :3]
    assert np.abs(src[:, 2] - np.rint(src[:, 2])).max() < 1e-6  # same slices
    ref = ndi.map_coordinates(orig.array, src.T, order=1, mode="nearest")
    away_from_padding = ndi.minimum_filter(orig.array, size=(3, 3, 1)) > PADDING[name]
    clean = ndi.map_coordinates(away_from_padding.astype(np.uint8), src.T, order=0) > 0
    assert clean.mean() > 0.7
    diff = np.abs(s.image.array[tuple(idx.T)] - ref)[clean]
    assert diff.max() <= 0.55, diff.max()  # linear interpolation, then int16 rounding
    # Padding stays padding, body stays body.
    src_nn = np.rint(src).astype(int).T
    is_pad = s.image.array[tuple(idx.T)] == PADDING[name]
    assert np.mean(is_pad == (orig.array[tuple(src_nn)] == PADDING[name])) > 0.99


@needs_originals
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_masks_match_original_volume_and_place(loaded, originals, name):
    s, (orig, orig_labels) = loaded[name], originals[name]
    for key, lab in s.labels.items():
        m, om = lab.array > 0, orig_labels[key].array > 0
        vol, ovol = m.sum() * np.prod(s.image.spacing), om.sum() * np.prod(orig.spacing)
        assert vol == pytest.approx(ovol, rel=0.02), (key, vol, ovol)
        c = _world(s.image, np.argwhere(m).mean(axis=0, keepdims=True))[0]
        oc = _world(orig, np.argwhere(om).mean(axis=0, keepdims=True))[0]
        assert np.linalg.norm(c - oc) < 0.5, (key, c, oc)
        assert lab.array.max() == orig_labels[key].array.max()
    key = "liver" if name == "msd_liver_0" else "nodule_consensus"
    mean, omean = s.image.array[s.labels[key].array > 0].mean(), orig.array[orig_labels[key].array > 0].mean()
    assert abs(mean - omean) < (3 if key == "liver" else 10), (mean, omean)


@needs_originals
def test_manifest_records_these_originals_and_files():
    """The vendored files are the script's output from exactly these originals (checksums in manifest.json)."""
    manifest = json.loads((VENDORED / "manifest.json").read_text())
    assert set(manifest["samples"]) == set(SAMPLES)
    for entry in manifest["samples"].values():
        for f, rec in entry["files"].items():
            assert hashlib.sha256((ORIGINALS / f).read_bytes()).hexdigest() == rec["source_sha256"], f
            assert hashlib.sha256((VENDORED / f).read_bytes()).hexdigest() == rec["sha256"], f

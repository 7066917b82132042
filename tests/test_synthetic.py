"""Synthetic phantoms: determinism, MSD layout, orientations, anatomy and HU statistics."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from ctseg_lib.cli import main
from ctseg_lib.data.msd import MSDDataset
from ctseg_lib.data.nifti import load_nifti, save_nifti
from ctseg_lib.data.phantom_abdomen import PHASES, sample_phase
from ctseg_lib.data.synthetic import PADDING_HU, generate_case, sample_geometry, sample_scanner, to_lps, write_dataset
from ctseg_lib.errors import CTSegError

S = 0.3  # ~50×50×20 voxels: fast, still anatomically complete


@pytest.fixture(scope="module")
def liver6(tmp_path_factory):
    return write_dataset("liver", tmp_path_factory.mktemp("syn") / "liver", cases=6, seed=3, test_cases=1, scale=S)


def test_same_seed_identical_different_seed_differs():
    a = generate_case("liver", seed=1, index=2, scale=0.2)
    b = generate_case("liver", seed=1, index=2, scale=0.2)
    c = generate_case("liver", seed=2, index=2, scale=0.2)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    assert a[0].shape != c[0].shape or not np.array_equal(a[0], c[0])
    assert a[0].dtype == np.int16 and a[1].dtype == np.uint8 and a[2].shape == (4, 4)


def test_case_independent_of_number_of_cases(tmp_path):
    write_dataset("lung", tmp_path / "a", cases=1, seed=5, scale=0.2)
    write_dataset("lung", tmp_path / "b", cases=2, seed=5, scale=0.2)
    fa, fb = (tmp_path / d / "imagesTr" / "lung_0.nii.gz" for d in "ab")
    assert np.array_equal(np.asarray(nib.load(fa).dataobj), np.asarray(nib.load(fb).dataobj))


def test_msd_layout_and_every_case_loads(liver6):
    meta = json.loads((liver6 / "dataset.json").read_text())
    assert meta["labels"] == {"0": "background", "1": "liver", "2": "cancer"}
    assert meta["modality"] == {"0": "CT"} and meta["tensorImageSize"] == "3D"
    assert meta["numTraining"] == 6 and meta["numTest"] == 1
    assert meta["training"][0] == {"image": "./imagesTr/liver_0.nii.gz", "label": "./labelsTr/liver_0.nii.gz"}
    assert meta["test"] == ["./imagesTs/liver_100.nii.gz"]
    ds = MSDDataset(liver6)
    assert ds.num_classes == 3 and len(ds) == 6
    orients = set()
    for i in range(len(ds)):
        img, lab = ds.load_case(i)
        orients.add(img.orientation)
        assert nib.load(ds.cases[i].image).get_data_dtype() == np.int16
        assert nib.load(ds.cases[i].label).get_data_dtype() == np.uint8
        a = img.array
        assert a.max() <= 3071 and a[a >= -1024].min() >= -1024
        assert set(np.unique(a[a < -1024])) <= {-2048, -3024}  # only the field-of-view padding
        assert np.all(lab.affine[:3, :3].diagonal() > 0)  # canonical RAS+ after loading
    assert orients == {"RAS", "LPS"}


def test_lps_and_ras_copies_load_identically(tmp_path):
    img, lab, aff = generate_case("liver", seed=0, index=1, scale=0.2, orientation="RAS")
    img2, lab2, aff2 = generate_case("liver", seed=0, index=1, scale=0.2, orientation="LPS")
    assert "".join(nib.aff2axcodes(aff)) == "RAS" and "".join(nib.aff2axcodes(aff2)) == "LPS"
    assert not np.array_equal(img, img2)  # stored differently ...
    save_nifti(tmp_path / "ras.nii.gz", img, aff)
    save_nifti(tmp_path / "lps.nii.gz", img2, aff2)
    a, b = load_nifti(tmp_path / "ras.nii.gz"), load_nifti(tmp_path / "lps.nii.gz")
    assert np.array_equal(a.array, b.array)  # ... same scan after canonicalisation
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-4)
    assert np.array_equal(lab, to_lps(lab2, aff2)[0])  # flipping twice is the identity


def test_liver_on_patient_right_spine_posterior():
    img, lab, aff = generate_case("liver", seed=0, index=0, scale=0.4, orientation="RAS")
    liver = np.argwhere(lab > 0)
    world = liver[:, :3] @ aff[:3, :3].T + aff[:3, 3]
    body = np.argwhere(img > -300) @ aff[:3, :3].T + aff[:3, 3]
    assert world[:, 0].mean() > body[:, 0].mean() + 30  # RAS: +x = patient's Right
    bone = np.argwhere(img > 500) @ aff[:3, :3].T + aff[:3, 3]
    assert np.median(bone[:, 1]) < body[:, 1].mean()  # spine behind the body centre (−y = posterior)


def test_liver_hu_and_tumours_inside_liver():
    liver_hu, tumour_hu, shell_in_liver, n_tumour_cases = [], [], [], 0
    for i in range(6):
        img, lab, _ = generate_case("liver", seed=0, index=i, scale=0.5)
        liver_hu.append(img[lab == 1].mean())
        if (lab == 2).any():
            n_tumour_cases += 1
            tumour_hu.append((img[lab == 2].sum(), (lab == 2).sum(), np.median(img[lab == 2]), liver_hu[-1]))
            t = lab == 2
            shell = ndimage.binary_dilation(t) & ~t
            shell_in_liver.append((lab[shell] > 0).mean())
        corner = img[:3, :3, :]
        assert len(np.unique(corner)) == 1 and corner.flat[0] in PADDING_HU  # outside the reconstruction circle
    assert all(75 < h < 165 for h in liver_hu), liver_hu  # delayed to portal-venous (PHASES)
    assert n_tumour_cases >= 2
    assert all(med < liver for _, _, med, liver in tumour_hu), tumour_hu  # hypodense in every case
    pooled = sum(t[0] for t in tumour_hu) / sum(t[1] for t in tumour_hu)
    assert pooled < np.mean(liver_hu) - 25, (pooled, liver_hu)
    assert np.mean(shell_in_liver) > 0.5  # tumours are surrounded by liver, not floating outside it


def test_lung_imbalance():
    fracs, free = [], []
    for i in range(4):
        img, lab, _ = generate_case("lung", seed=0, index=i, scale=0.35)
        assert set(np.unique(lab)) <= {0, 1}
        assert lab.any()
        fracs.append(lab.mean())
        free.append(1 - lab.any(axis=(0, 1)).mean())
        lung = (img < -700) & (img > -950)
        assert lung.mean() > 0.05  # lungs are large
        # solid: far denser than lung.  At these coarse (~5 mm) voxels a tumour of < 30 voxels is all
        # partial volume, so for those only its densest voxel must stand clearly above the lung.
        tumour = img[lab == 1]
        if tumour.size >= 30:
            assert tumour.mean() > img[lung].mean() + 400
        else:
            assert tumour.max() > img[lung].mean() + 200
        assert img[lab == 1].max() < 150
    assert max(fracs) <= 0.002
    assert min(free) >= 0.6


def test_geometry_ranges():
    rng = np.random.default_rng(0)
    geos = [sample_geometry("liver", rng) for _ in range(40)]
    sp = np.array([g.spacing for g in geos])
    shapes = np.array([g.shape for g in geos])
    assert sp[:, 0].min() >= 0.7 and sp[:, 0].max() <= 2.0 + 1e-6
    assert sp[:, 2].min() >= 1.0 and sp[:, 2].max() <= 5.0
    assert shapes[:, :2].max() <= 256 and shapes[:, 2].max() <= 200 and shapes[:, 2].min() >= 48
    # every liver scan reaches below the liver (~170 mm under the dome at z = 0): a scan that holds a
    # third of the liver and mostly heart made the book's model call the heart "liver" (generator 3)
    assert max(g.z0 for g in geos) <= -150, sorted(g.z0 for g in geos)[-5:]
    assert len(set(map(tuple, shapes))) > 30 and 300 <= min(g.fov_mm for g in geos)


def test_liver_range_reaches_the_pelvis():
    """Generator 3: liver scans cover 280-600 mm, so a good share reaches the pelvis (real abdomen-pelvis
    studies do, and a model that never saw hips and bladder marks them; chapter 12)."""
    rng = np.random.default_rng(1)
    bottoms = np.array([sample_geometry("liver", rng).z0 for _ in range(200)])
    assert 0.25 < (bottoms < -300).mean() < 0.7, np.percentile(bottoms, [10, 50, 90])
    lung = np.array([sample_geometry("lung", rng).shape[2] for _ in range(50)])
    assert lung.max() <= 96


def test_pelvis_has_bone_beside_the_midline():
    """Scans that end 150-280 mm below the liver (at the iliac wings and hips) show bone beside the
    midline in their lowest 60 mm; generator 2 had only the spine there."""
    found = 0
    for i in range(30):
        img, lab, aff = generate_case("liver", seed=4, index=i, scale=0.3, orientation="RAS")
        liver_z = np.flatnonzero((lab > 0).any(axis=(0, 1)))
        if liver_z.size == 0 or not 150 <= liver_z.min() * aff[2, 2] <= 280:
            continue
        low = img[:, :, : max(2, int(60 / aff[2, 2]))].copy()
        c, half = img.shape[0] // 2, int(35 / aff[0, 0])
        low[c - half: c + half] = 0  # ignore the midline (spine, sacrum)
        assert (low > 250).sum() > 50, f"case {i}: no pelvic bone beside the midline"  # thick slices: partial volume
        found += 1
    assert found >= 2


def test_contrast_phases_and_scanner_draws():
    rng = np.random.default_rng(2)
    phases = [sample_phase(rng) for _ in range(400)]
    names = [p["name"] for p in phases]
    for name, spec in PHASES.items():
        share = names.count(name) / len(names)
        assert abs(share - spec["p"]) < 0.07, (name, share)
        livers = [p["liver"] for p in phases if p["name"] == name]
        assert all(spec["liver"][0] <= h <= spec["liver"][1] for h in livers)
    assert set(names) == {"portal-venous", "delayed"}  # MSD Task03 / LiTS: contrast-enhanced, mostly portal-venous
    assert sum(PHASES[n]["p"] for n in PHASES) == pytest.approx(1.0)
    scans = [sample_scanner(rng) for _ in range(300)]
    assert {s["padding"] for s in scans} == set(PADDING_HU)
    assert all(6 <= s["noise_sd"] <= 35 and 0.5 <= s["blur"] <= 1.1 for s in scans)


def test_liver_phases_change_tumour_and_liver_together():
    """A hypodense tumour stays darker than its own liver in every phase (drop is relative)."""
    for i in range(10):
        img, lab, _ = generate_case("liver", seed=8, index=i, scale=0.5)
        if (lab == 2).sum() >= 200:
            assert np.median(img[lab == 2]) < np.median(img[lab == 1]) - 8, i


def test_lung_phantoms_unchanged_since_generator_2():
    """Generator 3 changed the liver phantoms only: lung cases are byte-identical to version 2, so the
    lung results of chapter 9 and the README still describe the phantoms ``ctseg synth`` writes.
    (md5 of image, label and affine bytes, computed with generator 2 at commit 50798b7.)"""
    import hashlib

    want = ["c4e1198682a5b4eeb05726d2edb41a8d", "968569f9b83af4b455dddc90dc86733d"]
    for i, h in enumerate(want):
        img, lab, aff = generate_case("lung", seed=11, index=i, scale=0.5)
        assert hashlib.md5(img.tobytes() + lab.tobytes() + aff.tobytes()).hexdigest() == h, i


def test_refuses_foreign_folder_and_reruns_own(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(CTSegError, match="not empty"):
        write_dataset("liver", out, cases=1, scale=0.15)
    write_dataset("liver", out, cases=1, scale=0.15, overwrite=True)
    assert (out / "notes.txt").exists()
    # an earlier synth output can be rewritten; files it no longer lists are removed
    own = write_dataset("liver", tmp_path / "own", cases=2, scale=0.15)
    write_dataset("liver", own, cases=1, scale=0.15)
    assert not (own / "imagesTr" / "liver_1.nii.gz").exists()
    assert len(MSDDataset(own)) == 1
    (tmp_path / "file").write_text("x")
    with pytest.raises(CTSegError, match="not a folder"):
        write_dataset("liver", tmp_path / "file", cases=1, scale=0.15)


@pytest.mark.parametrize("kw, msg", [({"task": "brain"}, "unknown"), ({"cases": 0}, "cases"),
                                     ({"test_cases": -1}, "test cases")])
def test_bad_arguments(tmp_path, kw, msg):
    args = {"task": "liver", "out": tmp_path / "x", "cases": 1, "scale": 0.15, **kw}
    with pytest.raises(CTSegError, match=msg):
        write_dataset(**args)


def test_generate_case_errors():
    with pytest.raises(CTSegError, match="orientation"):
        generate_case("liver", 0, scale=0.15, orientation="LAS")
    with pytest.raises(CTSegError, match="scale"):
        generate_case("lung", 0, scale=0)
    with pytest.raises(CTSegError, match="unknown"):
        generate_case("kidney", 0)


def test_cli_synth(tmp_path, capsys):
    out = tmp_path / "lung"
    assert main(["synth", "--task", "lung", "--out", str(out), "--cases", "2", "--scale", "0.15"]) == 0
    assert "wrote 2 training" in capsys.readouterr().out
    assert MSDDataset(out).labels == {0: "background", 1: "cancer"}
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "a").write_text("x")
    assert main(["synth", "--task", "lung", "--out", str(foreign), "--cases", "1"]) == 2
    assert "not empty" in capsys.readouterr().err


def test_each_structure_has_its_own_random_stream(monkeypatch):
    """Removing (or adding) an organ leaves every other structure as it was: the liver and tumour
    labels of a phantom are identical with and without bowel.  (Planted variant: one generator shared
    by all organs — then the bowel's draws shift the liver's and the labels change.)"""
    from ctseg_lib.data import phantom_abdomen
    from ctseg_lib.data.phantom_shapes import organ_streams

    s1, s2 = organ_streams(np.random.default_rng(3)), organ_streams(np.random.default_rng(3))
    s1("heart").random(100)  # drawing from one stream does not move another
    assert s1("liver").random() == s2("liver").random() and s1("liver").random() != s1("spleen").random()
    _, with_bowel, _ = generate_case("liver", seed=11, index=2, scale=0.5, orientation="RAS")
    monkeypatch.setattr(phantom_abdomen, "_bowel", lambda *a, **k: None)
    image, without, _ = generate_case("liver", seed=11, index=2, scale=0.5, orientation="RAS")
    assert (with_bowel > 0).any() and np.array_equal(with_bowel, without)

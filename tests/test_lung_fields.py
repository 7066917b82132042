"""The ``lung_fields`` postprocessing step: lesions are kept only where they can be, in the lungs.

- on a small synthetic chest (body, two lungs joined by the airways, an abdomen below them): a
  nodule inside a lung stays, a juxtapleural nodule stays thanks to the closing (and goes without
  it), a "nodule" in the soft tissue below the lungs goes; other labels are untouched;
- the step through ``parse_steps`` / ``apply_postprocessing`` (a clear error without the image),
  the ``lung_real`` preset, and ``ctseg predict`` passing the scan's canonical HU array;
- on the vendored real scan ``lidc_0001`` the reference nodule (it touches the pleura) lies
  inside the lung fields and survives the step.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ctseg_lib.data.stats import body_mask
from ctseg_lib.postprocessing import (
    LUNG_CLOSE_MM,
    apply_postprocessing,
    keep_in_lung_fields,
    lung_field,
    parse_steps,
)

SPACING = (2.0, 2.0, 3.0)  # mm
SHAPE = (64, 48, 36)       # 128 × 96 × 108 mm
BLOB_HU = 45               # the "nodules" (body is 40 HU): what the fake network of the CLI test marks
NAMES = {0: "background", 1: "nodule"}


def _ball(c_mm, r_mm):
    x, y, z = np.meshgrid(*[(np.arange(n) + 0.0) * s for n, s in zip(SHAPE, SPACING)], indexing="ij")
    return (x - c_mm[0]) ** 2 + (y - c_mm[1]) ** 2 + (z - c_mm[2]) ** 2 <= r_mm ** 2


def synthetic_chest() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """HU volume ``(64, 48, 36)`` int16 at :data:`SPACING` and the three nodules (bool masks).

    Body: 40 HU elliptic cylinder in -1000 HU air.  Lungs (-850 HU): ellipsoids centred at x = 40 and
    88 mm, from z = 36 to 96 mm, joined by a bronchus and a trachea (-1000 HU) that runs to the top,
    as real lungs are joined by the airways (one air-like component).  Below z = 36 mm: abdomen.
    """
    x, y, z = np.meshgrid(*[(np.arange(n) + 0.0) * s for n, s in zip(SHAPE, SPACING)], indexing="ij")
    hu = np.full(SHAPE, -1000.0)
    hu[((x - 64) / 58) ** 2 + ((y - 48) / 42) ** 2 <= 1] = 40
    for cx in (40.0, 88.0):
        hu[((x - cx) / 18) ** 2 + ((y - 48) / 28) ** 2 + ((z - 66) / 30) ** 2 <= 1] = -850
    hu[(np.abs(x - 64) <= 24) & ((y - 48) ** 2 + (z - 72) ** 2 <= 16)] = -1000  # bronchus (r 4 mm)
    hu[((x - 64) ** 2 + (y - 48) ** 2 <= 25) & (z >= 72)] = -1000                 # trachea (r 5 mm)
    nodules = {
        "inside": _ball((40, 48, 66), 6),      # in the middle of the left lung
        "juxtapleural": _ball((101, 48, 66), 8),  # on the lateral wall of the right lung (x = 106 mm)
        "below": _ball((40, 48, 12), 6),       # in the abdomen, 18 mm under the lungs
    }
    for m in nodules.values():
        hu[m] = BLOB_HU
    return hu.astype(np.int16), nodules


@pytest.fixture(scope="module")
def chest():
    return synthetic_chest()


def _labels(nodules: dict[str, np.ndarray], label: int = 1) -> np.ndarray:
    lab = np.zeros(SHAPE, np.uint8)
    for m in nodules.values():
        lab[m] = label
    return lab


def test_synthetic_chest_is_what_it_claims(chest):
    hu, nod = chest
    juxta = nod["juxtapleural"]
    # the juxtapleural nodule touches the chest wall: in its slices it is no hole in the lung
    body_wall = hu == 40
    assert (ndimage.binary_dilation(juxta) & body_wall).any()
    assert not (ndimage.binary_dilation(nod["inside"]) & body_wall).any()


def test_lung_field_closing_keeps_the_juxtapleural_nodule(chest):
    hu, nod = chest
    field, open_field = lung_field(hu, SPACING), lung_field(hu, SPACING, close_mm=0)
    assert LUNG_CLOSE_MM == 15.0 and field.dtype == bool and field.shape == SHAPE
    share = {k: float((field & m).sum() / m.sum()) for k, m in nod.items()}
    open_share = {k: float((open_field & m).sum() / m.sum()) for k, m in nod.items()}
    assert share["inside"] == 1.0 and open_share["inside"] == 1.0  # a hole in every slice: filled
    assert share["juxtapleural"] > 0.6 and open_share["juxtapleural"] < 0.1  # kept (≥ 0.5) only when closed
    assert share["below"] == 0.0 and open_share["below"] == 0.0
    assert not (field & ~body_mask(hu)).any() and not field[..., :10].any()  # nothing outside, nor in the abdomen
    assert (field & (hu == -850)).sum() == (hu == -850).sum()  # both lungs (joined by the airways)
    # no air-like region inside the body at all: no lung fields (not "everything")
    assert not lung_field(np.full((8, 8, 4), 40, np.int16), (1.0, 1.0, 1.0)).any()
    with pytest.raises(ValueError, match="3D"):
        lung_field(hu[..., 0], SPACING[:2])
    with pytest.raises(ValueError, match="close_mm"):
        lung_field(hu, SPACING, close_mm=-1)


def test_keep_in_lung_fields_per_component(chest):
    hu, nod = chest
    lab = _labels(nod)
    out, rep = keep_in_lung_fields(lab, [1], lung_field(hu, SPACING))
    assert out[nod["inside"]].all() and out[nod["juxtapleural"]].all() and not out[nod["below"]].any()
    assert rep["removed_voxels"] == {1: int(nod["below"].sum())} and rep["removed_components"] == {1: 1}
    assert lab[nod["below"]].all()  # input untouched
    out0, rep0 = keep_in_lung_fields(lab, [1], lung_field(hu, SPACING, close_mm=0))
    assert out0[nod["inside"]].all() and not out0[nod["juxtapleural"]].any() and not out0[nod["below"]].any()
    assert rep0["removed_components"] == {1: 2}
    with pytest.raises(ValueError, match="shape"):
        keep_in_lung_fields(lab, [1], np.ones((2, 2, 2), bool))


def test_lung_fields_step(chest):
    hu, nod = chest
    assert parse_steps("min_size:10, lung_fields") == ["min_size:10", "lung_fields"]
    with pytest.raises(ValueError, match="no argument"):
        parse_steps("lung_fields:15")
    # an organ label (1) is untouched; only the lesion class (2) is filtered
    lab = _labels(nod, label=2)
    lab[:4, :4, :4] = 1
    names = {0: "background", 1: "organ", 2: "nodule"}
    out, rep = apply_postprocessing(lab, ["lung_fields"], names, spacing=SPACING, image=hu)
    assert (out == 1).sum() == 64 and not (out[nod["below"]]).any() and (out[nod["juxtapleural"]] == 2).all()
    assert rep["lung_fields"]["removed_voxels"] == {2: int(nod["below"].sum())}
    # no lesion-named class: every foreground class is filtered (as min_size does)
    out, _ = apply_postprocessing(_labels(nod), ["lung_fields"], {0: "background", 1: "foreground"},
                                  spacing=SPACING, image=hu)
    assert not out[nod["below"]].any() and out[nod["inside"]].all()
    with pytest.raises(ValueError, match="'lung_fields' needs the CT image"):
        apply_postprocessing(lab, ["lung_fields"], names, spacing=SPACING)
    with pytest.raises(ValueError, match="'lung_fields' needs the voxel spacing"):
        apply_postprocessing(lab, ["lung_fields"], names, image=hu)
    with pytest.raises(ValueError, match="image shape"):
        apply_postprocessing(lab, ["lung_fields"], names, spacing=SPACING, image=hu[..., :5])
    # the other steps never need the image
    out, _ = apply_postprocessing(lab, ["lcc_fg"], names)
    assert out.shape == lab.shape


def test_lung_real_preset_is_lung_25d_with_the_lung_field_restriction():
    from ctseg_lib.config import PRESETS, TrainConfig, list_presets

    assert "lung_real" in list_presets()
    real, base = TrainConfig.from_file("lung_real").to_dict(), TrainConfig.from_file("lung_25d_book").to_dict()
    assert real["postprocess"] == ["min_size:113", "lung_fields"] and real["name"] == "lung_real"
    assert {k: v for k, v in real.items() if k not in ("name", "postprocess")} == \
        {k: v for k, v in base.items() if k not in ("name", "postprocess")}
    head = (PRESETS / "lung_real.yaml").read_text()
    assert "real CT" in head and "phantoms" in head and "README" in head


def test_cli_predict_passes_the_canonical_scan_to_lung_fields(tmp_path, monkeypatch, capsys):
    """``ctseg predict`` on a chest stored LPS: the step sees the HU array the labels belong to (the
    canonical one), and only the nodule below the lungs is removed from the written prediction."""
    import ctseg_lib.inference as inference
    import ctseg_lib.postprocessing as postprocessing
    from ctseg_lib.checkpoint import build_model, save_checkpoint
    from ctseg_lib.cli import main
    from ctseg_lib.config import TrainConfig
    from ctseg_lib.data.nifti import load_nifti, save_nifti
    from tests.conftest import ras_affine, to_lps

    hu, nod = synthetic_chest()
    img, aff = to_lps(hu, ras_affine(spacing=SPACING))
    src = save_nifti(tmp_path / "chest.nii.gz", img, aff)
    cfg = TrainConfig.from_dict({"model": {"depth": 2}, "data": {"slice_size": [16, 16]},
                                 "postprocess": ["lung_fields"]})
    meta = {"preprocess": cfg.data.preprocess_params().to_dict(), "normalizer": None, "labels": NAMES,
            "num_classes": 2}
    ck = save_checkpoint(tmp_path / "run" / "best.pt", model=build_model(cfg, 2), config=cfg.to_dict(), meta=meta,
                         epoch=1)

    def fake_predict_case(model, cfg, meta, image, tta=False, **kw):  # "the network": every blob is a nodule
        return (image.array == BLOB_HU).astype(np.uint8)

    seen = []
    real_apply = postprocessing.apply_postprocessing

    def spy(labels, steps, names, spacing=None, image=None):
        seen.append((labels.copy(), image, tuple(spacing)))
        return real_apply(labels, steps, names, spacing=spacing, image=image)

    monkeypatch.setattr(inference, "predict_case", fake_predict_case)
    monkeypatch.setattr(postprocessing, "apply_postprocessing", spy)
    assert main(["predict", "--checkpoint", str(ck), "--input", str(src), "--out", str(tmp_path / "out"),
                 "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "lung_fields" in printed and f"{{1: {int(nod['below'].sum())}}}" in printed
    canonical = load_nifti(src)
    assert canonical.orientation == "LPS"
    (labels, image, spacing), = seen
    np.testing.assert_array_equal(image, canonical.array)
    np.testing.assert_array_equal(image, hu)  # the chest as built: RAS canonical axes
    assert spacing == pytest.approx(SPACING)
    pred = load_nifti(tmp_path / "out" / "chest.nii.gz", "label").array
    np.testing.assert_array_equal(pred, (nod["inside"] | nod["juxtapleural"]).astype(np.uint8))


# ------------------------------------------------------------------------------------ the real scan
@pytest.fixture(scope="module")
def lidc():
    from ctseg_lib.data import load_sample

    s = load_sample("lidc_0001")
    return s.image.array, s.image.spacing, s.labels["nodule_consensus"].array > 0


def test_real_nodule_lies_in_the_lung_fields_and_survives_the_step(lidc):
    """Regression on the vendored LIDC-IDRI scan: the consensus nodule touches the pleura, yet is
    (almost) entirely inside the closed lung fields, so ``lung_fields`` keeps a correct detection."""
    hu, spacing, nodule = lidc
    field = lung_field(hu, spacing)
    assert (field & nodule).sum() / nodule.sum() >= 0.9
    lab = nodule.astype(np.uint8)
    lab[:3, :3, :3] = 1  # a false positive outside the body
    out, rep = apply_postprocessing(lab, ["lung_fields"], NAMES, spacing=spacing, image=hu)
    np.testing.assert_array_equal(out, nodule.astype(np.uint8))
    assert rep["lung_fields"]["removed_voxels"] == {1: 27}


def test_both_lungs_count_when_the_airways_do_not_join_them():
    """Regression: the field was the *largest* air region only, so a nodule in the other lung was
    deleted whenever the lungs were not joined in the scan (the phantoms' short bronchi: 2 of 7
    detected tumours lost on fresh phantoms).  Every air region of at least LUNG_SHARE of the largest
    is lung; a small gas pocket (stomach, bowel) is not."""
    hu, nodules = synthetic_chest()
    x, y, z = np.meshgrid(*[(np.arange(n) + 0.0) * s for n, s in zip(SHAPE, SPACING)], indexing="ij")
    hu[(np.abs(x - 64) <= 24) & ((y - 48) ** 2 + (z - 72) ** 2 <= 16)] = 40  # no bronchus: two air regions
    hu[((x - 64) ** 2 + (y - 48) ** 2 <= 25) & (z >= 72)] = 40                 # no trachea
    hu[((x - 88) / 10) ** 2 + ((y - 48) / 12) ** 2 + ((z - 66) / 16) ** 2 <= 1] = 40  # a mass fills the right lung
    gas = ((x - 88) ** 2 + (y - 48) ** 2 + (z - 15) ** 2) <= 49                 # gas pocket in the abdomen
    hu[gas] = -1000
    field = lung_field(hu, SPACING)
    assert field[nodules["inside"]].all()  # the left lung's nodule
    assert field[_ball((88, 48, 60), 3)].any()  # the (smaller) right lung is lung too
    assert not field[gas].any()
    labels = nodules["inside"].astype(np.uint8) + 2 * _ball((88, 40, 66), 4).astype(np.uint8)
    hu[labels == 2] = BLOB_HU
    out, _ = keep_in_lung_fields(labels, [1, 2], lung_field(hu, SPACING))
    assert (out == 1).sum() == (labels == 1).sum() and (out == 2).sum() == (labels == 2).sum()

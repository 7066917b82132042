"""Slice-wise and sliding-window inference, tested with tiny hand-made networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ctseg_lib.datasets import context_indices
from ctseg_lib.inference import (
    gaussian_importance_map,
    predict_volume,
    sliding_window_inference,
    window_starts,
)


class Identity(nn.Module):
    """Logits = the input channels; demands inputs padded to ``size_divisor``."""

    size_divisor = 8

    def forward(self, x):
        assert all(s % self.size_divisor == 0 for s in x.shape[2:]), x.shape
        return x.clone()


class Threshold(nn.Module):
    """2 classes: logit of class 1 = 20·(centre channel − 0.5)."""

    def forward(self, x):
        c = x[:, x.shape[1] // 2: x.shape[1] // 2 + 1]
        return torch.cat([torch.zeros_like(c), 20 * (c - 0.5)], 1)


class Ramp(nn.Module):
    """Ignores the input: class-1 logit grows along the first spatial axis (not flip-equivariant)."""

    def forward(self, x):
        r = torch.linspace(-3, 3, x.shape[2]).view(1, 1, -1, *([1] * (x.ndim - 3))).expand(x.shape[0], 1, *x.shape[2:])
        return torch.cat([torch.zeros_like(r), r], 1)


def test_context_indices_clamp():
    idx = context_indices(5, np.array([0, 2, 4]), 1)
    assert idx.tolist() == [[0, 0, 1], [1, 2, 3], [3, 4, 4]]


def test_predict_volume_2d_labels_and_shape():
    rng = np.random.default_rng(0)
    img = rng.random((13, 10, 7)).astype(np.float32)
    lab = predict_volume(Threshold(), img, context=0, batch_size=3, return_probs=False)
    assert lab.shape == img.shape and lab.dtype == np.uint8
    np.testing.assert_array_equal(lab, (img > 0.5).astype(np.uint8))


def test_predict_volume_25d_channels_and_padding():
    # voxel value = its slice index z, logits = the 2k+1 slices z-1, z, z+1 (clamped)
    img = np.broadcast_to(np.arange(6, dtype=np.float32), (13, 10, 6)).copy()
    probs = predict_volume(Identity(), img, context=1, batch_size=4)
    assert probs.shape == (3, 13, 10, 6) and probs.dtype == np.float32
    expect0 = torch.softmax(torch.tensor([0.0, 0.0, 1.0]), 0).numpy()
    expect3 = torch.softmax(torch.tensor([2.0, 3.0, 4.0]), 0).numpy()
    np.testing.assert_allclose(probs[:, 5, 5, 0], expect0, rtol=1e-6)
    np.testing.assert_allclose(probs[:, 12, 9, 3], expect3, rtol=1e-6)
    np.testing.assert_allclose(probs.sum(0), 1.0, rtol=1e-5)


def test_tta_makes_prediction_flip_symmetric():
    img = np.zeros((9, 8, 2), np.float32)
    plain = predict_volume(Ramp(), img)
    tta = predict_volume(Ramp(), img, tta_flips=True)
    assert not np.allclose(plain, plain[:, ::-1])
    np.testing.assert_allclose(tta, tta[:, ::-1], atol=1e-6)
    np.testing.assert_allclose(tta[1], 0.5 * (plain[1] + plain[1][::-1]), atol=1e-6)


def test_gaussian_map():
    w = gaussian_importance_map((9, 8, 5))
    assert w.shape == (9, 8, 5) and float(w.max()) == pytest.approx(1.0, abs=0.02)
    assert float(w.min()) > 0
    assert torch.allclose(w, w.flip(0)) and torch.allclose(w, w.flip(1))
    assert w[4, 4, 2] > w[0, 4, 2] > w[0, 0, 0]


def test_window_starts():
    assert window_starts(10, 4, 0.5) == [0, 2, 4, 6]
    assert window_starts(11, 4, 0.5) == [0, 2, 4, 5, 7]
    assert window_starts(3, 4, 0.5) == [0] and window_starts(4, 4, 0.0) == [0]


@pytest.mark.parametrize("shape", [(20, 17, 11), (5, 6, 3), (8, 8, 8)])
def test_sliding_window_matches_full_pass_for_pointwise_model(shape):
    torch.manual_seed(0)
    net = nn.Conv3d(1, 3, 1)  # pointwise: every window must agree with the full-volume pass
    vol = torch.randn(1, *shape)
    out = sliding_window_inference(net, vol, roi_size=(8, 8, 4), overlap=0.5, sw_batch_size=3)
    with torch.no_grad():
        full = torch.softmax(net(vol[None]), 1)[0]
    assert out.shape == (3, *shape) and out.device.type == "cpu"
    torch.testing.assert_close(out, full, rtol=1e-5, atol=1e-6)


def test_sliding_window_tta_and_errors():
    vol = torch.zeros(1, 12, 6, 4)
    out = sliding_window_inference(Ramp(), vol, roi_size=(12, 6, 4), tta_flips=True)
    torch.testing.assert_close(out, out.flip(1))
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_inference(Ramp(), vol, roi_size=(4, 4, 4), overlap=1.0)
    with pytest.raises(ValueError, match="expected"):
        sliding_window_inference(Ramp(), vol[0], roi_size=(4, 4, 4))


# -- whole cases: preprocess → predict → restore → save on the source grid ------------------------
class Oracle(nn.Module):
    """'Predicts' liver where the windowed intensity is bright: enough to check grids, not learning."""

    size_divisor = 1

    def forward(self, x):
        c = x[:, x.shape[1] // 2: x.shape[1] // 2 + 1]
        liver = 40 * (c - 0.6)
        return torch.cat([torch.zeros_like(c), liver, torch.full_like(c, -50.0)], 1)


def _cfg_meta(slice_size=(16, 16)):
    from ctseg_lib.config import TrainConfig
    cfg = TrainConfig.from_dict({"model": {"depth": 2}, "data": {"slice_size": list(slice_size)}})
    meta = {"preprocess": cfg.data.preprocess_params().to_dict(), "normalizer": None,
            "labels": {0: "background", 1: "liver", 2: "cancer"}, "num_classes": 3}
    return cfg, meta


def test_predict_case_and_save_overlay_ras_and_lps(tmp_path):
    from ctseg_lib.data.msd import MSDDataset
    from ctseg_lib.data.nifti import load_nifti
    from ctseg_lib.inference import predict_case, save_prediction
    from tests.conftest import write_msd

    ds = MSDDataset(write_msd(tmp_path / "Task99_Toy", n=2, lps=(1,)))
    cfg, meta = _cfg_meta()
    for i in (0, 1):
        img, lab = ds.load_case(i)
        pred = predict_case(Oracle(), cfg, meta, img)
        assert pred.shape == img.array.shape and pred.dtype == np.uint8
        liver = lab.array > 0
        dice = 2 * (pred.astype(bool) & liver).sum() / (pred.astype(bool).sum() + liver.sum())
        assert dice > 0.6  # resized to 16×16 and back: coarse, but on the right voxels
        out = save_prediction(tmp_path / "preds" / f"c{i}.nii.gz", pred, img)
        back = load_nifti(out, "label")
        np.testing.assert_array_equal(back.original_affine, img.original_affine)
        assert back.orientation == img.orientation == ("LPS" if i else "RAS")
        np.testing.assert_array_equal(back.array, pred)  # same canonical voxels after reload
        import nibabel as nib
        raw_pred = np.asarray(nib.load(out).dataobj)
        raw_lab = np.asarray(nib.load(ds.cases[i].label).dataobj)
        assert raw_pred.shape == raw_lab.shape


def test_save_prediction_refuses_input_and_bad_shape(tmp_path):
    from ctseg_lib.data.nifti import load_nifti, save_nifti
    from ctseg_lib.errors import CTSegError
    from ctseg_lib.inference import save_prediction

    src = save_nifti(tmp_path / "img.nii.gz", np.zeros((4, 4, 2), np.int16), np.eye(4))
    vol = load_nifti(src)
    with pytest.raises(CTSegError, match="overwrite the input"):
        save_prediction(src, np.zeros((4, 4, 2), np.uint8), vol)
    with pytest.raises(CTSegError, match="differs"):
        save_prediction(tmp_path / "p.nii.gz", np.zeros((4, 4, 3), np.uint8), vol)


def _fake_run(tmp_path):
    """An untrained but valid checkpoint (no training needed to test the CLI plumbing)."""
    from ctseg_lib.checkpoint import build_model, save_checkpoint
    from tests.conftest import write_msd

    data = write_msd(tmp_path / "Task99_Toy", n=3, lps=(1,))
    cfg, meta = _cfg_meta()
    meta["split"] = {"train": ["toy_0"], "val": ["toy_1"], "test": ["toy_2"]}
    ck = save_checkpoint(tmp_path / "run" / "best.pt", model=build_model(cfg, 3), config=cfg.to_dict(),
                         meta=meta, epoch=1)
    return data, ck


def _model_from(ckd: dict, cfg):
    from ctseg_lib.checkpoint import build_model

    model = build_model(cfg, ckd["meta"]["num_classes"])
    model.load_state_dict(ckd["model"])
    return model


def test_cli_predict(tmp_path, capsys):
    from ctseg_lib.cli import main
    from ctseg_lib.data.nifti import load_nifti

    data, ck = _fake_run(tmp_path)
    out = tmp_path / "preds"
    assert main(["predict", "--checkpoint", str(ck), "--input", str(data), "--split", "test", "--out", str(out),
                 "--postprocess", "lcc,restrict", "--tta", "--quiet", "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["toy_2.nii.gz"]
    single = data / "imagesTr" / "toy_1.nii.gz"
    assert main(["predict", "--checkpoint", str(ck), "--input", str(single), "--out", str(out),
                 "--quiet", "--device", "cpu"]) == 0
    pred, src = load_nifti(out / "toy_1.nii.gz", "label"), load_nifti(single)
    np.testing.assert_array_equal(pred.original_affine, src.original_affine)
    capsys.readouterr()
    # The checkpoint's config records postprocessing: applied by default, skipped with --postprocess none.
    from ctseg_lib.checkpoint import load_checkpoint, save_checkpoint
    from ctseg_lib.config import TrainConfig
    ckd = load_checkpoint(ck)
    cfg_pp = TrainConfig.from_dict({**ckd["config"], "postprocess": ["lcc", "min_size:1"]})
    ck2 = save_checkpoint(tmp_path / "run2" / "best.pt", model=_model_from(ckd, cfg_pp), config=cfg_pp.to_dict(),
                          meta=ckd["meta"], epoch=1)
    assert main(["predict", "--checkpoint", str(ck2), "--input", str(single), "--out", str(tmp_path / "pp"),
                 "--device", "cpu"]) == 0
    assert "postprocessing (from the checkpoint's config; --postprocess none to skip): lcc,min_size:1" in \
        capsys.readouterr().out
    assert main(["predict", "--checkpoint", str(ck2), "--input", str(single), "--out", str(tmp_path / "raw"),
                 "--device", "cpu", "--postprocess", "none"]) == 0
    assert "postprocessing" not in capsys.readouterr().out
    cases = [
        (["--input", str(data), "--out", str(data / "preds")], "inside the source"),
        (["--input", str(data), "--out", str(out)], "no test images"),
        (["--input", str(data), "--out", str(out), "--split", "test", "--postprocess", "bogus"],
         "unknown postprocessing step"),
        (["--input", str(tmp_path / "nope"), "--out", str(out)], "input not found"),
    ]
    for extra, msg in cases:
        assert main(["predict", "--checkpoint", str(ck), "--quiet", "--device", "cpu", *extra]) == 2
        assert msg in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(tmp_path / "x.pt"), "--input", str(single), "--out", str(out),
                 "--quiet"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_cli_train_rejects_bad_config(tmp_path, capsys):
    from ctseg_lib.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("optim:\n  lr: fast\n")
    assert main(["train", "--config", str(cfg), "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "config key 'optim.lr': expected float, got str" in capsys.readouterr().err
    cfg.write_text("epochs: 1\n")
    assert main(["train", "--config", str(cfg), "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--epochs", "0"]) == 2
    assert "--epochs" in capsys.readouterr().err


def test_channels_last_inference_gives_the_same_labels(tmp_path):
    """Regression for the NHWC speed-up: load_model returns a channels_last 2D net and
    predict_volume feeds NHWC slices; the probabilities equal those of the plain NCHW model."""
    from ctseg_lib.checkpoint import build_model, load_model, save_checkpoint
    from ctseg_lib.config import TrainConfig
    from ctseg_lib.inference import predict_volume

    cfg = TrainConfig.from_dict({"name": "cl", "model": {"base_channels": 4, "depth": 3}})
    torch.manual_seed(0)
    net = build_model(cfg, 3).eval()
    save_checkpoint(tmp_path / "m.pt", model=net, config=cfg.to_dict(), meta={"num_classes": 3}, epoch=0)
    loaded, _, _ = load_model(tmp_path / "m.pt")
    w = next(p for p in loaded.parameters() if p.ndim == 4)
    assert w.is_contiguous(memory_format=torch.channels_last)
    vol = np.random.default_rng(0).random((40, 36, 5), dtype=np.float32)
    ref = predict_volume(net, vol, batch_size=2)
    out = predict_volume(loaded, vol, batch_size=2)
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_cli_predict_tta_follows_the_checkpoint_config(tmp_path, monkeypatch, capsys):
    """A preset that records ``tta: true`` is predicted with mirroring unless ``--no-tta`` says otherwise."""
    import ctseg_lib.inference as inference
    from ctseg_lib.checkpoint import load_checkpoint, save_checkpoint
    from ctseg_lib.cli import main
    from ctseg_lib.config import TrainConfig

    data, ck = _fake_run(tmp_path)
    ckd = load_checkpoint(ck)
    seen = []
    real = inference.predict_case

    def spy(*a, tta=False, **k):
        seen.append(tta)
        return real(*a, tta=tta, **k)

    monkeypatch.setattr(inference, "predict_case", spy)
    single = data / "imagesTr" / "toy_1.nii.gz"
    for recorded in (False, True):
        cfg = TrainConfig.from_dict({**ckd["config"], "tta": recorded})
        ck2 = save_checkpoint(tmp_path / f"run_{recorded}" / "best.pt", model=_model_from(ckd, cfg),
                              config=cfg.to_dict(), meta=ckd["meta"], epoch=1)
        for flag in ([], ["--tta"], ["--no-tta"]):
            assert main(["predict", "--checkpoint", str(ck2), "--input", str(single), "--out", str(tmp_path / "o"),
                         "--quiet", "--device", "cpu", *flag]) == 0
    assert seen == [False, True, False, True, True, False]

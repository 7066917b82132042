"""Training loop, checkpoints (safe loading, exact resume), schedules and augmentation."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch

from ctseg_lib.augment import augment_batch, random_flip, random_rotate_scale
from ctseg_lib.checkpoint import get_rng_state, load_checkpoint, load_model, save_checkpoint, set_rng_state
from ctseg_lib.config import AugmentConfig, ScheduleConfig, TrainConfig
from ctseg_lib.datasets import PatchDataset, SliceDataset
from ctseg_lib.errors import CTSegError
from ctseg_lib.preprocessing import Preprocessed
from ctseg_lib.schedules import lr_factor
from ctseg_lib.training import train, training_dataset
from tests.conftest import write_msd

TINY = {"model": {"base_channels": 4, "depth": 2, "dropout": 0.1}, "epochs": 2, "batch_size": 4,
        "data": {"slice_size": [16, 16], "negative_keep": 0.5}, "optim": {"lr": 0.01}}


def tiny_cfg(**over) -> TrainConfig:
    d = json.loads(json.dumps(TINY))
    for k, v in over.items():
        d.setdefault(k, {}).update(v) if isinstance(v, dict) else d.__setitem__(k, v)
    return TrainConfig.from_dict(d)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_msd(tmp_path_factory.mktemp("d") / "Task99_Toy", n=5, lps=(1,))


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    torch.save({"format": "ctseg-checkpoint", "model": Evil(marker)}, bad)  # pickles the __reduce__
    with pytest.raises(CTSegError, match="refusing to load.*GLOBAL posix.system"):
        load_checkpoint(bad)
    assert not marker.exists()
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(Evil(marker)))
    with pytest.raises(CTSegError):
        load_checkpoint(raw)
    assert not marker.exists()


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CTSegError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(CTSegError, match="not a readable"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CTSegError, match="not a ctseg checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_rng_state_roundtrip_through_weights_only_file(tmp_path):
    import random
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    model = torch.nn.Linear(2, 2)
    save_checkpoint(tmp_path / "c.pt", model=model, config=TrainConfig().to_dict(), meta={}, epoch=3)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a
    assert isinstance(get_rng_state()["numpy"]["keys"], torch.Tensor)
    assert not list(tmp_path.glob(".tmp-*"))  # atomic write left no debris


def test_schedules():
    cos = ScheduleConfig(name="cosine", warmup_epochs=0)
    assert lr_factor(0, 100, 0, cos) == 1.0 and lr_factor(50, 100, 0, cos) == pytest.approx(0.5)
    assert lr_factor(100, 100, 0, cos) == pytest.approx(0.0, abs=1e-12)
    poly = ScheduleConfig(name="poly", power=0.9)
    assert lr_factor(50, 100, 0, poly) == pytest.approx(0.5 ** 0.9)
    warm = ScheduleConfig(name="constant", warmup_epochs=1)
    assert [lr_factor(s, 100, 4, warm) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_augmentation_keeps_labels_and_is_seeded():
    x = torch.arange(2 * 16 * 16, dtype=torch.float32).reshape(2, 1, 16, 16)
    y = (x[:, 0] > 200).long() + (x[:, 0] > 400).long()
    fx, fy = random_flip(x, y, [0], p=1.0)
    assert torch.equal(fx, x.flip(2)) and torch.equal(fy, y.flip(1))
    rx, ry = random_rotate_scale(x, y, 30.0, (0.8, 1.2), 1.0, torch.Generator().manual_seed(0))
    assert set(ry.unique().tolist()) <= {0, 1, 2} and rx.shape == x.shape
    cfg = AugmentConfig()
    a = augment_batch(x, y, cfg, torch.Generator().manual_seed(5))
    b = augment_batch(x, y, cfg, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    x3, y3 = torch.rand(1, 1, 8, 8, 4), torch.zeros(1, 8, 8, 4, dtype=torch.long)
    r3 = random_rotate_scale(x3, y3, 20.0, (1.0, 1.0), 1.0)
    assert r3[0].shape == x3.shape


def _pre(lab: np.ndarray) -> Preprocessed:
    return Preprocessed(lab.astype(np.float32), lab, (1.0, 1.0, 1.0), {"image_min": 0.0}, "c")


def _draws(ds) -> list:
    return [ds.sample(i) if isinstance(ds, SliceDataset) else ds.patch_start(i) for i in range(len(ds))]


def test_train_samples_with_the_chapter3_datasets_and_their_rules():
    """One sampler: train() draws from SliceDataset / PatchDataset, with the config's rules.

    Volume: slices 0-9 hold liver (1), slice 5 also a tumour voxel (2), slices 10-99 are empty.
    negative_keep=0 -> empty slices never drawn; liver-only slices are *not* negatives (they stay
    in the pool); fg_fraction=0.5 with fg_classes=[2] -> about half the draws forced onto slice 5.
    """
    lab = np.zeros((4, 4, 100), np.uint8)
    lab[1, 1, :10] = 1
    lab[1, 1, 5] = 2
    cfg = tiny_cfg(data={"fg_fraction": 0.5, "fg_classes": [2], "negative_keep": 0.0}, iterations_per_epoch=100)
    ds = training_dataset([_pre(lab)], cfg)
    assert isinstance(ds, SliceDataset) and ds.context == cfg.model.context and len(ds) == 400
    zs = np.array([z for _, z, _, _ in _draws(ds)])
    assert zs.max() < 10 and len(set(zs.tolist())) == 10   # every liver slice, no empty one
    assert 0.45 < np.mean(zs == 5) < 0.65                   # ~50 % forced + 1/10 of the rest
    first = _draws(ds)
    ds.set_epoch(1)
    assert _draws(ds) != first
    ds.set_epoch(0)
    assert _draws(ds) == first                              # a function of (seed, epoch) only
    one_pass = training_dataset([_pre(lab)], tiny_cfg(data={"negative_keep": 0.0, "fg_fraction": 0.0}))
    assert len(one_pass) == 10 and sorted(z for _, z in map(one_pass.slice_index, range(10))) == list(range(10))
    cfg3 = tiny_cfg(model={"spatial_dims": 3}, data={"slice_size": None, "patch_size": [8, 8, 8]},
                    iterations_per_epoch=3)
    three_d = training_dataset([_pre(lab)], cfg3)
    assert isinstance(three_d, PatchDataset) and len(three_d) == 3 * cfg3.batch_size


def test_train_resume_is_bit_identical(data, tmp_path):
    cfg = tiny_cfg()
    full = train(cfg, data, tmp_path / "full", quiet=True, device="cpu")
    assert [r["epoch"] for r in full.history] == [1, 2] and "val_dice_liver" in full.history[-1]
    assert 0.0 <= full.history[-1]["val_mean_dice"] <= 1.0
    for f in ("best.pt", "last.pt", "history.csv", "history.json", "config.yaml", "split.json"):
        assert (tmp_path / "full" / f).is_file(), f
    part = train(cfg, data, tmp_path / "part", quiet=True, max_epochs=1, device="cpu")
    assert len(part.history) == 1
    resumed = train(cfg, data, tmp_path / "part", resume=True, quiet=True, device="cpu")
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]
    model, lcfg, meta = load_model(tmp_path / "full" / "last.pt")
    assert lcfg == cfg and meta["labels"] == {0: "background", 1: "liver", 2: "cancer"} and not model.training


def test_keyboard_interrupt_saves_checkpoint(data, tmp_path, monkeypatch):
    import ctseg_lib.training as T
    calls = {"n": 0}
    real = T.augment_batch

    def boom(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(T, "augment_batch", boom)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_cfg(), data, tmp_path / "run", quiet=True, device="cpu")
    ck = load_checkpoint(tmp_path / "run" / "interrupted.pt")
    assert ck["epoch"] == 0
    monkeypatch.setattr(T, "augment_batch", real)
    res = train(tiny_cfg(), data, tmp_path / "run", resume=True, quiet=True, device="cpu", max_epochs=1)
    assert [r["epoch"] for r in res.history] == [1]


def test_train_refuses_output_inside_data(data):
    with pytest.raises(CTSegError, match="inside the source"):
        train(tiny_cfg(), data, data / "runs", quiet=True, device="cpu")


def test_2d_patch_sampling_centres_forced_samples_on_foreground():
    lab = np.zeros((64, 48, 20), np.uint8)
    lab[10:30, 10:30, 5:15] = 1
    lab[50:53, 40:43, 8] = 2  # one small lesion near a corner, on one slice
    cfg = tiny_cfg(data={"slice_size": None, "patch_size": [16, 16], "fg_fraction": 1.0, "fg_classes": [2]},
                   iterations_per_epoch=25)
    ds = training_dataset([_pre(lab)], cfg)
    assert len(ds) == 100
    for i in range(len(ds)):
        _, z, cl, (x0, y0) = ds.sample(i)
        assert z == 8 and cl == 2 and 0 <= x0 <= 64 - 16 and 0 <= y0 <= 48 - 16
        assert (lab[x0:x0 + 16, y0:y0 + 16, z] == 2).any()  # every forced patch shows the lesion
        x, y = ds[i]
        assert x.shape == (1, 16, 16) and (y == 2).any()
        assert torch.equal(y, torch.from_numpy(lab[x0:x0 + 16, y0:y0 + 16, z].astype(np.int64)))


def test_2d_patch_config_validation_and_training(data, tmp_path):
    with pytest.raises(CTSegError, match="data.patch_size"):
        tiny_cfg(data={"slice_size": None, "patch_size": [12, 12]}, model={"depth": 3})
    with pytest.raises(CTSegError, match="data.slice_size"):
        tiny_cfg(data={"slice_size": None})
    cfg = tiny_cfg(data={"slice_size": None, "patch_size": [16, 16], "preprocess": {"crop_to_body": True}},
                   epochs=1)
    res = train(cfg, data, tmp_path / "p", quiet=True, device="cpu")
    assert "val_dice_liver" in res.history[-1]  # validated on whole native-size slices


def test_max_cases_trains_on_a_subset(data, tmp_path):
    with pytest.raises(CTSegError, match="data.max_cases"):
        tiny_cfg(data={"max_cases": 0})
    res = train(tiny_cfg(data={"max_cases": 4}, epochs=1), data, tmp_path / "m", quiet=True, device="cpu")
    split = json.loads((tmp_path / "m" / "split.json").read_text())
    used = sorted(c for part in split.values() for c in part)
    assert used == ["toy_0", "toy_1", "toy_2", "toy_3"] and res.history


def test_training_from_the_preprocessing_cache_is_identical(data, tmp_path):
    cfg = tiny_cfg(epochs=1)
    plain = train(cfg, data, tmp_path / "plain", quiet=True, device="cpu")
    cached = train(cfg, data, tmp_path / "c1", quiet=True, device="cpu", cache_dir=tmp_path / "cache")
    entries = sorted((tmp_path / "cache").glob("*/*/meta.json"))
    assert len(entries) == 4  # 3 train + 1 val cases of the 5 (test cases are never touched)
    again = train(cfg, data, tmp_path / "c2", quiet=True, device="cpu", cache_dir=tmp_path / "cache")
    assert sorted((tmp_path / "cache").glob("*/*/meta.json")) == entries  # all hits, nothing rebuilt
    for res in (cached, again):
        a, b = plain.model.state_dict(), res.model.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(CTSegError, match="inside"):
        train(cfg, data, tmp_path / "x", quiet=True, device="cpu", cache_dir=data / "cache")


def test_resume_after_an_interrupt_in_the_middle_of_an_epoch_is_bit_identical(data, tmp_path, monkeypatch):
    """Ctrl-C in the middle of epoch 2: ``--resume`` restarts epoch 2 from last.pt (end of epoch 1) and
    ends with exactly the weights of the uninterrupted run (samples, augmentation and RNG states all
    restored; planted variant: resuming from interrupted.pt's half-trained weights would differ)."""
    import ctseg_lib.training as T
    cfg = tiny_cfg(epochs=2)
    full = train(cfg, data, tmp_path / "full", quiet=True, device="cpu")
    real, calls = T.training_step, {"epoch1": 0}

    def step(run, x, y):
        if run.history and len(run.history) == 1:  # inside epoch 2, after one step of it
            calls["epoch1"] += 1
            if calls["epoch1"] == 2:
                raise KeyboardInterrupt
        return real(run, x, y)

    monkeypatch.setattr(T, "training_step", step)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, data, tmp_path / "run", quiet=True, device="cpu")
    assert calls["epoch1"] == 2 and load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1
    monkeypatch.setattr(T, "training_step", real)
    resumed = train(cfg, data, tmp_path / "run", resume=True, quiet=True, device="cpu")
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]


def test_training_log_is_one_line_per_epoch_when_stderr_is_not_a_terminal(data, tmp_path, capsys):
    """In a log file (CI, ``> train.log``) there is no progress bar: no carriage-return frames, one
    ``epoch=...`` line per epoch (planted variant: tqdm always on wrote ~80 frames per epoch)."""
    train(tiny_cfg(), data, tmp_path / "log", quiet=False, device="cpu")
    out, err = capsys.readouterr()
    assert "\r" not in out + err
    assert [ln.split()[0] for ln in out.splitlines() if ln.startswith("epoch=")] == ["epoch=1", "epoch=2"]


def test_best_checkpoint_ties_go_to_the_later_epoch(data, tmp_path, monkeypatch):
    """Regression: a model that misses every validation tumour scores 0 at every validation; best.pt
    used to stay the first validated (barely trained) epoch.  Ties now go to the later epoch, a real
    improvement still wins, and an epoch without validation never replaces best.pt."""
    import ctseg_lib.training as T

    scores = iter([0.0, 0.0, 0.0])
    monkeypatch.setattr(T, "validate", lambda *a, **k: {"val_global_mean_dice": next(scores)})
    train(tiny_cfg(epochs=6, val_every=2), data, tmp_path / "tie", quiet=True, device="cpu")
    assert load_checkpoint(tmp_path / "tie" / "best.pt")["epoch"] == 6
    scores = iter([0.0, 0.5, 0.2])
    train(tiny_cfg(epochs=6, val_every=2), data, tmp_path / "gain", quiet=True, device="cpu")
    assert load_checkpoint(tmp_path / "gain" / "best.pt")["epoch"] == 4
    assert load_checkpoint(tmp_path / "gain" / "last.pt")["epoch"] == 6


def test_without_validation_best_checkpoint_is_the_last_epoch(data, tmp_path):
    """``data.val_fraction: 0`` (``lung_25d``): no validation phantoms, so best.pt is saved at every
    epoch and ends identical to last.pt -- ``ctseg predict --checkpoint best.pt`` gives the preset's result
    (planted variant: best.pt only on a validation score kept the first epoch or none at all)."""
    res = train(tiny_cfg(epochs=3, data={"val_fraction": 0.0, "test_fraction": 0.0}), data, tmp_path / "noval",
                quiet=True, device="cpu")
    assert json.loads((tmp_path / "noval" / "split.json").read_text())["val"] == []
    best, last = load_checkpoint(res.best_path), load_checkpoint(res.last_path)
    assert best["epoch"] == last["epoch"] == 3
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])
    assert all("val_global_mean_dice" not in r for r in res.history)


def test_merged_labels_train_one_foreground_class(data, tmp_path):
    """data.merge_labels (chapter 10's pitfall): liver and tumour become one class 1, the model has
    two outputs, and the validation reports that one class only."""
    for bad in ({"merge_labels": True, "fg_classes": [2]}, {"merge_labels": "yes"}):
        with pytest.raises(CTSegError, match="data.merge_labels"):
            tiny_cfg(data=bad)
    with pytest.raises(CTSegError, match="restrict"):
        tiny_cfg(data={"merge_labels": True}, postprocess=["lcc", "restrict"])
    res = train(tiny_cfg(data={"merge_labels": True}, epochs=1), data, tmp_path / "mg", quiet=True, device="cpu")
    model, cfg, meta = load_model(tmp_path / "mg" / "last.pt")
    assert meta["labels"] == {0: "background", 1: "foreground"} and meta["num_classes"] == 2
    assert model(torch.zeros(1, 1, 16, 16)).shape[1] == 2
    assert "val_dice_foreground" in res.history[-1] and "val_dice_cancer" not in res.history[-1]


def test_merge_labels_merges_every_foreground_label():
    from ctseg_lib.training import merge_labels

    lab = np.array([[[0], [1]], [[2], [3]]], np.uint8)
    case = Preprocessed(np.zeros(lab.shape, np.float32), lab.copy(), (1.0, 1.0, 1.0), {})
    names = merge_labels([case], {0: "background", 1: "liver", 2: "cancer"})
    assert names == {0: "background", 1: "foreground"}
    np.testing.assert_array_equal(case.label, (lab > 0).astype(np.uint8))
    assert case.label.dtype == np.uint8


# -- mixed precision on the CPU (bfloat16 autocast where the CPU computes it natively) -------------


@pytest.mark.parametrize(("env", "amp", "device", "expected"), [
    ("1", True, "cpu", torch.bfloat16), ("0", True, "cpu", None), ("1", False, "cpu", None),
    ("0", True, "cuda", torch.float16), ("1", False, "cuda", None), ("1", True, "meta", None)])
def test_autocast_dtype_follows_amp_device_and_the_cpu_switch(monkeypatch, env, amp, device, expected):
    from ctseg_lib.training import autocast_dtype, training_precision

    monkeypatch.setenv("CTSEG_CPU_BF16", env)
    cfg = tiny_cfg(amp=amp)
    assert autocast_dtype(cfg, torch.device(device)) == expected
    assert training_precision(cfg, device) == (str(expected).removeprefix("torch.") if expected else "float32")


def test_bfloat16_training_keeps_float32_weights_and_is_recorded(data, tmp_path, monkeypatch):
    monkeypatch.setenv("CTSEG_CPU_BF16", "1")
    cfg = tiny_cfg(epochs=1)
    bf = train(cfg, data, tmp_path / "bf16", quiet=True, device="cpu")
    monkeypatch.setenv("CTSEG_CPU_BF16", "0")
    fp = train(cfg, data, tmp_path / "fp32", quiet=True, device="cpu")
    assert load_checkpoint(tmp_path / "bf16" / "last.pt")["meta"]["precision"] == "bfloat16"
    assert load_checkpoint(tmp_path / "fp32" / "last.pt")["meta"]["precision"] == "float32"
    sd_bf, sd_fp = bf.model.state_dict(), fp.model.state_dict()
    assert all(v.dtype == sd_fp[k].dtype for k, v in sd_bf.items()), "the weights stay float32"
    assert np.isfinite(bf.history[-1]["train_loss"])
    # the forward pass really ran in bfloat16: same seed and data, different weights after one epoch
    assert not all(torch.equal(v, sd_fp[k]) for k, v in sd_bf.items() if v.is_floating_point())


def test_train_cached_keys_runs_by_training_precision(data, tmp_path, monkeypatch):
    import ctseg_lib.notebook as nb

    monkeypatch.setattr(nb, "DEFAULT_CACHE", tmp_path)
    cfg = tiny_cfg(epochs=1)
    monkeypatch.setenv("CTSEG_CPU_BF16", "0")
    fp = nb.train_cached(cfg, data, "toy", device="cpu")
    again = nb.train_cached(cfg, data, "toy", device="cpu")
    monkeypatch.setenv("CTSEG_CPU_BF16", "1")
    bf = nb.train_cached(cfg, data, "toy", device="cpu")
    assert again.out_dir == fp.out_dir, "the same precision reuses the run"
    assert bf.out_dir != fp.out_dir and bf.meta["precision"] == "bfloat16" and fp.meta["precision"] == "float32"


def test_validation_does_not_change_the_trained_network(data, tmp_path):
    """Validating every epoch or only after the last one gives the same final weights: validation
    draws no random numbers and changes no weights or BatchNorm statistics.  Chapter 8 relies on it
    when it compares its seed-0 runs' ``last.pt`` with runs of seeds 1 and 2 that validate once
    (planted variants, both caught: validation drew random numbers; validation ran a forward pass in
    ``train()`` mode, so BatchNorm updated its running statistics on the validation slices)."""
    every = train(tiny_cfg(epochs=3, val_every=1), data, tmp_path / "every", quiet=True, device="cpu")
    once = train(tiny_cfg(epochs=3, val_every=3), data, tmp_path / "once", quiet=True, device="cpu")
    assert [("val_mean_dice" in r) for r in every.history] == [True, True, True]
    assert [("val_mean_dice" in r) for r in once.history] == [False, False, True]
    a = load_checkpoint(tmp_path / "every" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "once" / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_cached_loads_the_best_or_the_last_epoch_of_one_run(data, tmp_path, monkeypatch):
    """``checkpoint="last"`` loads ``last.pt`` of the same cached run (no second training) and ``Run.epoch``
    says which epoch the weights are; chapter 8 compares its models' final epochs over seeds."""
    import ctseg_lib.notebook as nb
    import ctseg_lib.training as T

    monkeypatch.setattr(nb, "DEFAULT_CACHE", tmp_path)
    scores = iter([0.5, 0.2])  # validation prefers epoch 2 of 4
    monkeypatch.setattr(T, "validate", lambda *a, **k: {"val_global_mean_dice": next(scores)})
    cfg = tiny_cfg(epochs=4, val_every=2)
    best = nb.train_cached(cfg, data, "toy", device="cpu")
    last = nb.train_cached(cfg, data, "toy", device="cpu", checkpoint="last")
    assert last.out_dir == best.out_dir and (best.epoch, last.epoch) == (2, 4)
    sd_best, sd_last = best.model.state_dict(), last.model.state_dict()
    assert not all(torch.equal(v, sd_last[k]) for k, v in sd_best.items() if v.is_floating_point())
    with pytest.raises(ValueError, match="'best' or 'last'"):  # refused before training anything
        nb.train_cached(tiny_cfg(epochs=1, seed=7), data, "typo", device="cpu", checkpoint="final")
    assert not list((tmp_path / "runs").glob("typo-*"))

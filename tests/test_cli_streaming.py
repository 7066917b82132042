"""Streaming prediction of full-size volumes (issue 18): same labels as restoring the whole probability
volume, without ever holding it."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from torch import nn

from ctseg_lib.config import TrainConfig
from ctseg_lib.data.nifti import Volume
from ctseg_lib.inference import predict_case, predict_volume, sliding_window_inference
from ctseg_lib.preprocessing import CTNormalizer, PreprocessParams, preprocess_case, restore


class Smooth(nn.Module):
    """A fixed, non-trivial 3-class 'network' whose probabilities vary smoothly (ties are unlikely)."""

    size_divisor = 1

    def forward(self, x):
        c = x[:, x.shape[1] // 2: x.shape[1] // 2 + 1]
        return torch.cat([torch.zeros_like(c), 30 * (c - 0.5), 25 * (0.35 - c)], 1)


def body(shape=(70, 60, 23), seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    hu = np.full(shape, -1000.0, np.float32)
    inside = x ** 2 / 0.6 + y ** 2 / 0.5 < 1
    hu[inside] = 60 + 120 * np.sin(3 * x + 2 * y + 4 * z)[inside] + rng.normal(0, 15, inside.sum())
    hu[np.hypot(x, y) > 1.2] = -3024  # FOV padding too
    aff = np.diag([0.8, 0.9, 2.5, 1.0])
    return Volume(hu, aff, (0.8, 0.9, 2.5), aff, shape, None)


def legacy(model, cfg, meta, img) -> np.ndarray:
    """The pre-streaming predict_case: full float32 probabilities, then restore, then argmax."""
    params = PreprocessParams.from_dict(meta["preprocess"])
    pre = preprocess_case(img, None, params, None)
    if cfg.model.spatial_dims == 2:
        probs = predict_volume(model, pre.image, cfg.model.context, 4)
    else:
        probs = sliding_window_inference(model, torch.from_numpy(np.ascontiguousarray(pre.image))[None],
                                         tuple(cfg.data.patch_size)).numpy()
    return restore(probs, pre.meta).argmax(0).astype(np.uint8)


@pytest.mark.parametrize("data", [
    {"slice_size": None, "patch_size": [16, 16], "preprocess": {"crop_to_body": True}},  # streaming, no resize
    {"slice_size": [32, 40], "preprocess": {"crop_to_body": True}},                # streaming, in-plane resize
    {"slice_size": [32, 32], "target_spacing": [1.0, 1.0, 4.0]},                    # z resampled: float16 path
    {"target_spacing": [1.2, 1.2, 1.5], "patch_size": [16, 16], "preprocess": {"crop_to_body": True}},    # z upsampled
])
@pytest.mark.parametrize("context", [0, 1])
def test_streaming_equals_full_restore(data, context):
    cfg = TrainConfig.from_dict({"model": {"depth": 2, "context": context}, "data": data})
    meta = {"preprocess": cfg.data.preprocess_params().to_dict(), "normalizer": None}
    img = body()
    got = predict_case(Smooth(), cfg, meta, img, batch_size=4)
    want = legacy(Smooth(), cfg, meta, img)
    assert got.dtype == np.uint8 and got.shape == img.array.shape
    # float16 probabilities (z-resampled path) may flip a voxel whose two best classes tie to 1e-3
    assert np.mean(got != want) < 1e-3
    if data.get("target_spacing") is None:
        np.testing.assert_array_equal(got, want)
    assert set(np.unique(got)) == {0, 1, 2}


def test_3d_path_equals_full_restore():
    class Smooth3D(Smooth):
        pass

    cfg = TrainConfig.from_dict({"model": {"spatial_dims": 3, "depth": 2}, "data": {"patch_size": [16, 16, 8],
                                                                                  "slice_size": None}})
    meta = {"preprocess": cfg.data.preprocess_params().to_dict(), "normalizer": None}
    img = body((40, 36, 12))
    np.testing.assert_array_equal(predict_case(Smooth3D(), cfg, meta, img), legacy(Smooth3D(), cfg, meta, img))


def test_no_full_probability_volume_is_allocated():
    """Peak numpy memory of predict_case stays below one float32 (C, X, Y, Z) probability volume on top of
    preprocessing; the pre-streaming code needed ~3 of them (probabilities, restored copy, int64 argmax)."""
    cfg = TrainConfig.from_dict({"model": {"depth": 2}, "data": {"slice_size": None, "patch_size": [16, 16]}})
    meta = {"preprocess": cfg.data.preprocess_params().to_dict(), "normalizer": None}
    img = body((128, 128, 48))
    n = img.array.size
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        predict_case(Smooth(), cfg, meta, img, batch_size=8)
        new_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        legacy(Smooth(), cfg, meta, img)
        old_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    prep = 3 * 4 * n  # window + resize copy + slice-major copy, float32
    assert new_peak < prep + 3 * 4 * n * 0.5, (new_peak / n, old_peak / n)
    assert old_peak > 2 * new_peak * 0.8  # the test can tell the two apart


def test_ctnormalizer_meta_still_used():
    """The normaliser recorded in the checkpoint is applied by the streaming path too."""
    cfg = TrainConfig.from_dict({"model": {"depth": 2}, "data": {"normalization": "nnunet", "slice_size": None,
                                                                         "patch_size": [16, 16]}})
    norm = CTNormalizer(lower=-100, upper=300, mean=60, std=80)
    meta = {"preprocess": cfg.data.preprocess_params().to_dict(), "normalizer": norm.to_dict()}
    img = body((40, 30, 6))
    a = predict_case(Smooth(), cfg, meta, img)
    meta["normalizer"] = CTNormalizer(lower=-100, upper=300, mean=-500, std=80).to_dict()
    assert not np.array_equal(a, predict_case(Smooth(), cfg, meta, img))


def test_iter_slice_probs_does_not_leak_inference_mode():
    from ctseg_lib.inference import iter_slice_probs

    it = iter_slice_probs(Smooth(), np.zeros((8, 8, 5), np.float32), batch_size=2)
    z, p = next(it)
    assert not torch.is_inference_mode_enabled()  # the caller's code between batches runs normally
    assert z.tolist() == [0, 1] and tuple(p.shape) == (2, 3, 8, 8)
    assert sum(len(z) for z, _ in it) == 3


def test_argmax_uint8_equals_argmax_including_ties():
    from ctseg_lib.inference import argmax_uint8

    g = torch.Generator().manual_seed(0)
    p = torch.randint(0, 3, (4, 5, 7, 6), generator=g).float()  # many ties: the first maximum must win
    for x in (p, p.contiguous(memory_format=torch.channels_last)):
        got = argmax_uint8(x)
        assert got.dtype == torch.uint8
        assert torch.equal(got, x.argmax(1).to(torch.uint8))


def test_bench_large_volume_variants_agree_on_a_tiny_volume():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import bench_large_volume as bench

    rows = [bench.one(v, (64, 64, 5), threads=1, batch=4) for v in ("streaming", "before")]
    assert rows[0]["foreground_voxels"] == rows[1]["foreground_voxels"] > 0
    assert all(r["peak_rss_gb"] > 0 and r["seconds"] >= 0 for r in rows)

"""CPU bfloat16 inference (``ctseg_lib.inference.cpu_bf16``): the policy and the agreement with float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctseg_lib import inference
from ctseg_lib.errors import CTSegError
from ctseg_lib.inference import cpu_bf16, predict_volume, sliding_window_inference
from ctseg_lib.models.unet import UNet


@pytest.mark.parametrize(("value", "expected"), [("0", False), ("off", False), ("1", True), ("yes", True)])
def test_env_forces_the_choice(monkeypatch, value, expected):
    monkeypatch.setenv("CTSEG_CPU_BF16", value)
    assert cpu_bf16() is expected


@pytest.mark.parametrize(("flags", "expected"), [({"avx2", "avx512f"}, False), ({"avx512f", "avx512_bf16"}, True),
                                                 ({"amx_bf16", "amx_tile"}, True), (set(), False)])
def test_auto_follows_the_cpu_flags(monkeypatch, flags, expected):
    monkeypatch.setenv("CTSEG_CPU_BF16", "auto")
    monkeypatch.setattr(inference, "_cpu_flags", lambda: frozenset(flags))
    assert cpu_bf16() is expected


def test_unknown_value_is_refused(monkeypatch):
    monkeypatch.setenv("CTSEG_CPU_BF16", "maybe")
    with pytest.raises(CTSegError, match="CTSEG_CPU_BF16"):
        cpu_bf16()


def _trained_looking_unet(spatial_dims: int) -> torch.nn.Module:
    torch.manual_seed(0)
    model = UNet(spatial_dims=spatial_dims, in_channels=1, out_channels=3, base_channels=8, depth=3)
    return model.eval()


def test_bf16_slices_agree_with_float32_but_are_computed_in_bf16(monkeypatch):
    model = _trained_looking_unet(2)
    image = np.random.default_rng(0).normal(size=(48, 40, 6)).astype(np.float32)
    monkeypatch.setenv("CTSEG_CPU_BF16", "0")
    p32 = predict_volume(model, image)
    monkeypatch.setenv("CTSEG_CPU_BF16", "1")
    p16 = predict_volume(model, image)
    assert p16.dtype == np.float32 and p16.shape == p32.shape
    np.testing.assert_allclose(p16.sum(0), 1.0, rtol=1e-5)  # softmax still in float32
    diff = np.abs(p16 - p32)
    assert diff.max() > 0, "bf16 was requested but the network ran in float32"
    assert diff.max() < 0.05
    assert (p16.argmax(0) == p32.argmax(0)).mean() > 0.98


def test_bf16_sliding_window_agrees_with_float32(monkeypatch):
    model = _trained_looking_unet(3)
    vol = torch.from_numpy(np.random.default_rng(1).normal(size=(1, 24, 20, 16)).astype(np.float32))
    monkeypatch.setenv("CTSEG_CPU_BF16", "0")
    p32 = sliding_window_inference(model, vol, (16, 16, 16)).numpy()
    monkeypatch.setenv("CTSEG_CPU_BF16", "1")
    p16 = sliding_window_inference(model, vol, (16, 16, 16)).numpy()
    assert 0 < np.abs(p16 - p32).max() < 0.05
    assert (p16.argmax(0) == p32.argmax(0)).mean() > 0.98

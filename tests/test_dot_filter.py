"""The fixed dot-enhancement input channel (``ctseg_lib.models.dot_filter``, ``model.dot_filter``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ctseg_lib.checkpoint import build_model
from ctseg_lib.config import TrainConfig
from ctseg_lib.errors import CTSegError
from ctseg_lib.models import UNet
from ctseg_lib.models.dot_filter import DotFilter


def _stack(vol: np.ndarray) -> torch.Tensor:
    """(X, Y, Z) volume with Z = 2k+1 slices -> (1, 2k+1, X, Y) network input."""
    return torch.tensor(np.moveaxis(vol, 2, 0)[None].astype(np.float32))


def _grid(k: int = 2, n: int = 48, px: float = 2.0, dz: float = 3.0):
    c = (np.arange(n) - n // 2) * px
    return np.meshgrid(c, c, np.arange(-k, k + 1) * dz, indexing="ij")


@pytest.mark.parametrize("r", [3.0, 4.0, 6.0])
def test_a_sphere_answers_and_a_tube_or_slab_of_the_same_radius_does_not(r):
    f = DotFilter(2, radii_mm=(4.0, 6.0))
    x, y, z = _grid()
    sphere = f.response(_stack((x**2 + y**2 + z**2 <= r * r) * 1.0)).max()
    across = f.response(_stack((x**2 + y**2 <= r * r) * 1.0)).max()  # a vessel cut across (along z)
    along = f.response(_stack((y**2 + z**2 <= r * r) * 1.0)).max()  # a vessel in the slice plane
    slab = f.response(_stack((np.abs(z) <= r) * 1.0)).max()
    assert sphere > 1.0
    assert max(across, along, slab) < 0.05 * sphere


def test_dark_blobs_give_nothing_and_the_response_scales_with_contrast():
    f = DotFilter(1, radii_mm=(4.0,))
    x, y, z = _grid(k=1)
    ball = (x**2 + y**2 + z**2 <= 16) * 1.0
    bright = f.response(_stack(ball)).max()
    assert f.response(_stack(-ball)).max() == 0  # a hole (air) is not a nodule
    torch.testing.assert_close(f.response(_stack(3 * ball + 5)).max(), 3 * bright, rtol=1e-4, atol=1e-5)


def test_closed_form_eigenvalues_match_eigvalsh():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 3, 3, generator=g)
    a = a + a.transpose(1, 2)
    a[:10] = torch.diag(torch.tensor([1.0, 1.0, 1.0]))  # repeated eigenvalues
    a[10:20] = 0
    small, big = DotFilter.extreme_eigenvalues(a[:, 0, 0], a[:, 1, 1], a[:, 2, 2], a[:, 0, 1], a[:, 0, 2], a[:, 1, 2])
    ev = torch.linalg.eigvalsh(a)
    torch.testing.assert_close(small, ev[:, 0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(big, ev[:, 2], atol=1e-4, rtol=1e-4)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([2, 3]))
def test_mirroring_the_input_mirrors_the_response(seed, axis):
    """Test-time mirroring averages predictions of flipped inputs: the extra channel must flip with them."""
    f = DotFilter(2)
    x = torch.rand(2, 5, 24, 20, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(f.response(x.flip(axis)), f.response(x).flip(axis), atol=1e-5, rtol=1e-4)


def test_output_keeps_the_input_channels_and_appends_one():
    f = DotFilter(1)
    x = torch.rand(3, 3, 32, 16)
    out = f(x)
    assert out.shape == (3, 4, 32, 16)
    torch.testing.assert_close(out[:, :3], x)
    assert bool((out[:, 3] >= 0).all())


def test_config_builds_filter_then_unet_and_refuses_2d_or_3d():
    cfg = TrainConfig.from_dict({"model": {"context": 1, "dot_filter": [4.0], "base_channels": 4, "depth": 2},
                                 "data": {"slice_size": [32, 32]}})
    model = build_model(cfg, 2)
    assert isinstance(model[0], DotFilter) and isinstance(model[1], UNet)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 2, 32, 32)  # the data's 3 slices in, 2 classes out
    assert isinstance(build_model(TrainConfig.from_dict({"data": {"slice_size": [32, 32]}}), 2), UNet)
    for model_cfg in ({"context": 0, "dot_filter": [4.0]}, {"context": 1, "dot_filter": [0.0]},
                      {"context": 1, "dot_filter": [4.0], "dot_voxel_mm": [2.0, 2.0]}):
        with pytest.raises(CTSegError, match="model.dot_filter"):
            TrainConfig.from_dict({"model": model_cfg})


def test_2d_only():
    with pytest.raises(ValueError, match="context"):
        DotFilter(0)

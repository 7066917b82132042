"""U-Net shapes, divisibility rule, deep supervision, channels_last, walkthrough, original variant."""

from __future__ import annotations

import pytest
import torch

from ctseg_lib.errors import CTSegError
from ctseg_lib.models import (
    OriginalProjectUNet,
    UNet,
    count_parameters,
    pad_to_divisor,
    receptive_field,
    shape_walkthrough,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("dims,shape", [(2, (2, 3, 32, 24)), (3, (1, 1, 16, 16, 8))])
@pytest.mark.parametrize("upsample", ["transpose", "interp"])
@pytest.mark.parametrize("norm", ["batch", "instance", None])
def test_output_shape_is_logits_of_input_size(dims, shape, upsample, norm):
    m = UNet(dims, shape[1], 3, base_channels=4, depth=3, norm=norm, upsample=upsample)
    y = m(torch.randn(shape))
    assert y.shape == (shape[0], 3, *shape[2:])
    assert y.dtype == torch.float32
    assert not torch.allclose(y.sum(1), torch.ones(())), "output must be logits, not softmax probabilities"


def test_channels_double_and_cap():
    m = UNet(2, 1, 2, base_channels=32, depth=5, max_channels=128)
    assert m.channels == [32, 64, 128, 128, 128]


def test_size_divisor_and_error_message():
    m = UNet(2, 1, 2, base_channels=4, depth=4)
    assert m.size_divisor == 8
    m(torch.zeros(1, 1, 16, 24))
    with pytest.raises(CTSegError, match="not divisible by 8"):
        m(torch.zeros(1, 1, 16, 20))
    with pytest.raises(CTSegError, match="expects a 4D input"):
        m(torch.zeros(1, 16, 16))
    assert UNet(3, depth=1, base_channels=2).size_divisor == 1


def test_pad_to_divisor_roundtrip():
    x = torch.arange(1 * 1 * 13 * 18, dtype=torch.float32).reshape(1, 1, 13, 18)
    padded, crop = pad_to_divisor(x, 8)
    assert padded.shape == (1, 1, 16, 24)
    assert torch.equal(padded[crop], x)
    assert padded[0, 0, 0].abs().sum() == 0  # symmetric padding: first row is padding
    same, crop2 = pad_to_divisor(x, 1)
    assert same is x and torch.equal(same[crop2], x)


def test_deep_supervision_train_list_eval_tensor():
    m = UNet(2, 1, 3, base_channels=4, depth=4, deep_supervision=True)
    outs = m(torch.randn(2, 1, 32, 32))
    assert [tuple(o.shape) for o in outs] == [(2, 3, 32, 32), (2, 3, 16, 16), (2, 3, 8, 8)]
    m.eval()
    assert m(torch.randn(1, 1, 32, 32)).shape == (1, 3, 32, 32)


def test_channels_last_matches_contiguous():
    torch.manual_seed(0)
    m = UNet(2, 1, 2, base_channels=4, depth=3).eval()
    x = torch.randn(2, 1, 16, 16)
    y = m(x)
    y_cl = m.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    assert torch.allclose(y, y_cl, atol=1e-5)


def test_bias_free_before_norm():
    m = UNet(2, 1, 2, base_channels=4, depth=2, norm="batch")
    assert all(c.bias is None for c in m.encoders[0] if isinstance(c, torch.nn.Conv2d))
    m2 = UNet(2, 1, 2, base_channels=4, depth=2, norm=None)
    assert all(c.bias is not None for c in m2.encoders[0] if isinstance(c, torch.nn.Conv2d))


def test_count_parameters_hand_computed():
    # depth 1, no norm: conv(1→2, 3×3)+b = 20, conv(2→2)+b = 38, head 2→2 1×1 + b = 6
    assert count_parameters(UNet(2, 1, 2, base_channels=2, depth=1, norm=None)) == 64


def test_shape_walkthrough_and_training_mode_restored():
    m = UNet(2, 2, 3, base_channels=4, depth=3)
    m.train()
    walk = dict(shape_walkthrough(m, (1, 2, 32, 32)))
    assert walk["enc1"] == (1, 8, 16, 16)
    assert walk["bottleneck (enc2)"] == (1, 16, 8, 8)
    assert walk["head (logits)"] == (1, 3, 32, 32)
    assert m.training


def test_receptive_field_hand_computed():
    assert receptive_field(1) == 5           # two 3×3 convs
    assert receptive_field(2) == 18          # 5 +1 (pool) +4+4 (convs at stride 2) +2+2 (decoder)
    assert receptive_field(4) == 96


def test_receptive_field_bounds_empirical_gradient_support():
    m = UNet(2, 1, 1, base_channels=2, depth=2, norm=None).double()
    x = torch.randn(1, 1, 40, 40, dtype=torch.float64, requires_grad=True)
    m(x)[0, 0, 20, 20].backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
    assert 5 < int(rows.max() - rows.min() + 1) <= receptive_field(2)


def test_dropout_and_bad_args():
    m = UNet(3, 1, 2, base_channels=2, depth=2, dropout=0.5)
    assert any(isinstance(x, torch.nn.Dropout3d) for x in m.modules())
    with pytest.raises(ValueError):
        UNet(4)
    with pytest.raises(ValueError):
        UNet(2, norm="group")
    with pytest.raises(ValueError):
        UNet(2, upsample="pixelshuffle")


def test_original_project_unet_returns_probabilities():
    m = OriginalProjectUNet(1, base_channels=4, depth=3)
    with torch.no_grad():
        y = m(torch.randn(2, 1, 16, 16) * 5)
    assert y.shape == (2, 1, 16, 16)
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    # Conv → ReLU → BatchNorm order, bias kept
    layers = list(m.encoders[0])
    assert [type(x).__name__ for x in layers[:3]] == ["Conv2d", "ReLU", "BatchNorm2d"]
    assert layers[0].bias is not None
    with pytest.raises(CTSegError):
        m(torch.randn(1, 1, 18, 16))

"""U-Net for 2D, 2.5D and 3D CT segmentation (Ronneberger et al. 2015, MICCAI, arXiv:1505.04597).

Architecture (one *level* = one spatial resolution)::

    input ─ enc0 ──────────────────────────────── dec0 ─ head → logits (N, out_channels, ...)
             └ pool ─ enc1 ─────────────── dec1 ┘
                       └ pool ─ enc2 ── dec2 ┘
                                 └ pool ─ bottleneck (enc3)

* Every stage is two ``3×3(×3)`` convolutions, each followed by normalisation and LeakyReLU(0.01)
  (nnU-Net's choice, Isensee et al. 2021, Nature Methods; it avoids dead ReLUs).  Convolutions use
  ``padding=1`` ("same"), unlike the original paper's valid convolutions, so the output has the
  input's size and no overlap-tile bookkeeping is needed.
* **Downsampling by 2×2(×2) max-pooling**, as in Ronneberger et al.: parameter-free and cheap.
  (nnU-Net and MONAI use strided convolutions instead; the difference in Dice is small.)
* Channels double at every level, ``base_channels · 2**level``, capped at ``max_channels``
  (nnU-Net caps at 320 for 3D so the deepest levels do not explode in memory).
* **``depth`` = number of resolution levels**, so ``depth - 1`` downsamplings: depth 4 means
  levels at 1, 1/2, 1/4 and 1/8 of the input size.  Every spatial size must therefore be divisible
  by :attr:`UNet.size_divisor` ``= 2**(depth-1)``; :func:`pad_to_divisor` pads any input to it.
* Upsampling: ``"transpose"`` (2×2 transposed convolution, as in the paper) or ``"interp"``
  ((bi/tri)linear interpolation followed by a 1×1 convolution; no checkerboard artefacts).
* The output is **logits** (no softmax): losses apply softmax themselves, which is numerically safer.

2.5D is plain 2D with ``in_channels = k`` neighbouring axial slices (see ``datasets.stack_25d``).

Speed: convolutions before a normalisation have ``bias=False`` (the norm's shift makes a bias
redundant), activations are in place, and ``torch.channels_last`` / ``channels_last_3d`` inputs keep
their memory format through the whole network (``torch.cat`` preserves it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CTSegError

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_TCONV = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_DROP = {2: nn.Dropout2d, 3: nn.Dropout3d}
_BN = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_IN = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}


def _norm(kind: str | None, dims: int, ch: int) -> nn.Module:
    if kind is None or kind == "none":
        return nn.Identity()
    if kind == "batch":
        return _BN[dims](ch)
    if kind == "instance":  # affine=True: nnU-Net's InstanceNorm has a learnt scale and shift
        return _IN[dims](ch, affine=True)
    raise ValueError(f"norm must be 'batch', 'instance' or None, not {kind!r}")


class ConvBlock(nn.Sequential):
    """(conv 3×3 → norm → LeakyReLU) × 2, optional channel dropout between the two convolutions."""

    def __init__(self, dims: int, cin: int, cout: int, norm: str | None, dropout: float) -> None:
        bias = norm is None or norm == "none"
        layers: list[nn.Module] = [
            _CONV[dims](cin, cout, 3, padding=1, bias=bias), _norm(norm, dims, cout),
            nn.LeakyReLU(0.01, inplace=True),
        ]
        if dropout > 0:
            layers.append(_DROP[dims](dropout))
        layers += [_CONV[dims](cout, cout, 3, padding=1, bias=bias), _norm(norm, dims, cout),
                   nn.LeakyReLU(0.01, inplace=True)]
        super().__init__(*layers)


class Up(nn.Module):
    """Double the spatial size and map ``cin`` → ``cout`` channels."""

    def __init__(self, dims: int, cin: int, cout: int, mode: str) -> None:
        super().__init__()
        if mode == "transpose":
            self.op: nn.Module = _TCONV[dims](cin, cout, 2, stride=2, bias=False)
        elif mode == "interp":
            interp = "bilinear" if dims == 2 else "trilinear"
            self.op = nn.Sequential(nn.Upsample(scale_factor=2, mode=interp, align_corners=False),
                                    _CONV[dims](cin, cout, 1, bias=False))
        else:
            raise ValueError(f"upsample must be 'transpose' or 'interp', not {mode!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class UNet(nn.Module):
    """U-Net with skip connections for 2D/2.5D (``spatial_dims=2``) or 3D (``spatial_dims=3``).

    Args:
        spatial_dims: 2 (input ``(N, C, H, W)``) or 3 (input ``(N, C, D, H, W)``).
        in_channels: input channels (1 for a CT slice/patch; k for 2.5D stacks of k slices).
        out_channels: classes including background (3 for liver: bg/liver/tumour; 2 for lung).
        base_channels: channels at full resolution; doubled per level, capped at ``max_channels``.
        depth: number of resolution levels (≥ 1); ``depth - 1`` max-pool downsamplings.
        norm: ``"batch"``, ``"instance"`` or ``None``.
        dropout: channel-dropout probability inside every stage (0 disables it).
        upsample: ``"transpose"`` or ``"interp"``.
        deep_supervision: in training mode, ``forward`` returns a list of logits
            ``[full, 1/2, 1/4, ...]`` (one 1×1 head per decoder level, nnU-Net style,
            ``depth - 1`` tensors); in eval mode it always returns the full-resolution tensor.
        max_channels: channel cap.

    Returns (forward): float logits ``(N, out_channels, *spatial)`` of the input's spatial size.

    Raises:
        CTSegError: (forward) a spatial size is not divisible by :attr:`size_divisor`.
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2,
                 base_channels: int = 32, depth: int = 4, norm: str | None = "batch",
                 dropout: float = 0.0, upsample: str = "transpose", deep_supervision: bool = False,
                 max_channels: int = 320) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, not {spatial_dims}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, not {depth}")
        self.spatial_dims, self.depth, self.deep_supervision = spatial_dims, depth, deep_supervision
        d = spatial_dims
        self.channels = [min(base_channels * 2**i, max_channels) for i in range(depth)]
        ch = self.channels
        self.encoders = nn.ModuleList(
            ConvBlock(d, in_channels if i == 0 else ch[i - 1], ch[i], norm, dropout) for i in range(depth))
        self.pool = _POOL[d](2)
        # ups[i] / decoders[i] produce level i from level i+1 (i = depth-2 ... 0).
        self.ups = nn.ModuleList(Up(d, ch[i + 1], ch[i], upsample) for i in range(depth - 1))
        self.decoders = nn.ModuleList(ConvBlock(d, 2 * ch[i], ch[i], norm, dropout) for i in range(depth - 1))
        self.head = _CONV[d](ch[0], out_channels, 1)
        # Auxiliary heads for decoder levels 1 .. depth-2 (level 0 uses ``head``).
        self.aux_heads = nn.ModuleList(
            _CONV[d](ch[i], out_channels, 1) for i in range(1, depth - 1)) if deep_supervision else None

    @property
    def size_divisor(self) -> int:
        """Every spatial size of the input must be a multiple of this: ``2**(depth - 1)``."""
        return 2 ** (self.depth - 1)

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != self.spatial_dims + 2:
            raise CTSegError(f"UNet(spatial_dims={self.spatial_dims}) expects a {self.spatial_dims + 2}D input "
                             f"(N, C, ...), got shape {tuple(x.shape)}")
        bad = [s for s in x.shape[2:] if s % self.size_divisor]
        if bad:
            raise CTSegError(f"input spatial size {tuple(x.shape[2:])} is not divisible by "
                             f"{self.size_divisor} (= 2**(depth-1) with depth={self.depth}); "
                             f"pad it with ctseg_lib.models.unet.pad_to_divisor")

    def forward(self, x: torch.Tensor, _record: list | None = None) -> torch.Tensor | list[torch.Tensor]:
        self._check(x)
        rec = (lambda name, t: _record.append((name, tuple(t.shape)))) if _record is not None else None
        if rec:
            rec("input", x)
        skips = []
        for i, enc in enumerate(self.encoders):
            if i > 0:
                x = self.pool(x)
            x = enc(x)
            skips.append(x)
            if rec:
                rec(f"enc{i}" if i < self.depth - 1 else f"bottleneck (enc{i})", x)
        outs = []
        for i in range(self.depth - 2, -1, -1):
            x = self.ups[i](x)
            if rec:
                rec(f"up{i}", x)
            x = self.decoders[i](torch.cat([skips[i], x], dim=1))
            if rec:
                rec(f"dec{i} (after concat + convs)", x)
            if self.aux_heads is not None and self.training and i > 0:
                outs.append(self.aux_heads[i - 1](x))
        logits = self.head(x)
        if rec:
            rec("head (logits)", logits)
        if self.aux_heads is not None and self.training:
            return [logits, *outs[::-1]]  # full resolution first, then 1/2, 1/4, ...
        return logits


def pad_to_divisor(x: torch.Tensor, divisor: int, value: float = 0.0) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Pad the spatial dims of ``x`` ``(N, C, *spatial)`` up to multiples of ``divisor``.

    Padding is split evenly before/after (so the anatomy stays centred).  Returns the padded tensor
    and ``crop``, a tuple of slices such that ``model(padded)[crop]`` has ``x``'s spatial size.
    ``value`` is the constant used for padding (0 = the mean after z-score normalisation).
    """
    spatial = x.shape[2:]
    pads: list[int] = []
    crop: list[slice] = [slice(None), slice(None)]
    for s in spatial:
        total = (-s) % divisor
        before = total // 2
        crop.append(slice(before, before + s))
        pads.append((before, total - before))
    # F.pad wants the last dimension first.
    flat = [p for pair in reversed(pads) for p in pair]
    if any(flat):
        x = F.pad(x, flat, mode="constant", value=value)
    return x, tuple(crop)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def shape_walkthrough(model: UNet, input_shape: tuple[int, ...]) -> list[tuple[str, tuple[int, ...]]]:
    """Output shape of every stage for an input of ``input_shape`` ``(N, C, *spatial)`` (for the book).

    Runs one forward pass on zeros in eval mode (so BatchNorm statistics are untouched) and restores
    the previous training mode.
    """
    was_training = model.training
    model.eval()
    record: list[tuple[str, tuple[int, ...]]] = []
    try:
        p = next(model.parameters())
        model(torch.zeros(input_shape, dtype=p.dtype, device=p.device), _record=record)
    finally:
        model.train(was_training)
    return record


def receptive_field(depth: int, convs_per_stage: int = 2, kernel: int = 3) -> int:
    """Theoretical receptive field (voxels along one axis) of :class:`UNet` with ``transpose`` upsampling.

    Standard recursion (Araujo et al. 2019, Distill, "Computing receptive fields of CNNs"): a
    layer with kernel k at cumulative stride j adds ``(k-1)·j``; a 2×2 max-pool adds ``j`` and
    doubles j; a 2×2 stride-2 transposed convolution halves j and adds nothing (each output voxel
    sees exactly one input voxel).  depth 4 → 96 voxels, depth 5 → 200.

    This is the usual *approximate* value: the exact extent depends on where a voxel sits on the
    pooling grid (for depth 4 it ranges over 92–100 voxels, for depth 5 over 188–204, as the U-Net
    chapter measures with input gradients).
    """
    rf, jump = 1, 1
    for level in range(depth):
        if level > 0:
            rf += jump  # max-pool 2, stride 2
            jump *= 2
        rf += convs_per_stage * (kernel - 1) * jump
    for _ in range(depth - 1):
        jump //= 2
        rf += convs_per_stage * (kernel - 1) * jump
    return rf

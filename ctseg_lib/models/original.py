"""The course project's original 2D U-Net, kept so the book can compare it honestly with :class:`UNet`.

It is a faithful re-implementation of the *design* of the project's network, not of its weights.
Differences from :class:`ctseg_lib.models.unet.UNet` and why they matter:

* **Conv → ReLU → BatchNorm** order (the usual and nnU-Net order is conv → norm → activation).  With
  the norm *after* the ReLU the normalised activations are no longer non-negative and the conv bias
  is not redundant, so convolutions here keep ``bias=True``.
* **Bilinear upsampling** (``align_corners=True``) with no learnt upsampling layer; the decoder
  convolution sees ``ch[i+1] + ch[i]`` channels after concatenation.
* **One output channel with a sigmoid applied inside ``forward``**: it returns *probabilities*
  ``(N, 1, H, W)`` in [0, 1], i.e. binary foreground-vs-rest.  A loss must therefore not apply a
  sigmoid again (use :class:`ctseg_lib.losses.BatchSoftDiceBinary`), and computing BCE from these
  probabilities is less stable than from logits (``BCEWithLogitsLoss``).  Multi-class (liver *and*
  tumour) output is impossible without changing the head.
* Plain ReLU (not LeakyReLU), 2D only, ``base_channels=16``.
* ``depth`` has the same meaning as in :class:`UNet`: the number of resolution levels
  (``depth - 1`` max-pool downsamplings), so inputs must be divisible by ``2**(depth-1)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CTSegError


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(cout),
        nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(cout),
    )


class OriginalProjectUNet(nn.Module):
    """2D U-Net as in the original course project.

    Args:
        in_channels: input channels (1 CT slice).
        base_channels: channels at full resolution, doubled per level (no cap).
        depth: number of resolution levels (``depth - 1`` downsamplings).

    Returns (forward): float32 **probabilities** ``(N, 1, H, W)`` (sigmoid already applied).
    """

    def __init__(self, in_channels: int = 1, base_channels: int = 16, depth: int = 4) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, not {depth}")
        self.depth = depth
        ch = [base_channels * 2**i for i in range(depth)]
        self.encoders = nn.ModuleList(_block(in_channels if i == 0 else ch[i - 1], ch[i]) for i in range(depth))
        self.decoders = nn.ModuleList(_block(ch[i + 1] + ch[i], ch[i]) for i in range(depth - 1))
        self.head = nn.Conv2d(ch[0], 1, 1)

    @property
    def size_divisor(self) -> int:
        return 2 ** (self.depth - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or any(s % self.size_divisor for s in x.shape[2:]):
            raise CTSegError(f"OriginalProjectUNet expects (N, C, H, W) with H, W divisible by "
                             f"{self.size_divisor}, got shape {tuple(x.shape)}")
        skips = []
        for i, enc in enumerate(self.encoders):
            x = enc(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for i in range(self.depth - 2, -1, -1):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
            x = self.decoders[i](torch.cat([skips[i], x], dim=1))
        return torch.sigmoid(self.head(x))

"""Data augmentation on batched tensors, with plain torch ops (runs on the GPU with the batch).

Input ``image`` is float ``(N, C, *S)`` and ``label`` integer ``(N, *S)`` with ``S`` = (H, W) or
(H, W, D).  Every sample draws its own random transform from the given :class:`torch.Generator`,
so a run is reproducible from its seed.  The recipe is a small subset of nnU-Net's
(Isensee et al. 2021): mirroring, rotation + scaling, and intensity scale / shift / noise.

* Spatial transforms are applied to image and label together; the label is resampled with
  nearest neighbour (``grid_sample(mode="nearest")``) so no new label values appear.
* Intensity transforms touch the image only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import AugmentConfig


def _rand(n: int, g: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=g)


def random_flip(image: torch.Tensor, label: torch.Tensor, axes: list[int], p: float,
                g: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror each sample along each spatial axis in ``axes`` (0 = first spatial axis) with prob ``p``."""
    image, label = image.clone(), label.clone()
    for ax in axes:
        if ax >= image.ndim - 2:
            continue
        hit = (_rand(image.shape[0], g) < p).nonzero().flatten().tolist()
        for i in hit:
            image[i] = image[i].flip(ax + 1)  # +1: skip the channel axis
            label[i] = label[i].flip(ax)
    return image, label


def random_rotate_scale(image: torch.Tensor, label: torch.Tensor, max_deg: float,
                        scale_range: tuple[float, float], p: float,
                        g: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """In-plane rotation by U(-max_deg, max_deg) and isotropic zoom by U(scale_range), prob ``p``.

    For 3D inputs the rotation is about the last axis (axial plane), the usual choice for
    anisotropic CT.  Out-of-image regions get the sample's minimum intensity and label 0.
    """
    n, spatial = image.shape[0], image.ndim - 2
    hit = _rand(n, g) < p
    angle = (_rand(n, g) * 2 - 1) * math.radians(max_deg)
    lo, hi = scale_range
    scale = lo + _rand(n, g) * (hi - lo)
    if not bool(hit.any()):
        return image, label
    angle, scale = torch.where(hit, angle, 0.0), torch.where(hit, scale, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale  # zoom in = sample a smaller grid
    theta = torch.zeros(n, spatial, spatial + 1)
    # affine_grid orders coordinates (x=last axis, y, z); rotate the two in-plane axes.
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    if spatial == 3:
        # in-plane = the first two array axes → grid coords z, y (indices 2, 1); put rotation there.
        theta = torch.zeros(n, 3, 4)
        theta[:, 0, 0] = 1.0 / scale
        theta[:, 2, 2], theta[:, 2, 1], theta[:, 1, 2], theta[:, 1, 1] = cos, -sin, sin, cos
    theta = theta.to(image.device, image.dtype)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    fill = image.amin(dim=tuple(range(1, image.ndim)), keepdim=True)
    out = F.grid_sample(image - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
    lab = F.grid_sample(label[:, None].float(), grid, mode="nearest", padding_mode="zeros",
                        align_corners=False)[:, 0].to(label.dtype)
    keep = hit.to(image.device).view(n, *([1] * (image.ndim - 1)))
    return torch.where(keep, out, image), torch.where(keep[:, 0], lab, label)


def random_intensity(image: torch.Tensor, scale: float, shift: float, noise_std: float, p: float,
                     g: torch.Generator | None = None) -> torch.Tensor:
    """``x * U(1-scale, 1+scale) + U(-shift, shift) + N(0, noise_std)`` per sample, prob ``p``."""
    n = image.shape[0]
    shape = (n, *([1] * (image.ndim - 1)))
    hit = (_rand(n, g) < p).view(shape).to(image.device)
    a = (1 + (_rand(n, g) * 2 - 1) * scale).view(shape).to(image)
    b = ((_rand(n, g) * 2 - 1) * shift).view(shape).to(image)
    noise = torch.randn(image.shape, generator=g).to(image) * noise_std
    return torch.where(hit, image * a + b + noise, image)


def augment_batch(image: torch.Tensor, label: torch.Tensor, cfg: AugmentConfig,
                  g: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the configured augmentations; a no-op when ``cfg.enabled`` is false."""
    if not cfg.enabled:
        return image, label
    image, label = random_flip(image, label, cfg.flip_axes, cfg.flip_prob, g)
    if cfg.affine_prob > 0:
        image, label = random_rotate_scale(image, label, cfg.rotate_deg, tuple(cfg.scale_range),
                                           cfg.affine_prob, g)
    if cfg.intensity_prob > 0:
        image = random_intensity(image, cfg.intensity_scale, cfg.intensity_shift, cfg.noise_std,
                                 cfg.intensity_prob, g)
    return image, label

"""A fixed (not learned) 3D blob detector in front of a 2.5D U-Net: the dot enhancement filter.

A 2.5D network sees a few neighbouring slices as channels and must learn from ~20 training tumours
that a small bright blob which ends within those slices is a nodule while a blob that continues
(a vessel cut across) is not.  Small nodules are where every CPU recipe in this book failed.  The
eigenvalues of the Hessian say it directly (Li, Sone & Doi, *Med. Phys.* 30, 2040-2051, 2003): at a
bright blob all three are strongly negative, at a bright tube one is near zero, at a sheet two are.
Li's dot response ``|λ3|² / |λ1|`` (``|λ1| ≥ |λ2| ≥ |λ3|``, all negative; 0 otherwise) is large at
blobs and small at tubes and sheets.  It is computed with scale-normalised Gaussian derivatives
(``σ = r / √3`` for a sphere of radius ``r``; Lindeberg 1998) at a few radii and the maximum over
radii is appended to the network input as one more channel.

Everything is computed from the 2.5D input itself (``2k+1`` slices): in-plane derivatives by
separable convolutions of the centre slice stack, derivatives across slices by fixed weights over
the ``2k+1`` channels (a Gaussian truncated at ``±k`` slices, enough for nodules up to ~2 slice
spacings in radius).  So nothing else in the pipeline changes: datasets, augmentation, inference
and test-time mirroring (the response is mirror-symmetric) see the usual ``(N, 2k+1, H, W)`` input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def _gauss_derivs(offsets_mm: torch.Tensor, sigma: float) -> torch.Tensor:
    """Smoothing, first- and second-derivative kernels sampled at ``offsets_mm``: ``(3, len)``.

    They are *cross-correlation* weights (what ``F.conv2d`` applies): ``Σ w[k] f(x + k)`` is the
    Gaussian-smoothed ``f``, ``f'`` (per mm) and ``f''`` (per mm²) at ``x``.  Each row is normalised on
    its truncated support by the moment that defines it -- ``Σ g = 1``, ``Σ x·d1 = 1``,
    ``Σ x²/2·d2 = 1`` with ``Σ d2 = 0`` (a constant image has no curvature) -- which keeps short
    kernels (a few slices across) unbiased.
    """
    g = torch.exp(-0.5 * (offsets_mm / sigma) ** 2)
    g = g / g.sum()
    d1 = offsets_mm / sigma**2 * g  # -g'(x): the correlation weight of a derivative is the mirrored kernel
    d1 = d1 / (offsets_mm * d1).sum().clamp_min(1e-12)
    d2 = (offsets_mm**2 / sigma**4 - 1 / sigma**2) * g
    d2 = d2 - d2.mean()
    d2 = d2 / (0.5 * (offsets_mm**2 * d2).sum()).clamp_min(1e-12)
    return torch.stack([g, d1, d2])


class DotFilter(nn.Module):
    """Append Li's multi-scale dot response to a 2.5D input.

    Args:
        context: neighbours on each side of the centre slice (``k``; the input has ``2k+1`` channels).
        radii_mm: blob radii the response is tuned to, mm (σ = r / √3 at each).
        voxel_mm: (in-plane row, in-plane column, slice) spacing of the network's grid, mm.
        gain: multiplies the response (inputs are window-normalised to ~[0, 1]).

    Input ``(N, 2k+1, H, W)`` float; output ``(N, 2k+2, H, W)``: the input channels, then the response.
    """

    def __init__(self, context: int, radii_mm: Sequence[float] = (4.0, 6.0),
                 voxel_mm: Sequence[float] = (2.0, 2.0, 3.0), gain: float = 10.0) -> None:
        super().__init__()
        if context < 1:
            raise ValueError("DotFilter needs 2.5D input (context >= 1)")
        self.gain = float(gain)
        self.sigmas = [float(r) / math.sqrt(3) for r in radii_mm]
        vx, vy, vz = (float(v) for v in voxel_mm)
        zoff = torch.arange(-context, context + 1, dtype=torch.float64) * vz
        for i, s in enumerate(self.sigmas):
            hx = max(1, math.ceil(3 * s / vx))
            hy = max(1, math.ceil(3 * s / vy))
            kx = _gauss_derivs(torch.arange(-hx, hx + 1, dtype=torch.float64) * vx, s)
            ky = _gauss_derivs(torch.arange(-hy, hy + 1, dtype=torch.float64) * vy, s)
            kz = _gauss_derivs(zoff, s)
            self.register_buffer(f"kx{i}", kx.float(), persistent=False)
            self.register_buffer(f"ky{i}", ky.float(), persistent=False)
            self.register_buffer(f"kz{i}", kz.float(), persistent=False)

    def _hessian(self, x: torch.Tensor, i: int) -> tuple[torch.Tensor, ...]:
        """Scale-normalised Hessian ``(hxx, hyy, hzz, hxy, hxz, hyz)`` at the centre slice, each ``(N, H, W)``."""
        kx, ky, kz = getattr(self, f"kx{i}"), getattr(self, f"ky{i}"), getattr(self, f"kz{i}")
        z = F.conv2d(x, kz[:, :, None, None])  # (N, 3, H, W): smoothed, 1st and 2nd derivative across slices
        # the six entries as channels, then one grouped convolution along H and one along W
        order_z, order_x, order_y = (0, 0, 2, 0, 1, 1), (2, 0, 0, 1, 1, 0), (0, 2, 0, 1, 0, 1)
        h = z[:, list(order_z)]
        px, py = kx.shape[1] // 2, ky.shape[1] // 2
        h = F.conv2d(F.pad(h, (0, 0, px, px), mode="replicate"), kx[list(order_x), None, :, None], groups=6)
        h = F.conv2d(F.pad(h, (py, py, 0, 0), mode="replicate"), ky[list(order_y), None, None, :], groups=6)
        h = h * (self.sigmas[i] ** 2)
        return tuple(h[:, j] for j in range(6))

    @staticmethod
    def extreme_eigenvalues(hxx, hyy, hzz, hxy, hxz, hyz) -> tuple[torch.Tensor, torch.Tensor]:
        """Smallest and largest eigenvalue of symmetric 3×3 matrices given by their entries (closed form,
        Smith, *Commun. ACM* 4, 168, 1961): elementwise, much faster than a batched ``eigvalsh``."""
        q = (hxx + hyy + hzz) / 3
        p1 = hxy**2 + hxz**2 + hyz**2
        axx, ayy, azz = hxx - q, hyy - q, hzz - q
        p = torch.sqrt(((axx**2 + ayy**2 + azz**2 + 2 * p1) / 6).clamp_min(1e-20))
        det = (axx * (ayy * azz - hyz**2) - hxy * (hxy * azz - hyz * hxz) + hxz * (hxy * hyz - ayy * hxz))
        phi = torch.acos((det / (2 * p**3)).clamp(-1, 1)) / 3
        return q + 2 * p * torch.cos(phi + 2 * math.pi / 3), q + 2 * p * torch.cos(phi)

    def response(self, x: torch.Tensor) -> torch.Tensor:
        """Dot response at the centre slice: float32 ``(N, 1, H, W)``, >= 0."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            best = torch.zeros_like(x[:, 0])
            for i in range(len(self.sigmas)):
                big, small = self.extreme_eigenvalues(*self._hessian(x, i))  # most / least negative
                r = torch.where(small < 0, small**2 / (-big).clamp_min(1e-6), torch.zeros_like(small))
                best = torch.maximum(best, r)
        return best[:, None] * self.gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.response(x).to(x.dtype)], 1)

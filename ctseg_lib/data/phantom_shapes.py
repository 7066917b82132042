"""Building blocks of the synthetic CT phantoms: a millimetre grid, distance fields, bones, CT noise.

Every phantom is drawn in **canonical RAS+ voxel space** ``(X, Y, Z)`` (see
:mod:`ctseg_lib.data.nifti`): ``x`` (mm) grows towards the patient's Right, ``y`` towards Anterior,
``z`` towards Superior.  Coordinates are *anatomical*: the body axis is at ``x = y = 0``, so shapes are
written in mm and do not depend on the voxel size.  Speed comes from evaluating each shape only on
the voxels of its bounding box (:meth:`Grid.box`) and from drawing z-invariant cross-sections in 2D
and broadcasting them along ``z``; only :func:`form_image` filters the whole volume.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Grid:
    """Voxel-centre coordinates in mm: ``x`` (X,), ``y`` (Y,), ``z`` (Z,), float32."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.x.size, self.y.size, self.z.size)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(abs(a[1] - a[0])) if a.size > 1 else 1.0 for a in (self.x, self.y, self.z))

    def box(self, lo, hi) -> tuple[slice, slice, slice] | None:
        """Voxel slices covering the world box ``[lo, hi]`` (mm), or None when it misses the grid."""
        out = []
        for a, l, h in zip((self.x, self.y, self.z), lo, hi):
            i0, i1 = np.searchsorted(a, l, "left"), np.searchsorted(a, h, "right")
            if i1 <= i0:
                return None
            out.append(slice(int(i0), int(i1)))
        return tuple(out)  # type: ignore[return-value]

    def coords(self, sl) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable ``(x[:,None,None], y[None,:,None], z[None,None,:])`` of a sub-box."""
        return self.x[sl[0], None, None], self.y[None, sl[1], None], self.z[None, None, sl[2]]


class Canvas:
    """The ideal (noise-free) HU map and the label map being painted, both ``(X, Y, Z)``."""

    def __init__(self, shape: tuple[int, int, int], hu: float = -1000.0) -> None:
        self.hu = np.full(shape, hu, np.float32)
        self.lab = np.zeros(shape, np.uint8)

    def paint(self, sl, mask: np.ndarray, value, label: int | None = 0) -> None:
        """Set HU (scalar or array shaped like the sub-box) where ``mask``; later paint wins.

        ``label=0`` erases labels under the new tissue (e.g. a kidney drawn over the liver),
        ``label=None`` keeps them (texture added inside an organ).
        """
        sub = self.hu[sl]
        mask = np.broadcast_to(mask, sub.shape)
        sub[mask] = value[mask] if np.ndim(value) else value
        if label is not None:
            self.lab[sl][mask] = label


def organ_streams(rng: np.random.Generator) -> Callable[[str], np.random.Generator]:
    """Independent random streams, one per named structure: ``stream = organ_streams(rng); stream("liver")``.

    One draw from ``rng`` seeds a root; ``stream(name)`` is ``default_rng([root, crc32(name)])``, the
    same generator for the same name however many other structures draw before it.  So adding an
    organ, or changing how many numbers one organ draws, leaves every other structure of every
    phantom as it was (with one shared generator, any change reshuffles everything after it).
    """
    root = int(rng.integers(2**63))

    def stream(name: str) -> np.random.Generator:
        return np.random.default_rng([root, zlib.crc32(name.encode())])

    return stream


def ellipsoid(g: Grid, c, r, angle: float = 0.0):
    """``(slices, q)``: ``q = Σ((p-c)/r)²`` (≤ 1 inside) on the box; rotated by ``angle`` rad about z."""
    ext = max(r[0], r[1]) if angle else None
    lo = [c[0] - (ext or r[0]), c[1] - (ext or r[1]), c[2] - r[2]]
    hi = [c[0] + (ext or r[0]), c[1] + (ext or r[1]), c[2] + r[2]]
    sl = g.box(lo, hi)
    if sl is None:
        return None, None
    x, y, z = g.coords(sl)
    dx, dy = x - c[0], y - c[1]
    if angle:
        ca, sa = np.cos(angle), np.sin(angle)
        dx, dy = ca * dx + sa * dy, -sa * dx + ca * dy
    return sl, (dx / r[0]) ** 2 + (dy / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2


def capsule(g: Grid, p0, p1, r: float):
    """``(slices, d)``: distance (mm) to the segment ``p0→p1`` on its box (tube of radius ``r``)."""
    p0, p1 = np.asarray(p0, np.float32), np.asarray(p1, np.float32)
    sl = g.box(np.minimum(p0, p1) - r, np.maximum(p0, p1) + r)
    if sl is None:
        return None, None
    x, y, z = g.coords(sl)
    d = p1 - p0
    t = ((x - p0[0]) * d[0] + (y - p0[1]) * d[1] + (z - p0[2]) * d[2]) / max(float(d @ d), 1e-6)
    t = np.clip(t, 0.0, 1.0)
    return sl, np.sqrt((x - p0[0] - t * d[0]) ** 2 + (y - p0[1] - t * d[1]) ** 2 + (z - p0[2] - t * d[2]) ** 2)


def smooth_noise(rng: np.random.Generator, shape, cell_vox) -> np.ndarray:
    """Smooth random field ≈ N(0, 1) with features about ``cell_vox`` voxels across (float32).

    Coarse white noise, linearly upsampled: much cheaper than low-pass filtering a full volume.
    """
    coarse = [max(2, int(np.ceil(s / c)) + 1) for s, c in zip(shape, cell_vox)]
    f = ndimage.zoom(rng.standard_normal(coarse).astype(np.float32), [s / c for s, c in zip(shape, coarse)],
                     order=1, grid_mode=True, mode="nearest")[: shape[0], : shape[1], : shape[2]]
    # Normalise by the sample std only when it is a reliable estimate; linear interpolation of
    # white noise has std ≈ 0.6 on average (a one-voxel box would otherwise be divided by ~0).
    return f / (max(float(f.std()), 0.3) if f.size >= 1000 else np.float32(0.6))


def body_section(g: Grid, a: float, b: float, yc: float = 0.0, p: float = 2.3) -> np.ndarray:
    """Normalised 2D radius ``(X, Y)`` of a super-ellipse with half-axes ``a``, ``b`` (1 on the edge)."""
    x, y = g.x[:, None], g.y[None, :] - yc
    return (np.abs(x / a) ** p + np.abs(y / b) ** p) ** (1.0 / p)


def posterior_angle(g: Grid, a: float, b: float, yc: float = 0.0) -> np.ndarray:
    """Angle (rad) around the body axis in 2D: 0 at the spine (posterior), π at the sternum."""
    return np.arctan2(np.abs(g.x[:, None]) / a, -(g.y[None, :] - yc) / b)


def paint_spine(cv: Canvas, g: Grid, yv: float, rv: float, rng: np.random.Generator,
                z_min: float = -1e4) -> None:
    """Vertebrae (cortical shell 700-1000 HU, cancellous 150-300 HU) with discs, canal and arches.

    Vertebral body of radius ``rv`` mm centred at ``(0, yv)``; levels repeat every ~30 mm
    (body ≈ 24 mm + disc ≈ 7 mm, adult lumbar/thoracic proportions); none below ``z_min`` mm.
    """
    sl = g.box((-50, yv - rv - 55, z_min), (50, yv + rv + 3, 1e4))
    if sl is None:
        return
    x, y, z = g.coords(sl)
    x, y, z = x[..., 0], y[..., 0], z[0, 0]
    period, disc_h = rng.uniform(28, 34), rng.uniform(6, 9)
    zm = (z - rng.uniform(0, period)) % period
    vert = (zm > disc_h)[None, None, :]
    arch_z = ((zm > disc_h + 3) & (zm < period - 4))[None, None, :]
    r_vb = np.hypot(x, (y - yv) * 1.1)
    yc = yv - rv - 10
    r_c = np.hypot(x, y - yc)
    cortical, cancellous = rng.uniform(700, 1000), rng.uniform(150, 300)
    body = (r_vb < rv)[..., None]
    cv.paint(sl, body & ~vert, rng.uniform(80, 100))  # intervertebral disc
    cv.paint(sl, body & vert, cancellous)
    cv.paint(sl, (body & vert & (r_vb > rv - 2.2)[..., None]), cortical)
    arch = (r_c >= 8) & (r_c < 14.5)
    # spinous process tapering backwards; transverse processes angled slightly backwards
    spinous = (np.abs(x) < 3.5 - 0.06 * (yc - y)) & (y < yc - 10) & (y > yc - 38)
    transverse = (np.abs(y - yc + 0.25 * np.abs(x)) < 3.5) & (np.abs(x) < 30) & (np.abs(x) > 10)
    post = (arch | spinous | transverse)[..., None] & arch_z
    cv.paint(sl, post, 0.5 * (cortical + cancellous))
    cv.paint(sl, np.broadcast_to((r_c < 8)[..., None], post.shape), rng.uniform(5, 20))  # CSF in the canal


def paint_ribs(cv: Canvas, g: Grid, rho: np.ndarray, reff: np.ndarray, phi: np.ndarray, z_post, drop: float,
               phi_max, rng: np.random.Generator, depth: float = 6.0) -> None:
    """Ribs: tubes (≈13×7 mm section) that follow the chest wall and slope down anteriorly.

    ``rho``/``reff``/``phi``: 2D normalised radius, its scale (mm) and :func:`posterior_angle` of the
    ellipse the ribs follow; rib ``k`` leaves the spine at height ``z_post[k]`` and ends at
    angle ``phi_max[k]`` (lower ribs are shorter: the costal margin).
    """
    dr = (rho - 1.0) * reff + depth  # mm from the rib centre line, radially
    ring = np.abs(dr) < 4.0
    ii, jj = np.nonzero(ring)
    dr_r, phi_r = dr[ring], phi[ring]
    cortical, cancellous = rng.uniform(700, 1000), rng.uniform(200, 350)
    for z0, pmax in zip(z_post, phi_max):
        zk = z0 - drop * (1 - np.cos(phi_r)) / 2
        near = np.abs(zk - g.z.mean()) < np.ptp(g.z) / 2 + 10
        if not near.any():
            continue
        e = ((g.z[None, :] - zk[:, None]) / 6.5) ** 2 + (dr_r[:, None] / 3.6) ** 2
        ok = (phi_r > 0.35) & (phi_r < pmax)
        p, kz = np.nonzero((e <= 1.0) & ok[:, None])
        cv.hu[ii[p], jj[p], kz] = np.where(e[p, kz] > 0.4, cortical, cancellous)
        cv.lab[ii[p], jj[p], kz] = 0


def paint_table(cv: Canvas, g: Grid, y_back: float, rng: np.random.Generator) -> None:
    """The scanner couch under the patient: foam mattress (≈ -900 HU) on a curved carbon shell."""
    x, y = g.x[:, None], g.y[None, :]
    top = y_back - rng.uniform(2, 10) + x ** 2 / 900.0
    pad = (y < top) & (y > top - 25) & (np.abs(x) < 220)
    shell = (y < top - 25) & (y > top - 29) & (np.abs(x) < 230)
    cv.hu[pad] = np.where(cv.hu[pad] < -950, -900.0, cv.hu[pad])
    cv.hu[shell] = rng.uniform(100, 300)


def form_image(cv: Canvas, g: Grid, rng: np.random.Generator, noise_sd: float, fov_radius: float,
               blur: float | None = None, noise_sigma: float = 0.8, padding: int = -1024) -> np.ndarray:
    """Ideal HU map → reconstructed CT, int16 ``(X, Y, Z)``.

    Partial-volume blur (Gaussian, σ = ``blur`` voxel in-plane, drawn from 0.6-0.9 when None, 0.5
    along z) followed by spatially correlated noise (white noise low-passed with σ = ``noise_sigma``
    voxel, rescaled to ``noise_sd`` HU): CT noise is correlated through the reconstruction kernel
    (Hsieh, *Computed Tomography*, ch. 5), a sharper kernel gives finer, a softer one coarser grain.
    Values are clipped to the 12-bit range [-1024, 3071] that CT scanners store; voxels outside the
    circular reconstruction field of view get ``padding`` (-1024, or the -2048 / -3024 that many
    scanners write there).
    """
    s = rng.uniform(0.6, 0.9) if blur is None else blur
    img = ndimage.gaussian_filter(cv.hu, (s, s, 0.5), mode="nearest")
    noise = ndimage.gaussian_filter(rng.standard_normal(cv.hu.shape, dtype=np.float32),
                                    (noise_sigma, noise_sigma, noise_sigma / 2))
    img += noise * np.float32(noise_sd / max(float(noise[::4, ::4].std()), 1e-6))
    img = np.clip(np.rint(img), -1024, 3071)
    outside = np.hypot(g.x[:, None] - g.x.mean(), g.y[None, :] - g.y.mean()) > fov_radius
    img[outside] = padding
    return img.astype(np.int16)

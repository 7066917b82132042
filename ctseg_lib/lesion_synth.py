"""Synthetic nodules: a new, never-seen lesion drawn into a training item.

Copy-paste (:mod:`ctseg_lib.lesion_paste`) moves the ~16 training tumours of a lung run around, but
they stay the same 16 shapes and sizes, and small nodules (< 1.5 ml, ~14 mm), of which a training set
holds a handful, are among the ones a lung model misses on fresh scans (with tumours attached to the
chest wall or mediastinum; README).  Lesion synthesis draws a
*new* lesion every time, of any size, so the network sees many small nodules (Hu et al., CVPR 2023,
"Label-free liver tumor segmentation", train liver-tumour networks on synthetic tumours only;
simulated nodules as training data for detection systems are older, e.g. Litjens et al., MICCAI 2010,
"Simulation of nodules and diffuse infiltrates in chest radiographs using CT templates").
What is drawn and from where:

* **shape**: an ellipsoid with semi-axes ``r * U(0.8, 1.2)`` each, turned by a random in-plane
  angle; the equivalent diameter ``2 r`` log-uniform in ``diameter_mm`` (default 6–20 mm: under
  6 mm the book's lung postprocessing removes a component anyway, ``min_size:113``; 30 mm is where
  a nodule becomes a mass, Fleischner glossary, Hansell et al., Radiology 2008);
* **where along z**: the centre lies anywhere within the centre slice's thickness, so the lesion is
  cut off-centre as real ones are; each 2.5D channel gets its own cross-section;
* **partial volume**: the ellipsoid's occupancy of each voxel, averaged over 3 positions through the
  slice thickness and with a one-voxel in-plane ramp, blends lesion and background;
* **intensity and texture**: the mean and sd of a *training* lesion's voxels (drawn uniformly from
  :func:`lesion_statistics`), so the synthetic lesion has the contrast the data has, not one typed
  into the code;
* **placement**: the same rule as copy-paste (:func:`ctseg_lib.lesion_paste.fits_here`): the ring
  around the footprint on the centre slice must carry the same majority label as that training
  lesion's ring (lung nodule: background; liver tumour: liver) with a mean intensity within
  ``max(2 sd, 0.05)`` of it, and the spot must hold no voxel of the lesion's class yet.  One more
  rule, as a synthetic lesion has no surroundings of its own: the mean of what it covers must differ
  from it by at least half its contrast to the ring (and at least 3 texture sd and 0.05), or a
  nodule drawn onto the heart would be a label on nothing visible.  Up to ``tries`` positions;
  otherwise the item stays as it was.

The label on the centre slice becomes ``cl`` where the occupancy is at least one half.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .lesion_paste import MIN_RING_TOLERANCE, fits_here

#: Default range of equivalent diameters (mm) drawn log-uniformly.
DIAMETER_MM = (6.0, 20.0)


@dataclass(frozen=True)
class LesionStats:
    """Intensities of one training lesion (normalised units): mean of its voxels, sd inside it (one
    voxel in from its edge: texture, not partial volume), and the 2-voxel ring around it on its slices."""

    mean: float
    sd: float
    ring_mean: float
    ring_sd: float
    ring_label: int = 0


def lesion_statistics(image: np.ndarray, label: np.ndarray, coords: np.ndarray) -> LesionStats:
    """:class:`LesionStats` of the lesion at ``coords`` (``(n, 3)`` int voxels ``(x, y, z)``) in a
    preprocessed case (``image`` float32 ``(X, Y, Z)``, ``label`` ``(X, Y, Z)``); the ring is the
    in-plane 2-voxel dilation of the lesion minus the lesion's class, on the lesion's slices, and
    ``ring_label`` its majority label (lung nodule: 0, liver tumour: 1)."""
    lo = np.maximum(coords.min(0) - 3, 0)
    hi = np.minimum(coords.max(0) + 4, image.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    m = np.zeros(tuple(hi - lo), bool)
    m[tuple((coords - lo).T)] = True
    lab = np.asarray(label[box])
    cl = int(np.bincount(lab[m]).argmax())
    ring = ndimage.binary_dilation(m, np.ones((5, 5, 1), bool)) & (lab != cl)
    img = np.asarray(image[box], dtype=np.float64)
    inner = ndimage.binary_erosion(m, np.ones((3, 3, 1), bool))  # texture without the partial-volume edge
    vals, rv = img[m], img[ring] if ring.any() else img[m]
    sd = float(img[inner].std()) if inner.sum() > 1 else float(vals.std())
    ring_label = int(np.bincount(lab[ring]).argmax()) if ring.any() else 0
    return LesionStats(float(vals.mean()), sd, float(rv.mean()), float(rv.std()), ring_label)


def occupancy(shape: tuple[int, int], centre: Sequence[float], axes_mm: Sequence[float], angle: float,
              spacing: Sequence[float], dz_mm: float) -> np.ndarray:
    """Fraction (0–1) of each in-plane voxel of a slice filled by an ellipsoid, float32 ``shape``.

    Args:
        shape: ``(PX, PY)`` of the slice (patch).
        centre: in-plane centre in voxels ``(cx, cy)``.
        axes_mm: semi-axes ``(a, b, c)`` in mm (``c`` along z).
        angle: in-plane rotation of the ``a`` axis in radians.
        spacing: voxel size ``(sx, sy, sz)`` in mm.
        dz_mm: distance in mm from the ellipsoid's centre to this slice's centre.

    The slice is sampled at 3 depths across its thickness ``sz``; in-plane the edge is a ramp one
    voxel wide (the voxel's fractional coverage to first order).
    """
    sx, sy, sz = (float(s) for s in spacing)
    a, b, c = (float(v) for v in axes_mm)
    u = (np.arange(shape[0]) - centre[0])[:, None] * sx
    v = (np.arange(shape[1]) - centre[1])[None, :] * sy
    cu, sv = np.cos(angle) * u + np.sin(angle) * v, -np.sin(angle) * u + np.cos(angle) * v
    rho2 = (cu / a) ** 2 + (sv / b) ** 2  # in-plane normalised radius squared
    pix = 0.5 * (sx + sy)
    out = np.zeros(shape, np.float64)
    for t in (-1 / 3, 0.0, 1 / 3):
        w2 = ((dz_mm + t * sz) / c) ** 2
        if w2 >= 1:
            continue
        # in-plane radius (mm) of the cross-section along each voxel's direction, and the distance
        # of the voxel centre to the edge in voxels: positive inside
        scale = np.sqrt(1 - w2)
        rho = np.sqrt(rho2) / scale
        r_dir = np.minimum(a, b) * scale  # conservative edge scale for the ramp
        out += np.clip((1 - rho) * r_dir / pix + 0.5, 0, 1)
    return (out / 3).astype(np.float32)


def synth_lesion(x: np.ndarray, y: np.ndarray, spacing: Sequence[float], stats: LesionStats, cl: int,
                 context: int, rng: np.random.Generator, diameter_mm: Sequence[float] = DIAMETER_MM,
                 tries: int = 10) -> bool:
    """Draw one synthetic lesion into the item ``(x, y)`` in place; True if it was drawn.

    Args:
        x: the item's image, float32 ``(2*context + 1, PX, PY)`` (normalised intensities);
            channel ``j`` is slice ``z - context + j``.
        y: the item's labels, int ``(PX, PY)`` (the centre slice).
        spacing: voxel size ``(sx, sy, sz)`` in mm of the item's case.
        stats: intensities of the training lesion whose contrast and surroundings it copies.
        cl: the class written into ``y``.
        context: 2.5D neighbours on each side (0 = 2D).
        rng: random generator (size, shape, position and texture are drawn from it).
        diameter_mm: ``(low, high)`` equivalent diameter in mm, drawn log-uniformly.
        tries: random positions tried before giving up.
    """
    lo_d, hi_d = (float(v) for v in diameter_mm)
    if not 0 < lo_d <= hi_d:
        raise ValueError(f"diameter_mm must be 0 < low <= high, got {tuple(diameter_mm)}")
    r = 0.5 * float(np.exp(rng.uniform(np.log(lo_d), np.log(hi_d))))
    axes = r * rng.uniform(0.8, 1.2, size=3)
    angle = float(rng.uniform(0, np.pi))
    z0 = float(rng.uniform(-0.5, 0.5)) * float(spacing[2])  # centre's offset from the centre slice (mm)
    px, py = y.shape
    reach = np.ceil(axes[:2].max() / np.asarray(spacing[:2], float)).astype(int) + 3
    if px <= 2 * reach[0] or py <= 2 * reach[1]:
        return False
    # what it covers must differ (a visible lesion): by half its contrast to its ring, 3 sd, 0.05 at least
    contrast = max(0.5 * abs(stats.ring_mean - stats.mean), 3 * stats.sd, MIN_RING_TOLERANCE)
    for _ in range(tries):
        cx, cy = rng.integers(reach[0], px - reach[0]), rng.integers(reach[1], py - reach[1])
        occ = [occupancy(y.shape, (cx, cy), axes, angle, spacing, (j - context) * float(spacing[2]) - z0)
               for j in range(2 * context + 1)]
        core = occ[context] >= 0.5
        if not core.any():
            continue
        ring = ndimage.binary_dilation(core, np.ones((5, 5), bool)) & ~core
        if (not fits_here(x[context], y, core, ring, cl, stats.ring_label, stats.ring_mean, stats.ring_sd)
                or abs(float(x[context][core].mean()) - stats.mean) < contrast):
            continue
        for j, f in enumerate(occ):
            if f.any():
                lesion = stats.mean + stats.sd * rng.standard_normal(f.shape).astype(np.float32)
                x[j] = (1 - f) * x[j] + f * lesion
        y[core] = cl
        return True
    return False

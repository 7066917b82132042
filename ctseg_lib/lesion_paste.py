"""Lesion copy-paste: one more tumour, taken from another training scan, in a training item.

With ~1 tumour per lung scan, 16 training scans show the network 16 tumours, each always in the same
place with the same neighbours: too few to learn what a tumour looks like wherever it sits.
Copy-paste augmentation (Ghiasi et al., CVPR 2021, "Simple Copy-Paste"; for tumours in CT:
Yang et al., MICCAI 2021, "TumorCP") cuts a labelled lesion out of one training image and pastes it
into another, so every lesion is seen in many contexts.  This module does it for the 2D / 2.5D items
of :class:`ctseg_lib.datasets.SliceDataset`:

* a lesion (a connected component of a foreground class, from
  :func:`ctseg_lib.datasets.lesion_voxels`) is drawn, then one of its slices;
* the lesion's voxels on that slice and on its 2.5D neighbours, grown by one voxel in-plane (so the
  partial-volume edge comes along), are copied channel by channel into the item at a random
  position; the label there becomes the lesion's class on the centre slice;
* only where it fits the way it was found (TumorCP pastes a tumour into the same organ): the
  target's ring around the lesion must carry the same majority label as the source's ring (lung
  → background, liver tumour → liver), its mean intensity must be within ``max(2 sd, 0.05)`` of
  the source ring's (sd of the source ring, normalised units), and the spot must hold no voxel of
  that class yet.  Up to ``tries`` random positions are tried; if none fits, the item is left as it
  was.

The rule is loose on purpose: a tumour that touched the mediastinum may land on the chest wall.
Ghiasi et al. found random placement as good as modelling the context; here a stricter rule (each
quartile of the ring within a tenth of the intensity range) let fewer tumours find a place and found
fewer fresh tumours on the development phantoms (``configs/lung_25d_book.yaml``).

Intensities are pasted as they were (no blending): the windows and normalisation of the
preprocessed cases are shared by every case, so a lesion keeps its contrast to lung air.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: In-plane 8-neighbourhood used to grow a lesion by one voxel (its partial-volume edge).
_SQUARE = np.ones((3, 3), bool)
#: Least tolerance of the ring-intensity match (normalised units; with a window, 0.05 of its width).
MIN_RING_TOLERANCE = 0.05


def fits_here(x: np.ndarray, y: np.ndarray, spot: np.ndarray, ring: np.ndarray, cl: int, ring_label: int,
              ring_mean: float, ring_sd: float) -> bool:
    """The placement rule of copy-paste and of lesion synthesis (:mod:`ctseg_lib.lesion_synth`): may a
    lesion of class ``cl`` go on ``spot`` with the ring ``ring`` around it (both bool masks over the centre
    slice ``x``, float32, and its labels ``y``)?  Yes if neither holds ``cl`` yet, the ring's majority label
    is ``ring_label`` and its mean intensity is within ``max(2 ring_sd, MIN_RING_TOLERANCE)`` of
    ``ring_mean`` -- those of the ring the source lesion was found in."""
    if (y[spot | ring] == cl).any() or np.bincount(y[ring].astype(np.int64)).argmax() != ring_label:
        return False
    return abs(float(x[ring].mean()) - ring_mean) <= max(2.0 * ring_sd, MIN_RING_TOLERANCE)


def paste_lesion(x: np.ndarray, y: np.ndarray, image: np.ndarray, label: np.ndarray, coords: np.ndarray,
                 cl: int, context: int, rng: np.random.Generator, tries: int = 10) -> bool:
    """Paste one lesion into the item ``(x, y)`` in place; True if it was pasted.

    Args:
        x: the item's image, float32 ``(2*context + 1, PX, PY)`` (normalised intensities).
        y: the item's labels, int ``(PX, PY)`` (the centre slice).
        image: the source case's preprocessed image ``(X, Y, Z)``.
        label: the source case's labels ``(X, Y, Z)``.
        coords: the lesion's voxels in the source case, int ``(n, 3)`` as ``(x, y, z)``.
        cl: the lesion's class (the label written into ``y``).
        context: 2.5D neighbours on each side (0 = 2D); channel ``j`` of ``x`` is slice
            ``z - context + j`` (clamped at the volume's ends, as
            :func:`ctseg_lib.datasets.context_indices`).
        rng: random generator (the lesion slice and the positions are drawn from it).
        tries: random positions tried before giving up.
    """
    from .datasets import context_indices

    coords = np.asarray(coords)
    z_src = int(rng.choice(np.unique(coords[:, 2])))
    zs = context_indices(image.shape[2], [z_src], context)[0]
    near = coords[np.isin(coords[:, 2], zs)]
    lo = np.maximum(near[:, :2].min(axis=0) - 3, 0)
    hi = np.minimum(near[:, :2].max(axis=0) + 4, image.shape[:2])
    size = hi - lo
    if size[0] > x.shape[1] or size[1] > x.shape[2]:
        return False
    masks = np.zeros((len(zs), *size), bool)
    for j, z in enumerate(zs):
        on = near[near[:, 2] == z]
        masks[j, on[:, 0] - lo[0], on[:, 1] - lo[1]] = True
    centre = masks[context]
    grown = np.stack([ndimage.binary_dilation(m, _SQUARE) for m in masks])
    ring = ndimage.binary_dilation(centre, _SQUARE, iterations=2) & ~centre
    block = np.moveaxis(np.asarray(image[lo[0]:hi[0], lo[1]:hi[1]][:, :, zs], dtype=np.float32), 2, 0)
    src_ring = block[context][ring]
    src_label = np.asarray(label[lo[0]:hi[0], lo[1]:hi[1], z_src])[ring]
    ring_label = int(np.bincount(src_label.astype(np.int64)).argmax())
    for _ in range(tries):
        ox, oy = int(rng.integers(0, x.shape[1] - size[0] + 1)), int(rng.integers(0, x.shape[2] - size[1] + 1))
        tx, ty = x[:, ox:ox + size[0], oy:oy + size[1]], y[ox:ox + size[0], oy:oy + size[1]]
        if not fits_here(tx[context], ty, centre, ring, cl, ring_label, float(src_ring.mean()), float(src_ring.std())):
            continue
        tx[grown] = block[grown]
        ty[centre] = cl
        return True
    return False

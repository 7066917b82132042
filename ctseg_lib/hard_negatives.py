"""Hard-negative mining: the model's own false positives on its training scans become training samples.

A lung phantom holds one tumour among thousands of vessel cross-sections, and the lung recipe draws
half of its patches on the tumour.  The random other half rarely lands on the few vessel segments
that look like a nodule (a thick branch cut obliquely, a branching point blurred by thick slices),
so the network keeps calling them tumour — on fresh scans *and on its own training scans* (the book
model of chapter 9: 3.5 false-positive lesions per training scan).  Hard-negative mining finds those
places and shows them again, labelled background, until the network stops making them: the
"bootstrapping" of Sung & Poggio (1998) for face detection, the online hard-example mining of
Shrivastava et al. (CVPR 2016), and the false-positive-reduction stage of lung-nodule detectors
(Setio et al., Medical Image Analysis 42, 2017).

The rule here (2D / 2.5D training, :class:`ctseg_lib.datasets.SliceDataset`):

* every ``data.hard_every`` epochs the current network predicts every *training* volume
  (preprocessed grid, no test-time augmentation) and :func:`false_positive_components` lists the
  predicted lesions of each oversampled class (``fg_classes``) that touch no reference voxel of
  that class — false-positive lesions in the sense of :mod:`ctseg_lib.lesions`, not boundary
  errors around a true lesion;
* until the next mining, a ``data.hard_fraction`` share of the items that are not forced onto
  foreground is centred on a voxel of such a component (a component drawn uniformly, then one of
  its voxels, as :class:`~ctseg_lib.datasets.SliceDataset` draws lesions), the rest as before.

Only training cases are mined (validation and test stay unseen).  The pool is written to
``hard_negatives.npz`` in the run folder, so a resumed run continues with the pool it had.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .errors import CTSegError
from .inference import predict_volume
from .io import atomic_write
from .lesions import label_lesions
from .preprocessing import Preprocessed

#: Voxel coordinates kept per mined component (a random subset of larger ones).
MAX_VOXELS_PER_COMPONENT = 200

#: One mined false positive: ``(case index, (n, 3) int32 voxel coordinates (x, y, z))``.
HardNegative = tuple[int, np.ndarray]


def false_positive_components(pred: np.ndarray, label: np.ndarray, classes: Sequence[int],
                              max_voxels: int = MAX_VOXELS_PER_COMPONENT,
                              rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """The predicted lesions that touch no reference voxel of their class.

    Args:
        pred: integer label map ``(X, Y, Z)`` (the network's argmax).
        label: reference label map, same shape.
        classes: the label values whose false positives count (e.g. ``[1]`` lung tumour, ``[2]``
            liver tumour); components are 26-connected (:func:`ctseg_lib.lesions.label_lesions`).
        max_voxels: keep at most this many voxel coordinates per component (random subset).
        rng: for the subset; default a fixed seed.

    Returns:
        One int32 ``(n, 3)`` array of ``(x, y, z)`` voxel coordinates per false-positive component.
    """
    if pred.shape != label.shape:
        raise CTSegError(f"prediction shape {pred.shape} differs from label shape {label.shape}")
    rng = rng or np.random.default_rng(0)
    out: list[np.ndarray] = []
    for c in classes:
        comps, n = label_lesions(pred == c, connectivity=3)
        if n == 0:
            continue
        hit = np.zeros(n + 1, dtype=bool)
        hit[np.unique(comps[np.asarray(label) == c])] = True  # components that overlap the reference
        coords = np.argwhere(comps > 0)
        owner = comps[tuple(coords.T)]
        order = np.argsort(owner, kind="stable")
        coords, owner = coords[order], owner[order]
        starts = np.searchsorted(owner, np.arange(1, n + 2))
        for j in range(1, n + 1):
            if hit[j]:
                continue
            vox = coords[starts[j - 1]:starts[j]]
            if len(vox) > max_voxels:
                vox = vox[rng.choice(len(vox), max_voxels, replace=False)]
            out.append(vox.astype(np.int32))
    return out


def mine_hard_negatives(model: torch.nn.Module, cases: Sequence[Preprocessed], classes: Sequence[int],
                        context: int = 0, batch_size: int = 32, device: str | torch.device = "cpu",
                        seed: int = 0) -> list[HardNegative]:
    """Predict every case with ``model`` (2D / 2.5D, preprocessed grid) and return its false-positive
    components as ``(case index, coordinates)`` pairs; see :func:`false_positive_components`.

    Leaves the model in eval mode (the training loop switches it back every epoch).
    """
    rng = np.random.default_rng([int(seed), 7919])
    found: list[HardNegative] = []
    for k, case in enumerate(cases):
        if case.label is None:
            raise CTSegError(f"hard-negative mining needs labelled cases ({case.case_id or k} has no label)")
        pred = predict_volume(model, case.image, context, batch_size, device=device, return_probs=False)
        found += [(k, c) for c in false_positive_components(pred, case.label, classes, rng=rng)]
    return found


def save_hard_negatives(path: str | Path, items: Sequence[HardNegative], epoch: int) -> Path:
    """Write the pool (mined before ``epoch``) to ``path`` (.npz) atomically."""
    path = Path(path)
    cases = np.array([k for k, _ in items], dtype=np.int32)
    sizes = np.array([len(c) for _, c in items], dtype=np.int64)
    coords = np.concatenate([c for _, c in items]) if items else np.zeros((0, 3), np.int32)
    with atomic_write(path, "wb") as f:
        np.savez(f, cases=cases, sizes=sizes, coords=coords, epoch=np.int64(epoch))
    return path


def load_hard_negatives(path: str | Path) -> tuple[list[HardNegative], int]:
    """``(pool, epoch it was mined before)`` from :func:`save_hard_negatives`' file."""
    try:
        with np.load(path) as z:
            cases, sizes, coords, epoch = z["cases"], z["sizes"], z["coords"], int(z["epoch"])
    except (OSError, KeyError, ValueError) as e:
        raise CTSegError(f"cannot read the hard-negative pool: {e}", Path(path)) from e
    parts = np.split(coords, np.cumsum(sizes)[:-1]) if len(sizes) else []
    return [(int(k), p) for k, p in zip(cases, parts)], epoch

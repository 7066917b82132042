"""Patient-level splits and the PyTorch datasets that feed 2D / 2.5D slices and 3D patches.

* :func:`split_cases` splits by **patient** (case id), never by slice: neighbouring slices of one
  scan are nearly identical, so a slice-level split leaks the test set into training.
* :class:`SliceDataset` serves axial slices (optionally 2.5D stacks of neighbours as channels),
  :class:`PatchDataset` random 3D patches; both draw foreground-forced samples as nnU-Net does
  (Isensee et al. 2021: a third of each batch is forced to contain foreground).  Their sampling
  and the augmentation-free items are reproducible: item ``i`` of epoch ``e`` depends only on
  ``(seed, e, i)``; call :meth:`set_epoch` before each epoch (with ``persistent_workers=True`` the
  workers keep the epoch they were forked with, so leave it off).
* Speed: cases are memory-mapped arrays from :class:`ctseg_lib.cache.CaseCache`, opened once per
  case, stored slice-major, so an item is a few contiguous reads and no Python loop over voxels.
  Use ``DataLoader(ds, batch_size, shuffle=True, num_workers=2..8)`` with the default collate.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from .errors import CTSegError
from .io import write_json_atomic
from .lesion_paste import paste_lesion
from .lesion_synth import lesion_statistics, synth_lesion
from .lesions import label_lesions
from .preprocessing import Preprocessed

SPLITS = ("train", "val", "test")
#: How :class:`SliceDataset` draws its foreground-forced items: per slice or per lesion.
FG_SAMPLING = ("slice", "lesion")
#: Foreground voxel coordinates kept per class per case for 3D oversampling (nnU-Net keeps 10 000).
MAX_FG_LOCATIONS = 10000


# -- splits ------------------------------------------------------------------------------------
def split_cases(case_ids: Sequence[str], val_fraction: float = 0.2, test_fraction: float = 0.2,
                seed: int = 0) -> dict[str, list[str]]:
    """Seeded patient-level split → ``{"train": [...], "val": [...], "test": [...]}`` (each sorted).

    ``round(n * fraction)`` ids go to val and test, the rest to train (at least one).  The result
    depends only on the *set* of ids and the seed, not on their order.
    """
    ids = sorted(str(i) for i in case_ids)
    if len(set(ids)) != len(ids):
        raise CTSegError("split_cases: duplicate case ids")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise CTSegError(f"split fractions val={val_fraction}, test={test_fraction} must be in [0, 1) "
                         "and sum to < 1")
    n = len(ids)
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    if n - n_test - n_val < 1:
        raise CTSegError(f"split_cases: {n} case(s) leave no training case with val={val_fraction}, "
                         f"test={test_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    shuffled = [ids[i] for i in order]
    return {"test": sorted(shuffled[:n_test]), "val": sorted(shuffled[n_test:n_test + n_val]),
            "train": sorted(shuffled[n_test + n_val:])}


def save_split(split: dict[str, list[str]], path: str | Path) -> Path:
    """Write a split as JSON atomically."""
    _check_split(split, path)
    write_json_atomic(path, {k: list(split[k]) for k in SPLITS})
    return Path(path)


def load_split(path: str | Path) -> dict[str, list[str]]:
    """Read and validate a split JSON written by :func:`save_split`."""
    try:
        split = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CTSegError("split file not found", path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CTSegError(f"invalid split JSON ({e})", path) from None
    _check_split(split, path)
    return {k: list(split[k]) for k in SPLITS}


def _check_split(split: object, path: str | Path) -> None:
    if not isinstance(split, dict) or set(SPLITS) - set(split):
        raise CTSegError(f"a split must be an object with keys {list(SPLITS)}", path)
    seen: dict[str, str] = {}
    for name in SPLITS:
        ids = split[name]
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise CTSegError(f"split '{name}' must be a list of case-id strings", path)
        for i in ids:
            if i in seen:
                raise CTSegError(f"case {i!r} is in both '{seen[i]}' and '{name}' (data leakage)", path)
            seen[i] = name


# -- 2.5D stacks -------------------------------------------------------------------------------
def context_indices(num_slices: int, zs: Sequence[int] | np.ndarray, context: int) -> np.ndarray:
    """The slices a 2.5D network sees for each centre slice: int ``(len(zs), 2*context + 1)``.

    Row ``j`` is ``zs[j] - context .. zs[j] + context`` clamped to ``[0, num_slices - 1]``: at the
    volume's ends the border slice is repeated (edge replication, like ``np.pad(mode="edge")``) —
    zero slices would look like a sharp edge of air that never occurs inside a body.  The one
    place that defines 2.5D neighbours: training (:class:`SliceDataset`), inference
    (:func:`ctseg_lib.inference.predict_volume`) and :func:`stack_25d` all use it.
    """
    zs = np.asarray(zs, dtype=np.int64).reshape(-1)
    return np.clip(zs[:, None] + np.arange(-context, context + 1)[None, :], 0, num_slices - 1)


def stack_25d(volume: np.ndarray, z: int, k: int) -> np.ndarray:
    """``k`` axial slices centred on ``z`` as channels: ``(X, Y, Z)`` → float32 ``(k, X, Y)``.

    Channel ``j`` is slice ``z - k//2 + j``, clamped at the ends (:func:`context_indices`).
    """
    if k < 1 or k % 2 == 0:
        raise CTSegError(f"2.5D stack size k must be odd and >= 1, got {k}")
    n = volume.shape[2]
    if not 0 <= z < n:
        raise CTSegError(f"slice index {z} outside the volume's {n} slices")
    return np.asarray(np.moveaxis(volume, 2, 0)[context_indices(n, [z], k // 2)[0]], dtype=np.float32)


def slices_of_case(p: Preprocessed, context: int = 0, start: int = 0, stop: int | None = None) -> np.ndarray:
    """All 2.5D inputs of a case for inference: float32 ``(stop-start, 2*context+1, X, Y)``.

    Call in chunks (``start``/``stop``) for long scans to bound memory.
    """
    n = p.image.shape[2]
    zs = np.arange(start, n if stop is None else min(stop, n))
    return np.asarray(np.moveaxis(p.image, 2, 0)[context_indices(n, zs, context)], dtype=np.float32)


def _rng(*keys: int) -> np.random.Generator:
    # SeedSequence hashes the whole key list: (seed, epoch) and (seed, epoch, i) are independent streams.
    if any(int(k) < 0 for k in keys):
        raise CTSegError(f"seed and epoch must be non-negative integers, got {keys}")
    return np.random.default_rng([int(k) for k in keys])


def _fg_classes(cases: Sequence[Preprocessed], fg_classes: Sequence[int] | None) -> list[int]:
    if fg_classes is not None:
        return sorted(int(c) for c in fg_classes)
    present: set[int] = set()
    for c in cases:
        if c.label is not None:
            present.update(np.unique(np.asarray(c.label)).tolist())
    return sorted(present - {0})


def _draw_voxel(components: Sequence[tuple[int, np.ndarray]], rng: np.random.Generator
                ) -> tuple[int, list[int], int]:
    """A component uniformly from ``(case index, (n, 3) voxel coordinates)`` pairs, then one of its
    voxels: ``(case index, [x, y], z)`` (lesion-balanced foreground and hard-negative draws)."""
    k, coords = components[rng.integers(len(components))]
    *xy, z = (int(c) for c in coords[rng.integers(len(coords))])
    return int(k), xy, z


def _fill_value(case: Preprocessed) -> float:
    """Padding value for a crop that leaves the volume: the case's minimum (air / outside the body)."""
    return float(case.meta.get("image_min", np.min(case.image)))


# -- 2D / 2.5D slices --------------------------------------------------------------------------
def lesion_voxels(cases: Sequence[Preprocessed], by_class: dict[int, np.ndarray]
                  ) -> dict[int, list[tuple[int, np.ndarray]]]:
    """For each class in ``by_class``: one ``(case index, (n, 3) int32 voxel coordinates)`` per lesion.

    A lesion is a 26-connected component of the class, pieces within 2 voxels grouped
    (:func:`ctseg_lib.lesions.label_lesions` with ``merge_distance=2``, the grouping the book's
    lesion-wise evaluation uses).
    """
    out: dict[int, list[tuple[int, np.ndarray]]] = {cl: [] for cl in by_class}
    for k, case in enumerate(cases):
        lab = np.asarray(case.label)
        for cl in by_class:
            comp, _ = label_lesions(lab == cl, merge_distance=2)
            for _, where in sorted(ndimage.value_indices(comp, ignore_value=0).items()):
                out[cl].append((k, np.stack(where, axis=1).astype(np.int32)))
    return out


class SliceDataset(Dataset):
    """Axial slices (or in-plane patches of them) of preprocessed cases for 2D / 2.5D U-Nets.

    The sampling rules, the same for chapter 3 and for :func:`ctseg_lib.training.train`:

    * **empty slices** (no label > 0 at all) are downsampled: each epoch keeps a fresh random
      ``negative_keep`` share of them (the original project's negative-slice downsampling; most CT
      slices show no liver, let alone tumour).  A slice with liver but no tumour is *not* empty:
      the network must see liver without tumour to learn not to call every liver a tumour.
    * **foreground oversampling** (Isensee et al. 2021, nnU-Net): with probability ``fg_fraction``
      an item is forced to show foreground: a class is drawn uniformly from the ``fg_classes``
      present, then a slice containing it; with ``patch_size`` the patch is centred near a random
      voxel of that class (a random offset of up to a quarter patch, so the lesion is not always
      in the middle).  Otherwise the slice is drawn from the epoch's pool and the patch position
      is uniform.
    * ``fg_sampling="lesion"`` draws the forced items per **lesion** instead of per slice: a lesion
      (a 3D connected component of the class, pieces within 2 voxels grouped, as in
      :func:`ctseg_lib.lesions.label_lesions`) uniformly from all lesions of all cases, then one of
      its voxels.  Per slice, a 40 mm tumour spanning 16 slices is drawn 16 times as often as a
      10 mm nodule on 3 slices; per lesion both are drawn equally, which is what lesion-wise
      detection (sensitivity over lesions) rewards.
    * **hard negatives** (:mod:`ctseg_lib.hard_negatives`): after :meth:`set_hard_negatives` gave
      a pool of the model's false-positive components, an item that is not forced onto foreground
      is, with probability ``hard_fraction``, centred near a voxel of one of them (a component
      drawn uniformly, then a voxel; same random offset as foreground items).  With an empty pool
      (the default) nothing changes, not even the random draws.
    * **lesion copy-paste** (:mod:`ctseg_lib.lesion_paste`): with probability ``paste_prob`` an
      item gets one more lesion of a ``fg_classes`` class, cut from a training case (a class drawn
      uniformly, then a lesion, then one of its slices) and pasted where its surroundings match.
      Its draws come from a separate stream: with ``paste_prob=0`` (the default) nothing changes.
    * **lesion synthesis** (:mod:`ctseg_lib.lesion_synth`): with probability ``synth_prob`` an item
      gets one new ellipsoidal lesion of a ``fg_classes`` class, with the intensities of a training
      lesion (a class drawn uniformly, then a lesion), drawn where its surroundings match.  Its own
      stream too: with ``synth_prob=0`` (the default) nothing changes.

    Args:
        cases: labelled :class:`Preprocessed` cases (arrays may be memory-mapped).
        context: neighbours on each side; items have ``2*context + 1`` channels (0 = plain 2D),
            same meaning as ``ModelConfig.context``.
        fg_fraction: share of items forced to show a ``fg_classes`` voxel (nnU-Net uses 0.33).
        negative_keep: share of empty slices kept each epoch.
        samples_per_epoch: length of an epoch; items then draw their slice at random from the pool
            (with replacement).  None = one pass over the epoch's pool.
        seed: item ``i`` of epoch ``e`` depends only on ``(seed, e, i)``; call :meth:`set_epoch`.
        fg_classes: label values that count as foreground for oversampling (default: all non-zero
            present), e.g. ``[2]`` to oversample liver tumour rather than liver.
        patch_size: ``(px, py)`` in-plane patch in voxels, or None for whole slices.  Parts of a
            patch outside the slice are filled with the case's minimum (label 0).
        shuffle: with ``samples_per_epoch=None``, visit the pool in a per-epoch random order
            (training) instead of slice order (inspection).
        transform: optional ``f(x, y) -> (x, y)`` on the item tensors.
        fg_sampling: ``"slice"`` (default) or ``"lesion"``: how forced foreground items are drawn.
        hard_fraction: share of the not-forced items centred on a hard negative, once there is a pool.
        paste_prob: share of items that get one pasted training lesion (copy-paste augmentation).
        synth_prob: share of items that get one synthetic lesion (lesion synthesis).

    Items: ``x`` float32 ``(2*context+1, X, Y)`` (or ``(.., px, py)``), ``y`` int64 ``(X, Y)``.
    """

    def __init__(self, cases: Sequence[Preprocessed], context: int = 0, fg_fraction: float = 0.0,
                 negative_keep: float = 1.0, samples_per_epoch: int | None = None, seed: int = 0,
                 transform: Callable | None = None, fg_classes: Sequence[int] | None = None,
                 patch_size: Sequence[int] | None = None, shuffle: bool = False,
                 fg_sampling: str = "slice", hard_fraction: float = 0.0, paste_prob: float = 0.0,
                 synth_prob: float = 0.0) -> None:
        if not cases:
            raise CTSegError("SliceDataset needs at least one case")
        if any(c.label is None for c in cases):
            raise CTSegError("SliceDataset needs labelled cases")
        probs = (fg_fraction, negative_keep, hard_fraction, paste_prob, synth_prob)
        if context < 0 or not all(0 <= v <= 1 for v in probs):
            raise CTSegError(f"SliceDataset: need context >= 0, fg_fraction, negative_keep, hard_fraction, "
                             f"paste_prob and synth_prob in [0, 1] (got {context}, {', '.join(map(str, probs))})")
        if patch_size is not None and (len(patch_size) != 2 or min(patch_size) < 1):
            raise CTSegError(f"SliceDataset: patch_size must be 2 positive ints, got {tuple(patch_size)}")
        if fg_sampling not in FG_SAMPLING:
            raise CTSegError(f"SliceDataset: fg_sampling must be one of {FG_SAMPLING}, got {fg_sampling!r}")
        self.cases, self.context, self.seed, self.transform = list(cases), context, seed, transform
        self.fg_fraction, self.negative_keep, self.samples_per_epoch = fg_fraction, negative_keep, samples_per_epoch
        self.patch = tuple(int(p) for p in patch_size) if patch_size is not None else None
        self.shuffle, self.hard_fraction, self.paste_prob = shuffle, hard_fraction, paste_prob
        self.hard: list[tuple[int, np.ndarray]] = []
        self.fg_classes = _fg_classes(self.cases, fg_classes)
        self._index_slices()
        self.lesions = lesion_voxels(self.cases, self.by_class) if fg_sampling == "lesion" else None
        bank = (self.lesions or lesion_voxels(self.cases, self.by_class)) if paste_prob > 0 or synth_prob > 0 else {}
        self.paste_bank = {cl: les for cl, les in bank.items() if les} if paste_prob > 0 else {}
        self.synth_prob = synth_prob
        self.synth_bank = ({cl: [(k, lesion_statistics(self.cases[k].image, self.cases[k].label, c)) for k, c in les]
                            for cl, les in bank.items() if les} if synth_prob > 0 else {})
        self.fill = [_fill_value(c) for c in self.cases] if self.patch else []
        self.set_epoch(0)

    def _index_slices(self) -> None:
        """One pass over the labels: which slice shows which class, and which slices are empty."""
        case_of, z_of, has, nonempty = [], [], [], []
        for k, c in enumerate(self.cases):
            lab = np.moveaxis(c.label, 2, 0)  # (Z, X, Y) view: contiguous per slice
            flat = np.asarray(lab).reshape(lab.shape[0], -1)
            has.append(np.stack([(flat == cl).any(axis=1) for cl in self.fg_classes], axis=1)
                       if self.fg_classes else np.zeros((lab.shape[0], 0), bool))
            nonempty.append((flat > 0).any(axis=1))
            case_of.append(np.full(lab.shape[0], k))
            z_of.append(np.arange(lab.shape[0]))
        self.slice_case, self.slice_z = np.concatenate(case_of), np.concatenate(z_of)
        self.slice_has = np.concatenate(has)  # (n_slices, n_fg_classes) bool
        nonempty_all = np.concatenate(nonempty)
        self.positives, self.negatives = np.flatnonzero(nonempty_all), np.flatnonzero(~nonempty_all)
        by_class = {cl: np.flatnonzero(self.slice_has[:, j]) for j, cl in enumerate(self.fg_classes)}
        self.by_class = {cl: ix for cl, ix in by_class.items() if len(ix)}

    def set_epoch(self, epoch: int) -> None:
        """Select this epoch's pool (all non-empty slices + a fresh ``negative_keep`` share of empty ones)."""
        self.epoch = int(epoch)
        n_keep = int(round(len(self.negatives) * self.negative_keep))
        rng = _rng(self.seed, self.epoch)
        kept = rng.choice(self.negatives, n_keep, replace=False)
        self.pool = np.sort(np.concatenate([self.positives, kept]))
        if len(self.pool) == 0:
            self.pool = self.negatives[:1] if len(self.negatives) else self.positives[:1]
        self.order = rng.permutation(len(self.pool)) if self.shuffle else np.arange(len(self.pool))

    def set_hard_negatives(self, items: Sequence[tuple[int, np.ndarray]]) -> None:
        """The pool of hard negatives: ``(case index, (n, 3) voxel coordinates (x, y, z))`` per component
        (:func:`ctseg_lib.hard_negatives.mine_hard_negatives`); an empty list switches them off."""
        for k, coords in items:
            if not 0 <= k < len(self.cases) or np.ndim(coords) != 2 or np.shape(coords)[1] != 3 or not len(coords):
                raise CTSegError(f"hard negative for case {k}: need a case index < {len(self.cases)} and (n, 3) "
                                 f"voxel coordinates, got shape {np.shape(coords)}")
        self.hard = [(int(k), np.asarray(c)) for k, c in items]

    def __len__(self) -> int:
        return len(self.pool) if self.samples_per_epoch is None else int(self.samples_per_epoch)

    def slice_index(self, i: int) -> tuple[int, int]:
        """``(case index, z)`` of item ``i`` in the current epoch."""
        return self.sample(i)[:2]

    def sample(self, i: int) -> tuple[int, int, int | None, tuple[int, int] | None]:
        """``(case index, z, forced class or None, patch start (x, y) or None)`` of item ``i``."""
        if not 0 <= i < len(self):
            raise IndexError(i)
        rng = _rng(self.seed, self.epoch, i)
        cl, xy, s = None, None, None
        if self.by_class and rng.random() < self.fg_fraction:
            cl = list(self.by_class)[rng.integers(len(self.by_class))]
            if self.lesions is not None:  # a lesion, then one of its voxels: the patch centres there
                k, xy, z = _draw_voxel(self.lesions[cl], rng)
            else:
                s = rng.choice(self.by_class[cl])
        elif self.hard and rng.random() < self.hard_fraction:  # a false positive of the model: patch around it
            k, xy, z = _draw_voxel(self.hard, rng)
        elif self.samples_per_epoch is None:
            s = self.pool[self.order[i]]
        else:
            s = self.pool[rng.integers(len(self.pool))]
        if s is not None:
            k, z = int(self.slice_case[s]), int(self.slice_z[s])
        return k, z, cl, (self.patch_corner(k, z, cl, rng, xy) if self.patch else None)

    def patch_corner(self, k: int, z: int, cl: int | None, rng: np.random.Generator,
                     voxel: np.ndarray | None = None) -> tuple[int, int]:
        """In-plane start of a patch on slice ``z`` of case ``k``: near ``voxel`` (x, y) when given, else
        near a random voxel of class ``cl`` when forced, uniform otherwise; may be negative where the
        slice is smaller than the patch."""
        shape, patch = np.array(self.cases[k].label.shape[:2]), np.array(self.patch)
        lo, hi = np.minimum(0, shape - patch), np.maximum(0, shape - patch)
        if cl is None and voxel is None:
            return int(rng.integers(lo[0], hi[0] + 1)), int(rng.integers(lo[1], hi[1] + 1))
        if voxel is None:
            voxels = np.argwhere(np.asarray(self.cases[k].label[:, :, z]) == cl)
            voxel = voxels[rng.integers(len(voxels))]
        centre = np.asarray(voxel) + rng.integers(-(patch // 4), patch // 4 + 1)
        start = np.clip(centre - patch // 2, lo, hi)
        return int(start[0]), int(start[1])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        k, z, _, start = self.sample(i)
        case = self.cases[k]
        if start is None:
            x = stack_25d(case.image, z, 2 * self.context + 1)
            y = np.asarray(case.label[:, :, z], dtype=np.int64)
        else:
            zs = context_indices(case.image.shape[2], [z], self.context)[0]
            x = crop_pad(np.moveaxis(case.image, 2, 0)[zs], (0, *start), (len(zs), *self.patch), self.fill[k])
            y = crop_pad(np.asarray(case.label[:, :, z]), start, self.patch, 0).astype(np.int64)
        if self.paste_bank or self.synth_bank:
            x, y = np.array(x, dtype=np.float32), np.array(y)
            self.paste(i, x, y)
            self.synth(i, k, x, y)
        x, y = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(y)
        return self.transform(x, y) if self.transform else (x, y)

    def paste(self, i: int, x: np.ndarray, y: np.ndarray) -> bool:
        """With probability ``paste_prob``, paste one training lesion into item ``i``'s ``(x, y)`` in
        place (:func:`ctseg_lib.lesion_paste.paste_lesion`); True if one was pasted."""
        rng = _rng(self.seed, self.epoch, i, 1)  # its own stream: the item's other draws stay as they were
        if not self.paste_bank or rng.random() >= self.paste_prob:
            return False
        cl = list(self.paste_bank)[rng.integers(len(self.paste_bank))]
        k, coords = self.paste_bank[cl][rng.integers(len(self.paste_bank[cl]))]
        return paste_lesion(x, y, self.cases[k].image, self.cases[k].label, coords, cl, self.context, rng)

    def synth(self, i: int, k: int, x: np.ndarray, y: np.ndarray) -> bool:
        """With probability ``synth_prob``, draw one synthetic lesion into item ``i`` (of case ``k``) in
        place (:func:`ctseg_lib.lesion_synth.synth_lesion`, the case's spacing); True if one was drawn."""
        rng = _rng(self.seed, self.epoch, i, 2)  # its own stream, like paste's
        if not self.synth_bank or rng.random() >= self.synth_prob:
            return False
        cl = list(self.synth_bank)[rng.integers(len(self.synth_bank))]
        _, stats = self.synth_bank[cl][rng.integers(len(self.synth_bank[cl]))]
        return synth_lesion(x, y, self.cases[k].spacing, stats, cl, self.context, rng)


# -- 3D patches --------------------------------------------------------------------------------
def crop_pad(arr: np.ndarray, start: Sequence[int], size: Sequence[int], fill: float) -> np.ndarray:
    """``arr[start : start+size]`` per axis, with out-of-volume parts filled with ``fill``."""
    out = np.full(tuple(size), fill, dtype=arr.dtype)
    src, dst = [], []
    for s, n, d in zip(start, size, arr.shape):
        lo, hi = max(s, 0), min(s + n, d)
        src.append(slice(lo, max(hi, lo)))
        dst.append(slice(lo - s, lo - s + max(hi - lo, 0)))
    out[tuple(dst)] = arr[tuple(src)]
    return out


class PatchDataset(Dataset):
    """Random 3D patches for 3D U-Nets.

    A case is drawn uniformly; with probability ``fg_fraction`` the patch is centred on a random
    voxel of a random foreground class present in that case (from up to
    :data:`MAX_FG_LOCATIONS` stored coordinates per class, as nnU-Net does), else its position is
    uniform.  Volumes smaller than the patch are padded: image with the case's minimum, label 0.

    Items: ``x`` float32 ``(1, px, py, pz)``, ``y`` int64 ``(px, py, pz)``.
    """

    def __init__(self, cases: Sequence[Preprocessed], patch_size: Sequence[int], fg_fraction: float = 0.33,
                 samples_per_epoch: int = 250, seed: int = 0, fg_classes: Sequence[int] | None = None,
                 transform: Callable | None = None) -> None:
        if not cases or any(c.label is None for c in cases):
            raise CTSegError("PatchDataset needs at least one case, all labelled")
        if len(patch_size) != 3 or min(patch_size) < 1:
            raise CTSegError(f"patch_size must be 3 positive ints, got {tuple(patch_size)}")
        if not 0 <= fg_fraction <= 1:
            raise CTSegError(f"fg_fraction must be in [0, 1], got {fg_fraction}")
        self.cases, self.patch = list(cases), tuple(int(p) for p in patch_size)
        self.fg_fraction, self.samples_per_epoch = fg_fraction, int(samples_per_epoch)
        self.seed, self.transform, self.epoch = seed, transform, 0
        self.fg_classes = _fg_classes(self.cases, fg_classes)
        rng = np.random.default_rng(seed)
        self.locations: list[dict[int, np.ndarray]] = []
        self.fill: list[float] = []
        for c in self.cases:
            lab = np.asarray(c.label)
            locs = {}
            for cl in self.fg_classes:
                xyz = np.argwhere(lab == cl)
                if len(xyz) > MAX_FG_LOCATIONS:
                    xyz = xyz[rng.choice(len(xyz), MAX_FG_LOCATIONS, replace=False)]
                if len(xyz):
                    locs[cl] = xyz.astype(np.int32)
            self.locations.append(locs)
            self.fill.append(_fill_value(c))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def patch_start(self, i: int) -> tuple[int, tuple[int, int, int]]:
        """``(case index, patch start (x, y, z))`` of item ``i``; a start may be negative (padding)."""
        if not 0 <= i < len(self):
            raise IndexError(i)
        rng = _rng(self.seed, self.epoch, i)
        k = int(rng.integers(len(self.cases)))
        shape, locs = self.cases[k].image.shape, self.locations[k]
        if locs and rng.random() < self.fg_fraction:
            cl = list(locs)[rng.integers(len(locs))]
            centre = locs[cl][rng.integers(len(locs[cl]))]
            # Centre on the voxel, then shift inside the volume where it fits (voxel stays inside).
            start = [int(np.clip(c - p // 2, min(0, d - p), max(0, d - p)))
                     for c, p, d in zip(centre, self.patch, shape)]
        else:
            start = [int(rng.integers(min(0, d - p), max(0, d - p) + 1)) for p, d in zip(self.patch, shape)]
        return k, tuple(start)  # type: ignore[return-value]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        k, start = self.patch_start(i)
        case = self.cases[k]
        x = crop_pad(case.image, start, self.patch, self.fill[k]).astype(np.float32)[None]
        y = crop_pad(case.label, start, self.patch, 0).astype(np.int64)
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        return self.transform(x, y) if self.transform else (x, y)

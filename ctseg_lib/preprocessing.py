"""From a CT volume in HU to the network's input grid, and back.

Pipeline of :func:`preprocess_case` (each step recorded in ``meta`` so :func:`restore` undoes it):

1. **crop** to the body bounding box (optional, :func:`body_bbox`): air around the patient is
   ~40 % of a 512×512 abdominal slice and carries no information;
2. **normalise** intensities (HU → float32): a fixed radiological window (:func:`window`), the
   nnU-Net CT scheme (:class:`CTNormalizer`) or per-volume min/max (the original project's mistake:
   a metal implant or the CT table changes the scale of the whole scan; kept for the pitfalls chapter);
3. **resample** once, to a target voxel spacing in mm and/or a fixed in-plane slice size
   (:func:`resize`): images linearly, labels with nearest neighbour so no fractional label appears.

Grid alignment: every resize maps *voxel centres* the same way, output index ``i`` samples input
coordinate ``(i + 0.5) * n_in / n_out - 0.5`` (the field of view is preserved: corners of the outer
voxels coincide).  This is ``torch.nn.functional.interpolate(..., align_corners=False)`` and
``scipy.ndimage.zoom(..., grid_mode=True)``; torch is used for images because it measured ~3× faster
(512×512×200 int16 → 256×256×100: 0.11 s vs 0.38 s on 2 CPU cores, identical output).

Arrays in :class:`Preprocessed` are ``(X, Y, Z)`` views of *slice-major* memory (``(Z, X, Y)``
contiguous): an axial slice ``a[:, :, z]`` is then one contiguous block, which is what makes 2D
training from a memory-mapped cache fast (see :mod:`ctseg_lib.cache`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F

from .data.nifti import FOV_PADDING_HU, Volume, is_fov_padding  # noqa: F401 (public here too)
from .errors import CTSegError

#: Radiological display windows as (level, width) in HU, the one table used by preprocessing, the
#: viewers and the figures.  Radiopaedia, "Windowing (CT)" (https://radiopaedia.org/articles/windowing-ct):
#: abdomen soft tissue W400 L40-50, lung W1500 L-600, mediastinum W350 L50, bone W1800 L400.  Its liver
#: window (W150 L30) is for unenhanced CT; MSD livers are portal-venous (parenchyma ≈ 100 HU), so the
#: liver preset is centred higher (L60/W160) to keep enhanced parenchyma and hypodense tumours apart.
WINDOWS: dict[str, tuple[float, float]] = {
    "abdomen": (40.0, 400.0),
    "liver": (60.0, 160.0),
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "bone": (400.0, 1800.0),
}


# Scanner field-of-view padding (FOV_PADDING_HU = -1024, from data.nifti): outside the reconstructed
# circle many scanners store -2048 or -3024 (the MSD liver_0 sample has 4.2 M such voxels).  Nothing in
# a patient is below air (-1000 HU), so every value below it is treated as air: windowing clamps it
# (else a window reaching below -1024, like lung, draws the circle), CTNormalizer.fit ignores it,
# min/max normalisation does not take it as the minimum, and body_bbox's -500 HU threshold leaves it out.


def parse_window(preset: str | tuple[float, float] | list[float]) -> tuple[float, float]:
    """``"abdomen"`` / ``"40,400"`` / ``(40, 400)`` → ``(level, width)`` in HU."""
    if isinstance(preset, str):
        if preset in WINDOWS:
            return WINDOWS[preset]
        try:
            level, width = (float(v) for v in preset.split(","))
        except ValueError:
            raise CTSegError(f"unknown window preset {preset!r}; use one of {sorted(WINDOWS)} "
                             "or 'LEVEL,WIDTH' in HU") from None
    else:
        try:
            level, width = (float(v) for v in preset)
        except (TypeError, ValueError):
            raise CTSegError(f"window must be a preset name or (level, width), got {preset!r}") from None
    if not (np.isfinite(level) and np.isfinite(width) and width > 0):
        raise CTSegError(f"window {preset!r}: width must be > 0 and values finite")
    return level, width


def window(hu: np.ndarray, preset: str | tuple[float, float]) -> np.ndarray:
    """Clip HU to ``[level - width/2, level + width/2]`` and scale to float32 ``[0, 1]``.

    FOV padding (< :data:`FOV_PADDING_HU`) maps to the value of air (-1024 HU), also for windows
    that reach below it.
    """
    level, width = parse_window(preset)
    out = np.maximum(np.asarray(hu, dtype=np.float32), np.float32(FOV_PADDING_HU))
    out -= np.float32(level - width / 2)  # in place: fewer float32 temporaries of the whole volume
    out /= np.float32(width)
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


@dataclass
class CTNormalizer:
    """nnU-Net's CT normalisation (Isensee et al. 2021, *Nature Methods* 18:203, "CTNormalization").

    :meth:`fit` pools foreground (label > 0) HU values over the *training* cases; ``__call__``
    clips to their 0.5 / 99.5 percentiles and z-scores with their mean and std (computed before
    clipping, as nnU-Net does).  One global scale for the dataset, unlike per-volume min/max.
    """

    lower: float = 0.0
    upper: float = 0.0
    mean: float = 0.0
    std: float = 1.0

    @classmethod
    def fit(cls, images, labels, samples_per_case: int = 10000, seed: int = 0) -> CTNormalizer:
        """Fit from iterables of HU arrays and label arrays (same shapes), ≤ ``samples_per_case`` each.

        FOV padding (< :data:`FOV_PADDING_HU`) under a label is ignored: it is not tissue.
        """
        rng = np.random.default_rng(seed)
        pooled = []
        for img, lab in zip(images, labels, strict=True):
            img = np.asarray(img)
            fg = img[(np.asarray(lab) > 0) & ~is_fov_padding(img)]
            if fg.size > samples_per_case:
                fg = rng.choice(fg, samples_per_case, replace=False)
            pooled.append(fg.astype(np.float64))
        values = np.concatenate(pooled) if pooled else np.empty(0)
        if values.size == 0:
            raise CTSegError("CTNormalizer.fit: no foreground voxels (label > 0) in the given cases")
        lo, hi = np.percentile(values, [0.5, 99.5])
        return cls(float(lo), float(hi), float(values.mean()), float(values.std()))

    def __call__(self, hu: np.ndarray) -> np.ndarray:
        out = np.clip(np.asarray(hu, dtype=np.float32), self.lower, self.upper)
        return (out - np.float32(self.mean)) / np.float32(max(self.std, 1e-8))

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CTNormalizer:
        try:
            return cls(**{k: float(d[k]) for k in ("lower", "upper", "mean", "std")})
        except (KeyError, TypeError, ValueError) as e:
            raise CTSegError(f"invalid CT normalizer {d!r} ({type(e).__name__}: {e})") from None


def _label_index(n_in: int, n_out: int) -> np.ndarray:
    # Nearest neighbour with centre alignment: output centre i sits at input (i+0.5)*n_in/n_out - 0.5.
    return np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1)


def resize(array: np.ndarray, shape: tuple[int, ...], is_label: bool) -> np.ndarray:
    """Resize a 2D or 3D array to ``shape`` (voxels) on centre-aligned grids.

    Labels: nearest neighbour by integer indexing, so output values ⊂ input values and the
    dtype is kept.  Images: (bi/tri)linear, float32 out.  ``shape`` must match ``array.ndim``.
    """
    array = np.asarray(array)
    shape = tuple(int(s) for s in shape)
    if len(shape) != array.ndim or array.ndim not in (2, 3) or min(shape) < 1:
        raise CTSegError(f"cannot resize an array of shape {array.shape} to {shape}")
    if shape == array.shape:
        return array.copy() if is_label else array.astype(np.float32)
    if is_label:
        return array[np.ix_(*[_label_index(i, o) for i, o in zip(array.shape, shape)])]
    mode = "bilinear" if array.ndim == 2 else "trilinear"
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    return F.interpolate(t, size=shape, mode=mode, align_corners=False)[0, 0].numpy()


def target_shape(shape, spacing, target_spacing) -> tuple[int, ...]:
    """``round(shape * spacing / target_spacing)`` per axis, at least 1."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target_spacing))


def resample(array: np.ndarray, spacing, target_spacing, is_label: bool) -> np.ndarray:
    """Resample a volume from ``spacing`` to ``target_spacing`` (mm); see :func:`resize`."""
    if len(target_spacing) != array.ndim or min(target_spacing) <= 0:
        raise CTSegError(f"target spacing {tuple(target_spacing)} must have {array.ndim} values > 0 mm")
    return resize(array, target_shape(array.shape, spacing, target_spacing), is_label)


def body_bbox(hu: np.ndarray, threshold: float = -500, margin: int = 2) -> tuple[slice, slice, slice]:
    """Bounding box of the largest connected component above ``threshold`` HU (the body).

    Air is ~-1000 HU and soft tissue > -100; the largest component drops the CT table and noise
    specks, which are usually not connected to the patient.  FOV padding (-2048, -3024) is below the
    threshold, so it is outside the body too.  ``margin`` voxels are added on
    every side.  An all-air volume gives the full extent.  Volumes above ~2 M voxels are labelled
    on an in-plane subsampled grid (stride s: 512×512×200 → s=5, 1.8 s → ~0.1 s CPU) and the box
    is widened by s voxels, so it may be up to s voxels looser, never tighter.
    """
    hu = np.asarray(hu)
    s = max(1, int(np.sqrt(hu.size / _BBOX_MAX_VOXELS)))
    mask = hu[::s, ::s, :] > threshold
    labels, n = ndi.label(mask)
    if n == 0:
        return tuple(slice(0, d) for d in hu.shape)  # type: ignore[return-value]
    body = labels == (int(np.argmax(np.bincount(labels.ravel())[1:])) + 1)
    out = []
    for ax, step in enumerate((s, s, 1)):
        hit = np.flatnonzero(body.any(axis=tuple(a for a in range(3) if a != ax)))
        pad = margin + step - 1
        out.append(slice(max(0, int(hit[0]) * step - pad), min(hu.shape[ax], int(hit[-1]) * step + 1 + pad)))
    return tuple(out)  # type: ignore[return-value]


_BBOX_MAX_VOXELS = 2_000_000


#: ways a label map can follow the image onto a new grid (:attr:`PreprocessParams.label_resize`)
LABEL_RESIZE = ("nearest", "linear_uint8")


def resize_label(label: np.ndarray, shape: tuple[int, ...], how: str = "nearest") -> np.ndarray:
    """Resize an integer label map to ``shape`` voxels: ``"nearest"`` (:func:`resize` with
    ``is_label=True``; the right way) or ``"linear_uint8"`` (the course project's way, kept to
    measure it: linear interpolation of the label values, then ``astype(np.uint8)``, which truncates
    1.7 to 1).  Returns uint8 for ``"linear_uint8"``, the input dtype otherwise."""
    if how == "nearest":
        return resize(label, shape, is_label=True)
    if how == "linear_uint8":
        return resize(np.asarray(label, dtype=np.float32), shape, is_label=False).astype(np.uint8)
    raise CTSegError(f"label resize: unknown {how!r}; use one of {list(LABEL_RESIZE)}")


@dataclass
class PreprocessParams:
    """Everything that defines the preprocessed grid and intensities (part of the cache key).

    Attributes:
        target_spacing: ``(sx, sy, sz)`` mm, or None to keep each case's spacing.
        normalization: ``"window"`` (uses ``window``), ``"window:abdomen"``, ``"window:40,400"``,
            ``"nnunet"`` (alias ``"ct"``, needs a fitted :class:`CTNormalizer`) or ``"minmax"``.
        window: preset name or ``(level, width)`` HU, used by plain ``"window"``.
        slice_size: in-plane ``(X, Y)`` voxels every axial slice is resized to, or None.
            When set it overrides ``target_spacing`` in-plane (z still follows ``target_spacing``).
        crop_to_body: crop to :func:`body_bbox` first.
        label_resize: how the label map follows ``slice_size`` / ``target_spacing``: ``"nearest"``
            (nearest neighbour, values stay labels) or ``"linear_uint8"``, the course project's
            pitfall kept to measure it (chapter 10): the integer map is resized (bi/tri)linearly as if
            it were an image and the fractions are truncated by a cast to uint8, so a tumour (2) next
            to background (0) grows a rim of fake liver (1) and every label loses its partial border.
    """

    target_spacing: tuple[float, float, float] | None = None
    normalization: str = "window"
    window: str | tuple[float, float] | None = "abdomen"
    slice_size: tuple[int, int] | None = None
    crop_to_body: bool = False
    body_threshold: float = -500.0
    body_margin: int = 2
    label_resize: str = "nearest"

    def __post_init__(self) -> None:
        if self.target_spacing is not None:
            self.target_spacing = tuple(float(s) for s in self.target_spacing)  # type: ignore[assignment]
            if len(self.target_spacing) != 3 or min(self.target_spacing) <= 0:
                raise CTSegError(f"preprocess 'target_spacing': need 3 values > 0 mm, got {self.target_spacing}")
        if self.slice_size is not None:
            if isinstance(self.slice_size, int):
                self.slice_size = (self.slice_size, self.slice_size)
            self.slice_size = tuple(int(s) for s in self.slice_size)  # type: ignore[assignment]
            if len(self.slice_size) != 2 or min(self.slice_size) < 1:
                raise CTSegError(f"preprocess 'slice_size': need 2 values >= 1, got {self.slice_size}")
        if isinstance(self.window, list):
            self.window = tuple(self.window)  # type: ignore[assignment]
        self.intensity_mode()  # validates normalization / window
        if self.label_resize not in LABEL_RESIZE:
            raise CTSegError(f"preprocess 'label_resize': unknown {self.label_resize!r}; "
                             f"use one of {list(LABEL_RESIZE)}")

    def intensity_mode(self) -> tuple[str, tuple[float, float] | None]:
        """``("window", (level, width))``, ``("nnunet", None)`` or ``("minmax", None)``."""
        kind, _, arg = self.normalization.partition(":")
        if kind == "window":
            spec = arg or self.window
            if spec is None:
                raise CTSegError("preprocess 'normalization': 'window' needs a 'window' preset")
            return "window", parse_window(spec)
        if kind in ("nnunet", "ct") and not arg:
            return "nnunet", None
        if kind == "minmax" and not arg:
            return "minmax", None
        raise CTSegError(f"preprocess 'normalization': unknown {self.normalization!r}; use window, "
                         "window:PRESET, window:LEVEL,WIDTH, nnunet or minmax")

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if d["label_resize"] == "nearest":  # the default is left out: cache keys and saved runs stay as they were
            del d["label_resize"]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessParams:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise CTSegError(f"unknown preprocessing key(s) {unknown}; known: {sorted(names)}")
        return cls(**d)


@dataclass
class Preprocessed:
    """One preprocessed case.

    Attributes:
        image: float32 ``(X, Y, Z)`` normalised intensities.
        label: uint8 ``(X, Y, Z)`` or None.
        spacing: voxel size in mm of this grid.
        meta: JSON-serialisable record of every step, for :func:`restore`.
    """

    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, float, float]
    meta: dict
    case_id: str = ""


def slice_major(a: np.ndarray) -> np.ndarray:
    """Same ``(X, Y, Z)`` array, stored as contiguous ``(Z, X, Y)`` (fast axial slices)."""
    return np.moveaxis(np.ascontiguousarray(np.moveaxis(a, 2, 0)), 0, 2)


def normalize_intensity(hu: np.ndarray, params: PreprocessParams, normalizer: CTNormalizer | None) -> np.ndarray:
    """HU ``(X, Y, Z)`` → float32 network input, as ``params.normalization`` says.

    ``window``: clip to the window and scale to [0, 1]; ``nnunet``/``ct``: the fitted ``normalizer``
    (clip to foreground percentiles, z-score); ``minmax``: the per-volume pitfall (chapter 10), kept
    to measure it. Raises ``CTSegError`` when ``nnunet`` normalisation has no normalizer.
    """
    mode, win = params.intensity_mode()
    if mode == "window":
        return window(hu, win)  # type: ignore[arg-type]
    if mode == "nnunet":
        if normalizer is None:
            raise CTSegError("normalization 'nnunet' needs a CTNormalizer fitted on the training cases")
        return normalizer(hu)
    # minmax: the per-volume pitfall, on purpose, but FOV padding is not taken as the minimum
    lo, hi = max(float(hu.min()), FOV_PADDING_HU), float(hu.max())
    return ((np.maximum(hu.astype(np.float32), np.float32(lo)) - lo) / max(hi - lo, 1e-6)).astype(np.float32)


def preprocess_case(image: Volume, label: Volume | None, params: PreprocessParams,
                    normalizer: CTNormalizer | None = None) -> Preprocessed:
    """Crop → normalise → resample one case (canonical RAS+ ``(X, Y, Z)`` volumes in, see module doc)."""
    hu = image.array
    if label is not None and label.array.shape != hu.shape:
        raise CTSegError(f"label shape {label.array.shape} differs from image shape {hu.shape}", label.path)
    box = body_bbox(hu, params.body_threshold, params.body_margin) if params.crop_to_body else \
        tuple(slice(0, s) for s in hu.shape)
    img = normalize_intensity(hu[box], params, normalizer)
    cropped = img.shape
    out_shape = list(target_shape(cropped, image.spacing, params.target_spacing)
                     if params.target_spacing else cropped)
    if params.slice_size:
        out_shape[:2] = params.slice_size
    img = slice_major(resize(img, tuple(out_shape), is_label=False))
    lab = None
    if label is not None:
        lab = slice_major(resize_label(label.array[box].astype(np.uint8), tuple(out_shape), params.label_resize))
    spacing = tuple(float(s * c / o) for s, c, o in zip(image.spacing, cropped, out_shape))
    meta = {
        "original_shape": list(hu.shape), "original_spacing": list(image.spacing),
        "bbox": [[b.start, b.stop] for b in box], "cropped_shape": list(cropped),
        "shape": list(out_shape), "spacing": list(spacing), "image_min": float(img.min()),
        "affine": np.asarray(image.affine).tolist(), "params": params.to_dict(),
        "normalizer": normalizer.to_dict() if normalizer else None,
    }
    cid = image.path.name.split(".nii")[0] if image.path else ""
    return Preprocessed(img, lab, spacing, meta, cid)  # type: ignore[arg-type]


def restore(pred: np.ndarray, meta: dict) -> np.ndarray:
    """Map a prediction on the preprocessed grid back to the canonical original grid.

    ``pred``: integer label map ``(X, Y, Z)`` (nearest neighbour), float map ``(X, Y, Z)`` or
    class probabilities ``(C, X, Y, Z)`` (linear).  The cropped-away border is filled with
    background: label 0, probability 0, or probability 1 for channel 0 of ``(C, ...)`` input.
    """
    pred = np.asarray(pred)
    shape, cropped = tuple(meta["shape"]), tuple(meta["cropped_shape"])
    is_label = np.issubdtype(pred.dtype, np.integer) or pred.dtype == bool
    channels = pred.ndim == 4
    if pred.shape[channels:] != shape:
        raise CTSegError(f"prediction shape {pred.shape} does not match the preprocessed grid {shape}")
    parts = pred if channels else pred[None]
    out = np.zeros((len(parts), *meta["original_shape"]), dtype=pred.dtype if is_label else np.float32)
    if channels:
        out[0] = 1.0  # background outside the crop
    box = tuple(slice(a, b) for a, b in meta["bbox"])
    for c, p in enumerate(parts):
        out[c][box] = resize(p, cropped, is_label)
    return out if channels else out[0]

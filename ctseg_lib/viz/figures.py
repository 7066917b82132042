"""Matplotlib figures for the book: one slice with overlay, montages, training curves, HU histograms.

Every axis carries a label with units.  Slices are shown in the radiological convention of
:func:`ctseg_lib.data.nifti.axial_display` with ``extent`` in mm, so the aspect ratio is physical.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..data.nifti import axial_display
from ..errors import CTSegError
from .render import label_colours, render_rgb, resolve_window


def _legend(ax, colours: Mapping[int, tuple[int, int, int]], labels: Mapping[int, str], present) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=np.asarray(colours[k]) / 255, label=labels.get(k, f"label {k}"))
               for k in sorted(colours) if k in present]
    if handles:
        ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.8)


def show_slice(ax, image: np.ndarray, spacing, z: int, window="abdomen", label=None,
               labels: Mapping[int, str] | None = None, mode: str = "fill", opacity: float = 0.4,
               title: str | None = None):
    """Draw axial slice ``z`` of ``image`` (``(X, Y, Z)`` HU, RAS+) with an optional label overlay.

    Axes: x = patient right → left (mm), y = anterior → posterior (mm).  Returns the AxesImage.
    """
    image = np.asarray(image)
    if not 0 <= int(z) < image.shape[2]:
        raise CTSegError(f"slice index z={z} outside 0..{image.shape[2] - 1}")
    labels = dict(labels or {})
    lab = None if label is None else axial_display(np.asarray(label)[:, :, z])
    present = set() if lab is None else {int(v) for v in np.unique(lab) if v}
    colours = label_colours(labels or {k: f"label {k}" for k in present})
    rgb = render_rgb(axial_display(image[:, :, z]), window, lab, colours, mode, opacity)
    sx, sy = float(spacing[0]), float(spacing[1])
    X, Y = image.shape[:2]
    im = ax.imshow(rgb, extent=(0, X * sx, Y * sy, 0), interpolation="nearest")
    level, width = resolve_window(window)
    ax.set_xlabel("patient right → left (mm)")
    ax.set_ylabel("anterior → posterior (mm)")
    ax.set_title(title or f"axial z={z} ({z * float(spacing[2]):.1f} mm), L{level:g}/W{width:g} HU", fontsize=9)
    _legend(ax, colours, labels, present)
    return im


def montage(image: np.ndarray, spacing, zs: Sequence[int], window="abdomen", label=None,
            labels: Mapping[int, str] | None = None, ncols: int = 4, mode: str = "fill", opacity: float = 0.4):
    """Grid of axial slices ``zs`` (each via :func:`show_slice`); returns the matplotlib Figure."""
    import matplotlib.pyplot as plt

    zs = list(zs)
    if not zs:
        raise CTSegError("montage needs at least one slice index")
    ncols = max(1, min(ncols, len(zs)))
    nrows = -(-len(zs) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.3 * nrows), squeeze=False)
    for ax, z in zip(axes.ravel(), zs):
        show_slice(ax, image, spacing, z, window, label, labels, mode, opacity,
                   title=f"z={z} ({z * float(spacing[2]):.0f} mm)")
    for ax in axes.ravel()[len(zs):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def read_history(history: Sequence[Mapping] | str | Path) -> list[dict]:
    """Training history as a list of dicts (numbers as float); accepts the list or a CSV path."""
    if isinstance(history, str | Path):
        path = Path(history)
        if not path.is_file():
            raise CTSegError("training history CSV not found", path)
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        out = []
        for i, r in enumerate(rows):
            try:
                out.append({k: float(v) for k, v in r.items() if k and v not in ("", None)})
            except ValueError as e:
                raise CTSegError(f"row {i + 2}: non-numeric value ({e})", path) from None
        return out
    return [dict(r) for r in history]


def plot_training_curves(history: Sequence[Mapping] | str | Path):
    """Loss (left) and validation Dice per label (right) against epoch; returns the Figure.

    ``history``: list of dicts with ``epoch``, ``train_loss``, optional ``val_loss`` and
    ``val_dice_<label>`` keys, or the path of a CSV with those columns.
    """
    import matplotlib.pyplot as plt

    rows = read_history(history)
    if not rows or "epoch" not in rows[0]:
        raise CTSegError("training history is empty or has no 'epoch' column")
    keys = list(dict.fromkeys(k for r in rows for k in r))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for k in keys:
        pts = [(r["epoch"], r[k]) for r in rows if k in r]
        if not pts:
            continue
        ep, val = zip(*pts)
        if k.endswith("loss"):
            a1.plot(ep, val, marker="o", ms=3, label=k.replace("_", " "))
        elif k.startswith("val_dice"):
            a2.plot(ep, val, marker="o", ms=3, label=k.removeprefix("val_dice_").replace("_", " ") or "mean")
    a1.set(xlabel="epoch", ylabel="loss (unitless)", title="loss")
    a2.set(xlabel="epoch", ylabel="validation Dice (0–1)", title="validation Dice", ylim=(0, 1))
    for a in (a1, a2):
        a.grid(alpha=0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=8)
    fig.tight_layout()
    return fig


def hu_histogram(image: np.ndarray, label: np.ndarray, labels: Mapping[int, str] | None = None,
                 bins: int = 100, hu_range: tuple[float, float] = (-300, 400), ax=None):
    """Per-label HU histograms (density) of the voxels of each label; returns the Axes."""
    import matplotlib.pyplot as plt

    image, label = np.asarray(image), np.asarray(label)
    if image.shape != label.shape:
        raise CTSegError(f"label shape {label.shape} differs from image shape {image.shape}")
    present = [int(v) for v in np.unique(label)]
    names = {0: "background", **{int(k): str(v) for k, v in (labels or {}).items()}}
    colours = {0: (127, 127, 127), **label_colours({k: names.get(k, "") for k in present if k})}
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.4))
    for k in present:
        vals = image[label == k]
        ax.hist(vals, bins=bins, range=hu_range, density=True, histtype="step", lw=1.5,
                color=np.asarray(colours[k]) / 255, label=f"{names.get(k, f'label {k}')} (n={vals.size:,})")
    ax.set(xlabel="intensity (HU)", ylabel="density (1/HU)", title="HU distribution per label")
    ax.legend(fontsize=8)
    return ax

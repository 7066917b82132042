"""Animated GIF of a case: windowed axial slices, inferior → superior, with label overlays.

GIFs play anywhere (slides, READMEs, issue trackers) without JavaScript; the static viewer
(:mod:`.viewer`) is the interactive alternative.  Frames use :func:`.render.render_rgb` and the
radiological orientation of :func:`ctseg_lib.data.nifti.axial_display`, resized so that one pixel
has the same physical size in x and y.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..data.nifti import axial_display
from ..errors import CTSegError
from ..io import atomic_path
from .render import label_colours, render_rgb


def gif_frames(image: np.ndarray, spacing, label=None, pred=None, window="abdomen",
               labels: Mapping[int, str] | None = None, mode: str = "fill", opacity: float = 0.4,
               max_size: int = 256) -> list[np.ndarray]:
    """``uint8 (H, W, 3)`` frames, one per axial slice ``k = 0 … Z-1`` (feet → head).

    With both ``label`` and ``pred`` each frame is ``ground truth | prediction`` side by side.
    """
    from PIL import Image

    image = np.asarray(image)
    if image.ndim != 3:
        raise CTSegError(f"image must be a 3D (X, Y, Z) array, got shape {image.shape}")
    overlays = [a for a in (label, pred) if a is not None] or [None]
    for a in overlays:
        if a is not None and np.shape(a) != image.shape:
            raise CTSegError(f"label/prediction shape {np.shape(a)} differs from image shape {image.shape}")
    colours = label_colours(labels or {int(v): "" for a in overlays if a is not None for v in np.unique(a)})
    sx, sy = float(spacing[0]), float(spacing[1])
    X, Y, _ = image.shape
    scale = max_size / max(X * sx, Y * sy)  # display pixels per mm
    size = (max(1, round(X * sx * scale)), max(1, round(Y * sy * scale)))  # PIL (width, height)
    frames = []
    for k in range(image.shape[2]):
        tiles = []
        for a in overlays:
            rgb = render_rgb(axial_display(image[:, :, k]), window,
                             None if a is None else axial_display(np.asarray(a)[:, :, k]), colours, mode, opacity)
            tiles.append(np.asarray(Image.fromarray(rgb).resize(size, Image.NEAREST)))
        frames.append(np.concatenate(tiles, axis=1) if len(tiles) > 1 else tiles[0])
    return frames


def save_gif(path: str | Path, image: np.ndarray, spacing, label=None, pred=None, window="abdomen",
             fps: float = 8.0, labels: Mapping[int, str] | None = None, mode: str = "fill",
             opacity: float = 0.4, max_size: int = 256) -> Path:
    """Write an animated GIF (atomic, looping) of every axial slice, inferior → superior.

    Args:
        path: output ``.gif``.
        image: ``(X, Y, Z)`` HU, canonical RAS+; ``spacing`` in mm.
        label, pred: optional ``(X, Y, Z)`` label maps (shown side by side when both are given).
        window: preset name or ``(level, width)`` HU.  ``fps``: frames per second.
    """
    from PIL import Image

    if not fps > 0:
        raise CTSegError(f"fps must be positive, got {fps}")
    frames = [Image.fromarray(f) for f in gif_frames(image, spacing, label, pred, window, labels, mode,
                                                     opacity, max_size)]
    with atomic_path(path, suffix=".gif") as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:],
                       duration=round(1000 / fps), loop=0, optimize=False)
    return Path(path)

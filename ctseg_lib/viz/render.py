"""Pure-numpy rendering of CT slices: HU window → grey, label overlays (fill or contour) → RGB.

Everything the viewers, figures and GIFs show goes through these few functions, so one unit test
pins down what every picture in the book means.

Windowing follows the DICOM "Window Center / Window Width" idea (DICOM PS3.3 C.11.2.1.2, linear
VOI LUT, here in its simple continuous form): HU in ``[L - W/2, L + W/2]`` maps linearly onto
grey ``0 … 255``; values outside are clipped.  The presets are the usual radiology ones.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..errors import CTSegError
from ..preprocessing import FOV_PADDING_HU, WINDOWS, parse_window

#: Display windows ``name: (level, width)`` in HU: the same table as preprocessing (one source of truth).
DISPLAY_WINDOWS: dict[str, tuple[float, float]] = WINDOWS

#: Default overlay colours (RGB uint8) by label index; tumour-like names get red (see label_colours).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (46, 204, 113),    # 1 green
    (231, 76, 60),     # 2 red
    (52, 152, 219),    # 3 blue
    (241, 196, 15),    # 4 yellow
    (155, 89, 182),    # 5 purple
    (230, 126, 34),    # 6 orange
    (26, 188, 156),    # 7 teal
)
_TUMOUR_WORDS = ("tumour", "tumor", "cancer", "lesion", "nodule", "mass", "metasta")


def resolve_window(window: str | tuple[float, float]) -> tuple[float, float]:
    """Return ``(level, width)`` in HU for a preset name, ``"L,W"`` or a ``(level, width)`` pair."""
    return parse_window(window)


def window_to_grey(hu: np.ndarray, window: str | tuple[float, float] = "abdomen") -> np.ndarray:
    """Map HU to grey levels: ``uint8`` array of the same shape (0 = ``L-W/2`` or less, 255 = ``L+W/2``).

    Example (abdomen, L40/W400): −160 HU → 0, 40 HU → 128 (127.5 rounded half-to-even), 240 HU → 255.
    """
    level, width = resolve_window(window)
    # FOV padding (-2048, -3024 outside the scanned circle) is shown as air, also in wide windows.
    x = (np.maximum(np.asarray(hu, dtype=np.float64), FOV_PADDING_HU) - (level - width / 2.0)) / width
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def label_colours(labels: Mapping[int, str] | None = None) -> dict[int, tuple[int, int, int]]:
    """Colour per foreground label: tumour-like names red, the others from :data:`PALETTE`.

    Giving "tumour" the same red in the liver task (label 2) and the lung task (label 1) keeps the
    book's figures consistent across chapters.
    """
    labels = dict(labels or {1: "label 1", 2: "label 2"})
    out: dict[int, tuple[int, int, int]] = {}
    others = [c for i, c in enumerate(PALETTE) if i not in (0, 2)]
    k = 0
    for idx in sorted(int(i) for i in labels):
        if idx == 0:
            continue
        name = str(labels.get(idx, labels.get(str(idx), ""))).lower()  # type: ignore[call-overload]
        if any(w in name for w in _TUMOUR_WORDS):
            out[idx] = PALETTE[2]
        else:
            out[idx] = others[k % len(others)]
            k += 1
    return out


def contour_mask(mask: np.ndarray) -> np.ndarray:
    """Inner boundary of a 2D boolean mask: pixels of ``mask`` with a 4-neighbour outside it.

    Pixels on the image border count as boundary, so a structure cut by the edge stays closed.
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"contour_mask expects a 2D mask, got shape {m.shape}")
    p = np.pad(m, 1, constant_values=False)
    interior = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return m & ~interior


def render_rgb(
    hu_slice: np.ndarray,
    window: str | tuple[float, float] = "abdomen",
    label_slice: np.ndarray | None = None,
    colours: Mapping[int, tuple[int, int, int]] | None = None,
    mode: str = "fill",
    opacity: float = 0.4,
) -> np.ndarray:
    """Render one 2D slice to RGB.

    Args:
        hu_slice: ``(H, W)`` HU values (already in display orientation).
        window: preset name or ``(level, width)`` in HU.
        label_slice: optional ``(H, W)`` integer labels (0 = background, not drawn).
        colours: ``{label: (r, g, b)}``; default :func:`label_colours`.
        mode: ``"fill"`` — label pixels become ``(1 - opacity) * grey + opacity * colour``;
            ``"contour"`` — only the boundary pixels, in the full colour (opacity ignored).
        opacity: fill blending weight in ``[0, 1]``.

    Returns:
        ``uint8`` array ``(H, W, 3)``.
    """
    grey = window_to_grey(hu_slice, window)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if label_slice is None:
        return rgb
    return overlay_rgb(rgb, label_slice, colours, mode, opacity)


def overlay_rgb(
    rgb: np.ndarray,
    label_slice: np.ndarray,
    colours: Mapping[int, tuple[int, int, int]] | None = None,
    mode: str = "fill",
    opacity: float = 0.4,
) -> np.ndarray:
    """Draw the labels of ``label_slice`` ``(H, W)`` onto ``rgb`` ``(H, W, 3)`` uint8 (see :func:`render_rgb`)."""
    if mode not in ("fill", "contour"):
        raise CTSegError(f"overlay mode must be 'fill' or 'contour', not {mode!r}")
    if not 0.0 <= float(opacity) <= 1.0:
        raise CTSegError(f"opacity must be in [0, 1], got {opacity}")
    lab = np.asarray(label_slice)
    if lab.shape != rgb.shape[:2]:
        raise CTSegError(f"label slice shape {lab.shape} differs from image slice shape {rgb.shape[:2]}")
    out = np.asarray(rgb, dtype=np.float64).copy()
    colours = colours if colours is not None else label_colours({int(v): "" for v in np.unique(lab)})
    for value in np.unique(lab):
        if value == 0:
            continue
        default = PALETTE[1 + (int(value) - 1) % (len(PALETTE) - 1)]
        colour = np.asarray(colours.get(int(value), default), dtype=np.float64)
        sel = lab == value
        if mode == "fill":
            out[sel] = (1.0 - opacity) * out[sel] + opacity * colour
        else:
            out[contour_mask(sel)] = colour
    return np.rint(np.clip(out, 0, 255)).astype(np.uint8)

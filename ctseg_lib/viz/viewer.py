"""Self-contained HTML/JS slice viewers: work with no kernel and no network.

A viewer is one HTML fragment (``_repr_html_``) with inline CSS, an inline ``<script>`` (the code
of ``viewer.js``) and the data: the volume downsampled to at most ``max_size`` pixels in-plane and
``max_slices`` slices, HU quantised to ``uint16`` codes (``hu = table[code]``, see
:func:`hu_levels`) stored as
two byte planes (high bytes, then low bytes — the high plane is nearly constant, so deflate
packs it to almost nothing), zlib-compressed and base64-encoded; label maps as ``uint8`` the same
way.  The browser inflates them with the standard ``DecompressionStream('deflate')``
(Compression Streams API, Chromium 80+, Firefox 113+, Safari 16.4+) and applies window/level
itself, which is why the presets can be switched in the static book.

Why not ipywidgets: widget outputs need a widget manager from a CDN on static pages and Python
callbacks need a kernel (see ``shared/references/jupyter-book-facts.md``); :mod:`.live` is the
kernel-side viewer.

Size: the finest soft-tissue HU step (1, 2, 4, 8 HU; then fewer pixels) whose page fits
``max_bytes`` is chosen; CT noise (σ ≈ 10–20 HU, less after in-plane averaging) hides a 2–4 HU step.
"""

from __future__ import annotations

import base64
import html
import json
import uuid
import zlib
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path

import numpy as np

from ..errors import CTSegError
from ..io import write_text_atomic
from .render import DISPLAY_WINDOWS, label_colours, resolve_window

HU_MIN, HU_MAX = -1024.0, 3071.0  # the 12-bit CT range; values outside are clipped
_JS_PATH = Path(__file__).with_name("viewer.js")
_CSS = """
.ctv{font:13px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;background:#fafafa;
 border:1px solid #ddd;border-radius:6px;padding:8px 10px;margin:6px 0;max-width:100%;overflow-x:auto}
.ctv-title{font-weight:600;margin-bottom:4px}.ctv-msg{color:#a00}
.ctv-panels{display:flex;flex-wrap:wrap;gap:8px}.ctv-panel{margin:0;text-align:center}
.ctv-canvas{display:block;background:#000;border-radius:3px;cursor:crosshair}
.ctv-cap{font-size:12px;color:#444;margin-top:2px}
.ctv-row{display:flex;flex-wrap:wrap;align-items:center;gap:4px 14px;margin-top:5px}
.ctv-slider{flex:1 1 260px;min-width:160px;max-width:520px}.ctv-slice{font-variant-numeric:tabular-nums;color:#333}
.ctv-group{display:inline-flex;align-items:center;gap:4px}.ctv-lbl{color:#666;font-size:12px}
.ctv-btn{font:inherit;font-size:12px;padding:1px 7px;border:1px solid #bbb;border-radius:4px;background:#fff;
 color:#222;cursor:pointer}.ctv-btn.ctv-on{background:#2c3e50;color:#fff;border-color:#2c3e50}
.ctv-chk{font-size:12px;cursor:pointer}.ctv-op{width:80px}
.ctv-leg{display:inline-flex;align-items:center;gap:3px;font-size:12px;margin-right:6px}
.ctv-sw{display:inline-block;width:12px;height:12px;border-radius:2px;border:1px solid #0004}
.ctv-note{font-size:11px;color:#777}
.ctv-bar{width:110px;height:10px;border:1px solid #999;image-rendering:auto}
.ctv-num,.ctv-win{font-size:12px;font-variant-numeric:tabular-nums}.ctv-win{color:#555;margin-left:6px}
.ctv-readout{font-size:12px;color:#333;margin-top:4px;min-height:1.4em;font-variant-numeric:tabular-nums}
"""


def _pack(data: bytes, compress: bool) -> dict[str, str]:
    if compress:
        return {"enc": "deflate", "b64": base64.b64encode(zlib.compress(data, 6)).decode("ascii")}
    return {"enc": "raw", "b64": base64.b64encode(data).decode("ascii")}


def _even(n: int, m: int, lo: int = 0, hi: int | None = None) -> np.ndarray:
    """``m`` indices spread evenly over ``[lo, hi]`` (all of them when the range is short)."""
    hi = n - 1 if hi is None else hi
    if hi - lo + 1 <= m:
        return np.arange(lo, hi + 1)
    return np.unique(np.rint(np.linspace(lo, hi, m)).astype(int))


def hu_levels(step: int) -> np.ndarray:
    """Quantisation levels (HU): ``step`` apart in the soft-tissue band [−300, 500) HU, where the
    narrow abdomen/liver windows need them, and ``4 * step`` apart in air, lung and bone, whose
    windows are ≥ 1500 HU wide (≈ 6 HU per grey level)."""
    coarse = 4 * step
    return np.unique(np.concatenate([np.arange(HU_MIN, -300, coarse), np.arange(-300, 500, step),
                                     np.arange(500, HU_MAX, coarse), [HU_MAX]]))


def quantise(hu: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Index of the nearest level of ``table`` (sorted) for every HU value → ``uint16`` codes."""
    x = np.clip(hu, table[0], table[-1])
    i = np.clip(np.searchsorted(table, x), 1, len(table) - 1)
    return np.where(np.abs(table[i - 1] - x) <= np.abs(table[i] - x), i - 1, i).astype(np.uint16)


def _box_mean(a: np.ndarray, axis: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Area-average ``a`` along ``axis`` into ``n_out`` boxes; also return each box's centre index.

    Averaging (not picking every k-th voxel) avoids aliasing and lowers the noise, which both looks
    better and compresses better.
    """
    n = a.shape[axis]
    if n_out >= n:
        return a, np.arange(n)
    edges = np.floor(np.arange(n_out + 1) * n / n_out).astype(int)
    sums = np.add.reduceat(a, edges[:-1], axis=axis)
    shape = [1] * a.ndim
    shape[axis] = n_out
    return sums / np.diff(edges).reshape(shape), (edges[:-1] + edges[1:] - 1) // 2


def choose_slices(nz: int, masks: list[np.ndarray], max_slices: int) -> np.ndarray:
    """Axial slice indices to embed: all of them if ``nz <= max_slices``; else evenly spread over
    the foreground z-range (union of ``masks``, with a 10 % margin, widened to ``max_slices``
    slices when shorter), or over the whole volume when there is no foreground.

    Even spacing keeps coronal/sagittal reformats geometrically right (one z step).
    """
    if nz <= max_slices:
        return np.arange(nz)
    fg = np.zeros(nz, bool)
    for m in masks:
        fg |= np.asarray(m).reshape(-1, nz).any(axis=0)  # (X, Y, Z) C-order: Z is the last axis
    if not fg.any():
        return _even(nz, max_slices)
    lo, hi = int(np.argmax(fg)), int(nz - 1 - np.argmax(fg[::-1]))
    margin = int(0.1 * (hi - lo + 1))
    lo, hi = max(0, lo - margin), min(nz - 1, hi + margin)
    while hi - lo + 1 < max_slices:
        lo, hi = max(0, lo - 1), min(nz - 1, hi + 1)
    return _even(nz, max_slices, lo, hi)


class _Viewer:
    """Common machinery of :class:`SliceViewer` and :class:`CompareViewer`."""

    display_px = 420

    def __init__(self, image_hu: np.ndarray, spacing, overlays: dict[str, np.ndarray | None],
                 panels: list[tuple[str, list[int]]], labels: Mapping[int, str] | None, window,
                 max_slices: int, max_size: int, mode: str, opacity: float, title: str | None,
                 affine: np.ndarray | None, compress: bool, max_bytes: int) -> None:
        image = np.asarray(image_hu)
        if image.ndim != 3 or min(image.shape) < 1:
            raise CTSegError(f"image must be a 3D (X, Y, Z) array, got shape {image.shape}")
        self.spacing = tuple(float(s) for s in spacing)
        if len(self.spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in self.spacing):
            raise CTSegError(f"spacing must be three positive numbers in mm, got {spacing!r}")
        for name, arr in overlays.items():
            if arr is not None and np.shape(arr) != image.shape:
                raise CTSegError(f"overlay {name!r} has shape {np.shape(arr)}, image has {image.shape}")
        if mode not in ("fill", "contour"):
            raise CTSegError(f"mode must be 'fill' or 'contour', not {mode!r}")
        if not 0 <= float(opacity) <= 1:
            raise CTSegError(f"opacity must be in [0, 1], got {opacity}")
        if isinstance(window, str):
            resolve_window(window)
            self.windows, self.window = dict(DISPLAY_WINDOWS), window
        else:
            self.windows = {"custom": resolve_window(window), **DISPLAY_WINDOWS}
            self.window = "custom"
        if max_slices < 1 or max_size < 8:
            raise CTSegError(f"max_slices must be ≥ 1 and max_size ≥ 8 (got {max_slices}, {max_size})")
        self.image, self.overlays = image, {k: v for k, v in overlays.items() if v is not None}
        self.panels, self.title, self.affine = panels, title, affine
        self.mode, self.opacity, self.compress, self.max_bytes = mode, float(opacity), compress, max_bytes
        self.max_slices, self.max_size = int(max_slices), int(max_size)
        present = set()
        for v in self.overlays.values():
            present |= {int(x) for x in np.unique(v) if x != 0}
        self.labels = {int(k): str(v) for k, v in (labels or {}).items() if int(k) != 0}
        for k in sorted(present - set(self.labels)):
            self.labels[k] = f"label {k}"
        self.colours = label_colours(self.labels)

    # ---- data -------------------------------------------------------------------------------------
    def _sample(self, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Downsampled HU ``(Z, Y, X)`` float64 and the source indices ``xs, ys, zs`` it came from."""
        X, Y, Z = self.image.shape
        scale = min(1.0, size / max(X, Y))
        zs = choose_slices(Z, [np.asarray(v) > 0 for v in self.overlays.values()], self.max_slices)
        # FOV padding (< -1024) counts as air before averaging, else it darkens the border pixels it
        # is averaged into (a dark ring at the scanned circle's edge).
        sub = np.maximum(self.image[:, :, zs].astype(np.float64), HU_MIN)
        sub, xs = _box_mean(sub, 0, max(1, round(X * scale)))
        sub, ys = _box_mean(sub, 1, max(1, round(Y * scale)))
        return np.ascontiguousarray(sub.transpose(2, 1, 0)), xs, ys, zs

    @cached_property
    def _config(self) -> dict:
        size, cfg = self.max_size, None
        while cfg is None:
            zyx, xs, ys, zs = self._sample(size)
            labs = [_pack(np.ascontiguousarray(np.asarray(v)[np.ix_(xs, ys, zs)].transpose(2, 1, 0))
                          .clip(0, 255).astype(np.uint8).tobytes(), self.compress)
                    for v in self.overlays.values()]
            for step in (1, 2, 4, 8):
                table = hu_levels(step)
                code = quantise(zyx, table)
                planes = np.concatenate([(code >> 8).astype(np.uint8).ravel(), (code & 255).astype(np.uint8).ravel()])
                hu = _pack(planes.tobytes(), self.compress)
                if len(hu["b64"]) + sum(len(b["b64"]) for b in labs) + 40_000 <= self.max_bytes:
                    break
            else:
                if size > 32:
                    size = int(size * 0.8)
                    continue
            cfg = self._make_config(xs, ys, zs, hu, labs, step, table)
        return cfg

    def _make_config(self, xs, ys, zs, hu, labs, step, table) -> dict:
        sx, sy, sz = self.spacing
        X, Y, _ = self.image.shape
        dz = sz * (zs[-1] - zs[0]) / (len(zs) - 1) if len(zs) > 1 else sz
        if self.affine is not None:
            aff = np.asarray(self.affine, float)
            pos = [[float(aff[a] @ np.r_[np.eye(3)[a] * i, 1.0]) for i in idx] for a, idx in enumerate((xs, ys, zs))]
        else:
            pos = [[float(i * s) for i in idx] for idx, s in zip((xs, ys, zs), self.spacing)]
        # open on the slice with the most of the first overlay (the ground truth, when given), so a
        # missed lesion is on screen, not the prediction's largest false positive; else all overlays
        masks = [np.asarray(v) > 0 for v in self.overlays.values()]
        area = [int(masks[0][:, :, k].sum()) for k in zs] if masks else []
        if not any(area):
            area = [sum(int(m[:, :, k].sum()) for m in masks) for k in zs]
        start = int(np.argmax(area)) if any(area) else len(zs) // 2
        names = list(self.overlays)
        return {
            "title": self.title or "", "shape": [len(xs), len(ys), len(zs)],
            "extent_mm": [X * sx, Y * sy, len(zs) * dz],
            "xs": xs.tolist(), "ys": ys.tolist(), "zs": zs.tolist(), "pos_mm": pos, "start": start,
            "hu": {**hu, "step": step, "table": [int(v) for v in table]},
            "overlays": [{"name": n, **b} for n, b in zip(names, labs)],
            "panels": [{"title": t, "overlays": [names.index(n) for n in ov]} for t, ov in self.panels],
            "labels": {str(k): {"name": v, "color": list(self.colours[k])} for k, v in sorted(self.labels.items())},
            "windows": {k: list(v) for k, v in self.windows.items()}, "window": self.window,
            "mode": self.mode, "opacity": self.opacity, "display_px": self.display_px,
        }

    # ---- HTML -------------------------------------------------------------------------------------
    def _repr_html_(self) -> str:
        uid = "ctv-" + uuid.uuid4().hex[:12]  # fresh per rendering: two displays never share ids
        # JSON inside <script>: escape <, >, & so no string can close the element or open a comment.
        data = json.dumps(self._config, ensure_ascii=True, separators=(",", ":"))
        data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        js = _JS_PATH.read_text(encoding="utf-8")
        title = html.escape(self.title or "CT viewer")
        boot = (f"(function(){{\n{js}\nvar s=document.currentScript,p=s&&s.parentNode;"
                f"var q=function(i){{return (p&&p.querySelector('#'+i))||document.getElementById(i);}};"
                f"ctsegViewer(q({json.dumps(uid)}),JSON.parse(q({json.dumps(uid + '-cfg')}).textContent));}})();")
        return (f'<div class="ctv-wrap"><style>{_CSS}</style>'
                f'<div class="ctv" id="{uid}" aria-label="{title}"><noscript>{title}: this viewer needs '
                f'JavaScript.</noscript></div>'
                f'<script type="application/json" id="{uid}-cfg">{data}</script>'
                f"<script>{boot}</script></div>")

    @property
    def html_size(self) -> int:
        """Size in bytes (UTF-8) of the viewer's HTML fragment."""
        return len(self._repr_html_().encode("utf-8"))

    def save(self, path: str | Path) -> Path:
        """Write a standalone HTML page (atomic) and return its path."""
        title = html.escape(self.title or "CT viewer")
        page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                f'<link rel="icon" href="data:,"></head>'
                f"<body>{self._repr_html_()}</body></html>\n")
        write_text_atomic(path, page)
        return Path(path)


class SliceViewer(_Viewer):
    """One image with toggleable overlays (ground truth and/or predictions).

    Args:
        image_hu: ``(X, Y, Z)`` HU array in canonical RAS+ (as from ``load_nifti``).
        spacing: ``(sx, sy, sz)`` voxel size in mm.
        label: optional ``(X, Y, Z)`` ground-truth labels.
        pred: optional prediction ``(X, Y, Z)`` or ``{name: (X, Y, Z)}``.
        labels: ``{index: name}`` (e.g. from ``dataset.json``).
        window: initial preset (``abdomen``, ``liver``, ``lung``, ``bone``) or ``(level, width)`` HU.
        max_slices, max_size: caps on embedded slices and in-plane pixels.
        mode, opacity: initial overlay style (``fill``/``contour``) and fill opacity.
        affine: optional voxel→world matrix; positions are shown in world mm instead of index × spacing.
        compress: zlib + ``DecompressionStream``; ``False`` for very old browsers (≈ 3× larger).
        max_bytes: page-weight budget that picks the HU quantisation step.
    """

    def __init__(self, image_hu, spacing, label=None, pred=None, labels: Mapping[int, str] | None = None,
                 window="abdomen", max_slices: int = 64, max_size: int = 192, mode: str = "fill",
                 opacity: float = 0.4, title: str | None = None, affine=None, compress: bool = True,
                 max_bytes: int = 1_500_000) -> None:
        preds = pred if isinstance(pred, Mapping) else ({"prediction": pred} if pred is not None else {})
        overlays = {"ground truth": label, **dict(preds)}
        names = [n for n, v in overlays.items() if v is not None]
        super().__init__(image_hu, spacing, overlays, [("", names)],
                         labels, window, max_slices, max_size, mode, opacity, title, affine, compress, max_bytes)


class CompareViewer(_Viewer):
    """Side by side: image | panel 1 | panel 2 … all scrolled by one slider.

    ``panels`` maps a caption to a label map, e.g. ``{"ground truth": gt, "2D U-Net": p1}``.
    Other arguments as :class:`SliceViewer`.
    """

    display_px = 300

    def __init__(self, image_hu, spacing, panels: Mapping[str, np.ndarray], labels: Mapping[int, str] | None = None,
                 window="abdomen", max_slices: int = 64, max_size: int = 160, mode: str = "fill",
                 opacity: float = 0.4, title: str | None = None, affine=None, compress: bool = True,
                 max_bytes: int = 2_500_000) -> None:
        if not panels:
            raise CTSegError("CompareViewer needs at least one panel {name: label map}")
        layout = [("image", [])] + [(str(n), [str(n)]) for n in panels]
        super().__init__(image_hu, spacing, {str(k): v for k, v in panels.items()}, layout, labels, window,
                         max_slices, max_size, mode, opacity, title, affine, compress, max_bytes)

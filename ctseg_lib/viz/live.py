"""Live viewer for a running kernel (Jupyter, Colab): ipywidgets with Python callbacks.

Shows full-resolution slices (no downsampling, no quantisation) with window/level sliders and
overlay toggles.  Needs a kernel: on a static page the sliders move but the image never changes
(see ``shared/references/jupyter-book-facts.md``), so the book uses :class:`.viewer.SliceViewer`.
ipywidgets is imported lazily (optional extra ``ctseg-lib[widgets]``).
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np

from ..data.nifti import axial_display
from ..errors import CTSegError
from .render import DISPLAY_WINDOWS, label_colours, overlay_rgb, render_rgb, resolve_window


def _png(rgb: np.ndarray, spacing, scale: float) -> bytes:
    from PIL import Image

    h, w = rgb.shape[:2]
    size = (max(1, round(w * float(spacing[0]) * scale)), max(1, round(h * float(spacing[1]) * scale)))
    buf = io.BytesIO()
    Image.fromarray(rgb).resize(size, Image.NEAREST).save(buf, format="PNG")
    return buf.getvalue()


def live_viewer(image: np.ndarray, spacing, label=None, pred=None, labels: Mapping[int, str] | None = None,
                window="abdomen", mode: str = "fill", opacity: float = 0.4, display_px: int = 512):
    """Return an ``ipywidgets.VBox``: axial slider, window preset + level/width sliders (HU),
    overlay checkboxes (ground truth, predictions), style and opacity, and the rendered slice.

    ``pred`` may be one ``(X, Y, Z)`` array or ``{name: array}``.  The PNG is re-rendered in Python
    on every change, at full resolution, scaled so one pixel keeps its physical aspect (mm).
    """
    try:
        import ipywidgets as W
    except ImportError:
        raise CTSegError("the live viewer needs ipywidgets: pip install 'ctseg-lib[widgets]'") from None
    image = np.asarray(image)
    if image.ndim != 3:
        raise CTSegError(f"image must be a 3D (X, Y, Z) array, got shape {image.shape}")
    preds = pred if isinstance(pred, Mapping) else ({"prediction": pred} if pred is not None else {})
    overlays = {k: np.asarray(v) for k, v in {"ground truth": label, **preds}.items() if v is not None}
    for k, v in overlays.items():
        if v.shape != image.shape:
            raise CTSegError(f"{k} has shape {v.shape}, image has {image.shape}")
    present = sorted({int(x) for v in overlays.values() for x in np.unique(v) if x})
    names = {**{k: f"label {k}" for k in present}, **{int(k): str(v) for k, v in (labels or {}).items()}}
    colours = label_colours(names)
    level, width = resolve_window(window)
    X, Y, Z = image.shape
    scale = display_px / max(X * float(spacing[0]), Y * float(spacing[1]))
    fg = [int(sum((v[:, :, k] > 0).sum() for v in overlays.values())) for k in range(Z)]

    z = W.IntSlider(value=int(np.argmax(fg)) if any(fg) else Z // 2, min=0, max=Z - 1, description="slice k",
                    continuous_update=True, layout=W.Layout(width="520px"))
    preset = W.Dropdown(options=[*DISPLAY_WINDOWS, "custom"],
                        value=window if isinstance(window, str) else "custom", description="window")
    lvl = W.FloatSlider(value=level, min=-1000, max=1500, step=5, description="level (HU)")
    wid = W.FloatSlider(value=width, min=10, max=3000, step=10, description="width (HU)")
    toggles = {k: W.Checkbox(value=True, description=k, indent=False) for k in overlays}
    style = W.ToggleButtons(options=["fill", "contour"], value=mode, description="style")
    alpha = W.FloatSlider(value=opacity, min=0, max=1, step=0.05, description="opacity")
    img = W.Image(format="png")
    info = W.HTML()

    def redraw(*_):
        k = z.value
        hu = axial_display(image[:, :, k])
        rgb = render_rgb(hu, (lvl.value, wid.value))
        shown = [n for n in overlays if toggles[n].value]
        for rank, name in enumerate(shown):  # first overlay as chosen, the others as outlines
            rgb = overlay_rgb(rgb, axial_display(overlays[name][:, :, k]), colours,
                              style.value if rank == 0 else "contour", alpha.value)
        img.value = _png(rgb, spacing, scale)
        info.value = (f"axial {k + 1}/{Z} · z = {k * float(spacing[2]):.1f} mm · L {lvl.value:g} / W {wid.value:g} HU"
                      " · " + " ".join(f"<span style='color:rgb{colours[c]}'>■</span> {names[c]}" for c in colours))

    def on_preset(change):
        if change["new"] in DISPLAY_WINDOWS:
            lvl.value, wid.value = DISPLAY_WINDOWS[change["new"]]

    preset.observe(on_preset, names="value")
    for w in (z, lvl, wid, style, alpha, *toggles.values()):
        w.observe(redraw, names="value")
    redraw()
    controls = [W.HBox([z]), W.HBox([preset, lvl, wid])]
    if overlays:
        controls.append(W.HBox([*toggles.values(), style, alpha]))
    box = W.VBox([img, info, *controls])
    box._ctseg_redraw = redraw  # for tests: the callback that renders the current state
    return box

"""Visualisation: static HTML/JS viewers (no kernel, offline), live ipywidgets viewer, figures, GIFs.

The static viewers are what the book shows: :class:`SliceViewer` and :class:`CompareViewer` embed
the data and the JavaScript in one HTML fragment.  :func:`live_viewer` needs a running kernel.
"""

from .render import (
    DISPLAY_WINDOWS,
    contour_mask,
    label_colours,
    overlay_rgb,
    render_rgb,
    resolve_window,
    window_to_grey,
)
from .viewer import CompareViewer, SliceViewer, choose_slices

__all__ = [
    "DISPLAY_WINDOWS", "CompareViewer", "SliceViewer", "choose_slices", "contour_mask", "hu_histogram",
    "label_colours", "live_viewer", "montage", "overlay_rgb", "plot_training_curves", "render_rgb", "resolve_window",
    "save_gif", "show_slice", "window_to_grey",
]


def __getattr__(name: str):
    # matplotlib / Pillow / ipywidgets load only when a figure, GIF or live viewer is asked for.
    if name in ("show_slice", "montage", "plot_training_curves", "hu_histogram"):
        from . import figures
        return getattr(figures, name)
    if name == "save_gif":
        from .gif import save_gif
        return save_gif
    if name == "live_viewer":
        from .live import live_viewer
        return live_viewer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

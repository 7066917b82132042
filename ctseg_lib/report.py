"""Small report helpers the chapters share: HTML tables without pandas.

One definition for the whole book (d2l's rule: code a chapter uses twice lives in the library).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import CTSegError


def format_cell(value: object, fmt: str = "{:.3f}") -> str:
    """One table cell as text: floats through ``fmt`` (NaN as "NaN"), everything else ``str()``."""
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else fmt.format(value)
    return "" if value is None else str(value)


def table_html(rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None,
               fmt: str | Mapping[str, str] = "{:.3f}") -> str:
    """An HTML ``<table>`` of ``rows`` (dicts) as a string.

    Args:
        rows: one dict per row; a missing key gives an empty cell.
        columns: column order (default: the keys of the first row).
        fmt: format of float cells, one string for all columns or ``{column: format}``
            (columns not named use ``"{:.3f}"``).

    Header and cell text are HTML-escaped.
    """
    columns = list(columns if columns is not None else (rows[0] if rows else []))
    formats = fmt if isinstance(fmt, Mapping) else {}
    default = fmt if isinstance(fmt, str) else "{:.3f}"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(format_cell(r.get(c), formats.get(c, default)))}</td>"
                         for c in columns) + "</tr>"
        for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None,
               fmt: str | Mapping[str, str] = "{:.3f}"):
    """:func:`table_html` wrapped in ``IPython.display.HTML``, for ``display(...)`` in a chapter."""
    from IPython.display import HTML

    return HTML(table_html(rows, columns, fmt))


def image_html(path: str | Path, alt: str):
    """A PNG / GIF / JPEG file embedded in the page (base64 ``<img>``), as ``IPython.display.HTML``.

    Embedded rather than linked so the built book is self-contained; HTML rather than
    ``IPython.display.Image`` because myst-nb renders no ``image/gif`` output.
    """
    import base64

    from IPython.display import HTML

    path = Path(path)
    mime = {".gif": "image/gif", ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}.get(
        path.suffix.lower())
    if mime is None:
        raise CTSegError("image_html embeds .gif, .png or .jpg files", path)
    data = base64.b64encode(path.read_bytes()).decode()
    return HTML(f'<img src="data:{mime};base64,{data}" alt="{html.escape(alt, quote=True)}">')

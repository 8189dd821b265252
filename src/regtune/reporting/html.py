"""HTML every page of regtune shares: escaping, the base style, tables, figures and the page head.

Pages are self-contained (inline CSS, no script, no external fonts or links that need a network), so a
report or explanation folder can be copied anywhere and opened offline.
"""

from __future__ import annotations

import base64
import html
import os
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import numpy as np

from regtune.core.errors import ConfigError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

#: The style every page starts from; pages add their own rules after it.
BASE_CSS = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;max-width:1300px;"
    "padding:1.2em 1.6em 3em;color:#1d1d1f;line-height:1.45}"
    "h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ccc}"
    "h3{margin-bottom:.3em}"
    "table{border-collapse:collapse;margin:.5em 0 1.2em;font-size:.9em}"
    "th,td{border:1px solid #d0d0d0;padding:.25em .55em;text-align:left;vertical-align:top}"
    "th{background:#f0f2f5}tbody tr:nth-child(even){background:#fafbfc}.scroll{overflow-x:auto}"
    "td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}"
    ".aid{background:#f3f7fc;border-left:4px solid #3b78c3;padding:.6em 1em;max-width:62em}"
    ".note{color:#6b4e00}figure{margin:1em 0}figure img{max-width:100%;height:auto}"
    "figcaption{font-size:.85em;color:#555}code,pre{font-size:.88em}"
)

#: A table cell: (css class, already escaped html) or (css class, html, rowspan).
Cell = tuple[str, str] | tuple[str, str, int]


def escape(value: Any) -> str:
    """Text (names, paths, user data) made safe for HTML and for quoted attributes."""
    return html.escape(str(value), quote=True)


def text_direction(text: str) -> Literal["ltr", "rtl"]:
    """The direction of ``text`` by its first strong character, the rule of HTML's ``dir=auto``.

    ``rtl`` for Arabic, Hebrew and other right-to-left letters; ``ltr`` for Latin, Cyrillic, Bengali,
    Telugu, Hangul, ..., and for text with no strong character (digits, punctuation).
    """
    for char in text:
        kind = unicodedata.bidirectional(char)
        if kind in ("R", "AL"):
            return "rtl"
        if kind == "L":
            return "ltr"
    return "ltr"


def has_rtl(text: str) -> bool:
    """Whether ``text`` holds any right-to-left letter (then its element needs a direction)."""
    return any(unicodedata.bidirectional(char) in ("R", "AL") for char in text)


def page_head(title: str, css: str, subtitle: str = "") -> list[str]:
    """The opening of a page: doctype, inline CSS (BASE_CSS then ``css``), title and subtitle."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{BASE_CSS}{css}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
    ]
    if subtitle:
        parts.append(f"<p>{escape(subtitle)}</p>")
    return parts


def _td(cell: Cell) -> str:
    cls, text = cell[0], cell[1]
    attrs = f' class="{cls}"' if cls else ""
    # Example text in a cell (a token, an answer) is laid out by its own direction; the page stays LTR.
    attrs += ' dir="auto"' if has_rtl(text) else ""
    if len(cell) > 2 and cell[2] > 1:
        attrs += f' rowspan="{cell[2]}"'
    return f"<td{attrs}>{text}</td>"


def table(head: Sequence[str], rows: Iterable[Sequence[Cell]]) -> str:
    """An HTML table in a horizontally scrolling box (a wide table never pushes the page sideways)."""
    out = ['<div class="scroll"><table>', "<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head)]
    out.append("</tr></thead><tbody>")
    out.extend("<tr>" + "".join(_td(cell) for cell in row) + "</tr>" for row in rows)
    out.append("</tbody></table></div>")
    return "".join(out)


def records_table(records: Sequence[Mapping[str, Any]]) -> str:
    """A table of dict rows (columns in first-seen order); numbers right-aligned, floats to 4 digits."""
    columns = list(dict.fromkeys(key for row in records for key in row))
    rows = []
    for record in records:
        cells: list[Cell] = []
        for key in columns:
            value = record.get(key, "")
            if isinstance(value, float | np.floating):
                cells.append(("num", escape(f"{value:.4g}")))
            elif isinstance(value, int | np.integer) and not isinstance(value, bool):
                cells.append(("num", escape(value)))
            else:
                cells.append(("", escape(value)))
        rows.append(cells)
    return table(columns, rows)


def linked_figure(png: str, svg: str, alt: str, caption: str) -> str:
    """A figure whose PNG (and SVG link) lie beside the page."""
    return (
        f'<figure><img src="{escape(png)}" alt="{escape(alt)}">'
        f'<figcaption>{escape(caption)} (<a href="{escape(svg)}">SVG</a>)</figcaption></figure>'
    )


def png_figure(path: Path, page_dir: Path | None = None) -> str:
    """A PNG embedded as a data URI, so the page alone is the whole result; or, with ``page_dir``, linked
    by its path relative to the page (for plots that are written beside the page anyway)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read image ({err.__class__.__name__})") from err
    if not data.startswith(PNG_MAGIC):
        raise ConfigError(f"{path}: not a PNG file; pages embed PNG plots only")
    if page_dir is None:
        src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    else:
        src = quote(Path(os.path.relpath(path.resolve(), page_dir.resolve())).as_posix())
    caption = f"<figcaption>{escape(path.name)}</figcaption>"
    return f'<figure><img src="{escape(src)}" alt="{escape(path.stem)}">{caption}</figure>'

"""Figures every page of regtune draws: an Agg figure, and atomic PNG (and SVG) files of it.

One place for how plots are made and saved, so the sweep report, the explanation pages and the artifact
analysis render alike: no display needed, rendered in memory and written atomically (a killed run never
leaves half an image), and reproducible files (no dates or software stamps in them).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from regtune.core.io import atomic_write_bytes

DPI = 110


def new_figure(width: float, height: float) -> Any:
    """A matplotlib Figure on the Agg canvas with constrained layout (no pyplot state, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Any, path: str | Path) -> Path:
    """Write ``figure`` to ``path`` as PNG, atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return atomic_write_bytes(path, buffer.getvalue())


def save_png_and_svg(figure: Any, folder: Path, stem: str) -> list[str]:
    """Write ``folder/stem.png`` and ``folder/stem.svg`` atomically; returns the two file names."""
    import matplotlib

    names = [f"{stem}.png", f"{stem}.svg"]
    save_png(figure, folder / names[0])
    # Fixed SVG ids and no dates: the same figure gives the same file.
    with matplotlib.rc_context({"svg.hashsalt": "regtune", "svg.fonttype": "path"}):
        buffer = io.BytesIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
        atomic_write_bytes(folder / names[1], buffer.getvalue())
    return names


def plot_text(text: str) -> str:
    """Matplotlib reads ``$...$`` as maths; a dev or model name must show as written."""
    return text.replace("$", r"\$")


def colours(n: int, name: str = "tab10") -> list[Any]:
    """``n`` colours of a matplotlib colormap (the first ``n`` of a qualitative one, else spread out)."""
    from matplotlib import colormaps

    cmap = colormaps[name]
    if name == "tab10":
        return [cmap(i) for i in range(n)]
    return [cmap(x) for x in np.linspace(0.0, 0.9, max(n, 1))]

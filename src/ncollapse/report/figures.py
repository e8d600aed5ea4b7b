"""The one way ncollapse makes a matplotlib figure and its PNG: an Agg canvas, no pyplot, so no global state.

Every figure of the reports, the experiments, the NCMC toy and the UFM lab is made by ``figure`` (or
``figure_row``) and rendered by ``png_bytes`` / ``write_png``.
"""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .._io import atomic_write_bytes

__all__ = ["DPI", "figure", "figure_row", "png_bytes", "write_png"]

DPI = 100


def figure(width: float, height: float, *, layout: str | None = "constrained") -> Figure:
    """An empty ``width`` × ``height`` inch Figure on an Agg canvas (``layout=None``: place the axes by hand)."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def figure_row(width: float, height: float, ncols: int = 1) -> tuple[Figure, list]:
    """(Figure, axes list): one row of ``ncols`` panels, constrained layout."""
    fig = figure(width, height)
    return fig, fig.subplots(1, ncols, squeeze=False).ravel().tolist()


def png_bytes(fig: Figure, dpi: int = DPI) -> bytes:
    """``fig`` rendered as PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def write_png(path, fig: Figure, dpi: int = DPI, outputs=None):
    """Write ``fig`` as a PNG to ``path`` atomically; returns the path. ``outputs``: the command's
    ``io_safe.Outputs`` that claimed ``path`` (it writes and records the file)."""
    if outputs is not None:
        return outputs.write_bytes(path, png_bytes(fig, dpi))
    return atomic_write_bytes(path, png_bytes(fig, dpi))

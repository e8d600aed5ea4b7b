"""Multi-panel page figures from plain numbers: line panels, per-class bar panels and annotated heatmaps.

The NCMC results page (``benchmarks/ncmc_cpu.py``) draws the paper's figures at CPU scale with these three
shapes (Yan et al. 2024: Fig. 1 per-class accuracy and collapse curves, Fig. 4 Loss P curves, Fig. 5/Table 6
the f × θ grid, Fig. 6/7 Gram heatmaps). Each function takes the numbers, not run directories, and returns a
``matplotlib.figure.Figure``; ``figures.png_bytes`` renders it.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from .figures import figure

__all__ = ["line_panels", "bar_panels", "heatmap_panels"]


def _grid(n: int, ncols: int, width: float, height: float):
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = figure(width * ncols, height * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def line_panels(panels: list[tuple[str, dict]], xlabel: str, ylabel: str, *, log: bool = False, ncols: int = 4,
                suptitle: str = "", styles: dict | None = None) -> Figure:
    """One panel per (title, {label: (x, y)}); ``log`` puts y on a log axis (non-positive values are dropped);
    ``styles`` maps a label to Line2D keyword arguments (e.g. a dashed line for one series)."""
    if not panels:
        raise ValueError("line_panels needs at least one panel")
    fig, axes = _grid(len(panels), ncols, 3.6, 2.8)
    for ax, (title, series) in zip(axes, panels):
        for label, (x, y) in series.items():
            x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
            keep = np.isfinite(y) & ((y > 0) if log else True)
            ax.plot(x[keep], y[keep], label=label, **(styles or {}).get(label, {}))
        if log:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(True, alpha=0.3)
        if series:
            ax.legend(fontsize=6)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig


def bar_panels(panels: list[tuple[str, list[str], dict]], ylabel: str, *, ncols: int = 2, suptitle: str = "") -> Figure:
    """One panel per (title, category labels, {series: values}): grouped bars, one colour per series."""
    if not panels:
        raise ValueError("bar_panels needs at least one panel")
    fig, axes = _grid(len(panels), ncols, 5.2, 2.9)
    for ax, (title, categories, series) in zip(axes, panels):
        x = np.arange(len(categories))
        width = 0.8 / max(1, len(series))
        for i, (label, values) in enumerate(series.items()):
            if len(values) != len(categories):
                raise ValueError(f"bar_panels: series {label!r} of panel {title!r} has {len(values)} values for "
                                 f"{len(categories)} categories")
            ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=label)
        ax.set_xticks(x, categories, fontsize=7, rotation=30, ha="right")
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig


def heatmap_panels(panels: list[tuple[str, np.ndarray, list[str], list[str], list[list[str]] | None]], *,
                   vmin: float, vmax: float, cmap: str = "viridis", ncols: int = 3, suptitle: str = "",
                   colorbar: str = "") -> Figure:
    """One heatmap per (title, matrix, row labels, column labels, cell texts or None), one shared colour scale."""
    if not panels:
        raise ValueError("heatmap_panels needs at least one panel")
    fig, axes = _grid(len(panels), ncols, 3.8, 3.4)
    image = None
    for ax, (title, matrix, rows, cols, texts) in zip(axes, panels):
        matrix = np.asarray(matrix, dtype=float)
        if matrix.shape != (len(rows), len(cols)):
            raise ValueError(f"heatmap_panels: panel {title!r} is {matrix.shape} but has {len(rows)} row and "
                             f"{len(cols)} column labels")
        image = ax.imshow(matrix, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest", aspect="auto")
        ax.set_xticks(range(len(cols)), cols, fontsize=7)
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
        ax.set_title(title, fontsize=9)
        for (i, j), text in np.ndenumerate(np.asarray(texts, dtype=object)) if texts is not None else ():
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if matrix[i, j] < (vmin + vmax) / 2
                    else "black")
    fig.colorbar(image, ax=list(axes), shrink=0.85, label=colorbar)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig

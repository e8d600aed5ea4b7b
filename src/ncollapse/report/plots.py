"""Matplotlib figures of one or several runs (Agg canvas, no pyplot, so no global figure state).

Every function returns a ``matplotlib.figure.Figure`` made by ``figures.figure``; ``figures.png_bytes`` renders one.
Curves of several runs are overlaid with one colour per run. NC metrics are drawn on log axes; a metric that reaches zero
(``ncc_mismatch`` at full collapse) uses symlog, one that changes sign (minority cosines) a linear axis, and the
panel title says so.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import (Formatter, Locator, LogFormatterSciNotation, LogLocator, MaxNLocator, NullLocator,
                               ScalarFormatter)

from ..metrics import GROUPS
from .figures import figure
from . import ncpanels
from .ncpanels import flat_runs, y_label
from .runs import Run

__all__ = ["normalized_gram", "metric_grid", "metric_panel", "run_colors", "accuracy_figure", "loss_figure",
           "per_class_figure", "group_bars_figure", "gram_figure", "spectrum_figure", "confusion_figure",
           "sorted_by_size", "ordered_nc_keys", "test_key"]

GROUP_COLORS = {"head": "#dbe9f6", "medium": "#fdf0d5", "tail": "#f9dcdc"}
# Core NC metrics first (Papyan et al. 2020 NC1–NC4; Galanti et al. 2021 CDNV), every other key after them.
CORE_ORDER = ("nc1", "nc1_quotient", "cdnv", "etf_error_means", "etf_error_weights", "self_duality",
              "duality_papyan", "equinorm_means", "equinorm_weights", "equiangularity_means",
              "equiangularity_weights", "max_angle_means", "max_angle_weights", "ncc_mismatch", "ncc_accuracy")
# Bookkeeping counts measure() reports alongside the metrics; not curves worth a panel.
BOOKKEEPING = ("num_classes", "num_present_classes", "num_measured_classes", "num_classes_below_min_count",
               "num_samples", "dim", "ddof", "min_count", "cdnv_exponent")
# Σ_B eigenvalues below this fraction of the largest are drawn as numerically zero (a display floor; measure's own
# cut-off is the rank rule of ncollapse.rank, reported as sigma_b_cutoff).
SPECTRUM_RTOL = 1e-10


def _colors(n: int) -> list:
    return [f"C{i % 10}" for i in range(n)]


def run_colors(runs: list[Run]) -> list[str]:
    """The hex colour of each run's curves (matplotlib's default cycle, as every figure here uses)."""
    return [to_hex(c) for c in _colors(len(runs))]


class _WithZero(Locator):
    """The positive ticks of ``inner`` plus a tick at 0 (a symlog axis that holds zeros shows where they are)."""

    def __init__(self, inner: Locator):
        self.inner = inner

    def set_axis(self, axis):
        super().set_axis(axis)
        self.inner.set_axis(axis)

    def __call__(self):
        return np.union1d([0.0], [t for t in self.inner() if t > 0])


class _ZeroLabel(Formatter):
    """Labels 0 as "0" and every other tick as ``inner`` does."""

    def __init__(self, inner: Formatter):
        self.inner = inner

    def set_axis(self, axis):
        super().set_axis(axis)
        self.inner.set_axis(axis)

    def set_locs(self, locs):
        super().set_locs(locs)
        self.inner.set_locs([loc for loc in locs if loc != 0])

    def __call__(self, x, pos=None):
        return "0" if x == 0 else self.inner(x, pos)


def _set_value_scale(ax, values: np.ndarray) -> str:
    """Pick the y scale of an NC metric and return its name.

    log when every finite value is > 0; symlog (linear threshold = smallest non-zero value) when some are 0 and
    none negative (``ncc_mismatch`` at full collapse), with a tick labelled 0; linear when values change sign
    (cosines) or are all 0.
    Axes spanning less than a decade get a few plain-number ticks, up to three decades ticks at 1, 2, 5 × 10^k.
    """
    finite = values[np.isfinite(values)]
    positive = finite[finite > 0]
    if not positive.size or (finite < 0).any():
        return "linear"
    if positive.size == finite.size:
        ax.set_yscale("log")
        scale = "log"
    else:
        ax.set_yscale("symlog", linthresh=float(positive.min()))
        ax.set_ylim(bottom=-0.3 * float(positive.min()))  # zeros (full NCC agreement) stay whole on the axis
        scale = "symlog"
    ax.yaxis.set_minor_locator(NullLocator())
    lo, hi = float(positive.min()), float(positive.max())
    if 10 * lo <= hi < 1000 * lo:
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(LogFormatterSciNotation(labelOnlyBase=False))
    elif hi < 10 * lo:
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.yaxis.set_major_formatter(ScalarFormatter(useOffset=False))
        if scale == "log":
            pad = (hi / lo) ** 0.08 if hi > lo else 1.25
            ax.set_ylim(lo / pad, hi * pad)
    if scale == "symlog":
        ax.yaxis.set_major_locator(_WithZero(ax.yaxis.get_major_locator()))
        ax.yaxis.set_major_formatter(_ZeroLabel(ax.yaxis.get_major_formatter()))
    return scale


def ordered_nc_keys(keys: list[str], prefix: str) -> list[str]:
    """``keys`` (with ``prefix``) minus bookkeeping, core metrics first in CORE_ORDER, the rest sorted."""
    names = {k[len(prefix):]: k for k in keys if k[len(prefix):] not in BOOKKEEPING}
    core = [names[n] for n in CORE_ORDER if n in names]
    return core + sorted(k for n, k in names.items() if n not in CORE_ORDER)


def test_key(key: str) -> str:
    """The metrics.jsonl key of the same metric on the test features: ``nc/x`` → ``nc_test/x``."""
    head, _, name = key.partition("/")
    return f"{head}_test/{name}"


def _draw_metric(ax, runs: list[Run], key: str, size: float, titled: bool = True) -> bool:
    """Draw ``key`` (solid) and its test-feature twin (dashed) for every run on ``ax``; runs whose series is flat
    while another run's varies (``ncpanels.flat_runs``) are left out and named in the panel. Returns whether a test
    series was drawn."""
    flat = flat_runs(runs, key)
    values, has_test = [], False
    for run, color in zip(runs, _colors(len(runs))):
        if run.label in flat:
            continue
        for series_key, style in ((key, "-"), (test_key(key), "--")):
            epochs, y = run.series(series_key)
            if epochs.size:
                ax.plot(epochs, y, style, marker="o", ms=2.5 * size, lw=1.2 * size, color=color)
                values.append(y)
                has_test |= style == "--"
    scale = _set_value_scale(ax, np.concatenate(values) if values else np.zeros(0))
    name = key.partition("/")[2]
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    label = f"{key} ({scale} scale)" if scale != "log" else key
    if titled:
        ax.set_title(ncpanels.title(name), fontsize=8.5 * size, pad=12 * size)
        ax.text(0.5, 1.01, label, transform=ax.transAxes, ha="center", va="bottom", fontsize=6.5 * size, color="0.4")
    elif scale != "log":
        ax.set_title(f"{scale} scale", fontsize=7 * size, color="0.4")
    ax.set_ylabel(y_label(name), fontsize=7 * min(size, 1.0))
    ax.tick_params(labelsize=7 * size)
    ax.grid(True, which="major", alpha=0.3)
    if flat:
        text = "\n".join(["not drawn (flat):", *(f"{lab} = {value:.1g}" for lab, value in flat.items())])
        ax.text(0.03, 0.04, text, transform=ax.transAxes, fontsize=6 * size, color="0.35", va="bottom")
    return has_test


def _style_legend(fig, runs: list[Run], has_test: bool, y: float, fontsize: float, with_runs: bool = True) -> None:
    handles = [Line2D([], [], color=c, lw=1.5, label=run.label) for run, c in zip(runs, _colors(len(runs)))
               if len(runs) > 1 and with_runs]
    handles.append(Line2D([], [], color="0.3", lw=1.2, ls="-", label="training"))
    if has_test:
        handles.append(Line2D([], [], color="0.3", lw=1.2, ls="--", label="test"))
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, y), fontsize=fontsize,
               ncols=min(len(handles), 4), frameon=False)


def metric_grid(runs: list[Run], keys: list[str], ncols: int = 4) -> Figure:
    """One panel per metric key vs epoch, every run overlaid (log scale where the values allow); the same metric
    on the test features (``test_key``) dashed beside the training features (solid). Each panel is titled by
    ``ncpanels.title`` with the key in small type under it; y axis: what is measured.

    Laid out by hand (no layout engine) and without minor ticks: a grid of ~30 log panels then renders in about
    half a second instead of two. The legend (runs' colours, line styles) sits above the panels, outside the data.
    """
    ncols = min(ncols, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    top = 0.75
    height = 2.5 * nrows + top + 0.45
    fig = figure(3.2 * ncols, height, layout=None)
    fig.subplots_adjust(left=0.09, right=0.98, top=1 - top / height, bottom=0.45 / height, hspace=0.7, wspace=0.42)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    has_test = False
    for i, (ax, key) in enumerate(zip(axes, keys)):
        has_test |= _draw_metric(ax, runs, key, 1.0)
        if i >= len(keys) - ncols:
            ax.set_xlabel("epoch", fontsize=7)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    _style_legend(fig, runs, has_test, 1 - 0.08 / height, 8)
    return fig


def metric_panel(runs: list[Run], key: str) -> Figure:
    """One larger panel of ``key`` vs epoch for the report's headline row, untitled (the page titles it and names
    the runs' colours: ``run_colors``), the line styles' legend below; otherwise as a ``metric_grid`` panel."""
    fig = figure(2.6, 2.6, layout=None)
    fig.subplots_adjust(left=0.27, right=0.95, top=0.92, bottom=0.33)
    ax = fig.subplots()
    has_test = _draw_metric(ax, runs, key, 1.25, titled=False)
    ax.set_xlabel("epoch", fontsize=9, labelpad=1)
    _style_legend(fig, runs, has_test, 0.135, 8.5, with_runs=False)
    return fig


def loss_figure(runs: list[Run]) -> Figure:
    """Mean training loss per epoch (log scale when positive), one line per run, legend outside the data."""
    fig = figure(7, 3.4)
    ax = fig.subplots()
    values = []
    for run, color in zip(runs, _colors(len(runs))):
        epochs, y = run.series("train_loss")
        if epochs.size:
            ax.plot(epochs, y, color=color, lw=1.4, marker="o", ms=2.5, label=run.label)
            values.append(y)
    finite = np.concatenate(values) if values else np.zeros(0)
    finite = finite[np.isfinite(finite)]
    if finite.size and (finite > 0).all():
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("training loss (mean over the epoch)")
    ax.set_title("training loss", fontsize=10)
    ax.grid(True, alpha=0.3)
    if len(runs) > 1:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def confusion_figure(confusion: np.ndarray, names: list[str] | None, order: list[int], epoch) -> Figure:
    """Row-normalised test confusion matrix (row: true class, column: prediction), classes in ``order``."""
    counts = np.asarray(confusion, float)[np.ix_(order, order)]
    rows = counts.sum(1, keepdims=True)
    share = np.divide(counts, rows, out=np.full_like(counts, np.nan), where=rows > 0)
    k = len(order)
    fig = figure(min(11.0, 3.2 + 0.32 * k), min(10.0, 2.6 + 0.3 * k))
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    if k <= 30:
        labels = [str(names[c]) if names and len(names) == len(confusion) else str(c) for c in order]
        ax.set_xticks(range(k), labels, rotation=60 if k > 12 else 0, fontsize=7)
        ax.set_yticks(range(k), labels, fontsize=7)
    if k <= 12:
        for i in range(k):
            for j in range(k):
                if np.isfinite(share[i, j]) and share[i, j] >= 0.005:
                    ax.text(j, i, f"{share[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if share[i, j] > 0.6 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (by decreasing training size)")
    ax.set_title(f"test confusion, epoch {epoch} (rows sum to 1)", fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.85, label="fraction of the true class")
    return fig


def accuracy_figure(runs: list[Run]) -> Figure:
    """Train (solid) and test (dashed) accuracy vs epoch; for one run a second panel with head/medium/tail test
    accuracy (dashed: test)."""
    groups = [f"test_acc_{g}" for g in GROUP_COLORS if len(runs) == 1 and runs[0].series(f"test_acc_{g}")[0].size]
    fig = figure(11 if groups else 7, 3.6)
    axes = fig.subplots(1, 2 if groups else 1, squeeze=False).ravel()
    for run, color in zip(runs, _colors(len(runs))):
        prefix = f"{run.label}: " if len(runs) > 1 else ""
        for key, style in (("train_acc", "-"), ("test_acc", "--")):
            epochs, y = run.series(key)
            if epochs.size:
                axes[0].plot(epochs, 100 * y, style, color=color, lw=1.4, label=f"{prefix}{key.replace('_acc', '')}")
    for key, color in zip(groups, ("C0", "C1", "C3")):
        epochs, y = runs[0].series(key)
        axes[1].plot(epochs, 100 * y, "--", color=color, lw=1.4, label=key.replace("test_acc_", "") + " (test)")
    for ax, title in zip(axes, ("train and test accuracy", "test accuracy by group")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("accuracy (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # outside the curves
    return fig


def sorted_by_size(counts: list[int]) -> list[int]:
    """Class ids by decreasing training count (ties keep class order)."""
    return sorted(range(len(counts)), key=lambda k: (-counts[k], k))


def _shade_groups(ax, order: list[int], groups: dict[str, list[int]]) -> list[Patch]:
    """Shade each run of consecutive positions in ``order`` that belong to one group; returns legend patches."""
    group_of = {c: g for g, classes in groups.items() for c in classes}
    start = 0
    for pos in range(1, len(order) + 1):
        if pos == len(order) or group_of.get(order[pos]) != group_of.get(order[start]):
            group = group_of.get(order[start])
            if group:
                ax.axvspan(start - 0.5, pos - 0.5, color=GROUP_COLORS[group], zorder=0)
            start = pos
    return [Patch(color=GROUP_COLORS[g], label=f"{g} ({len(groups[g])})") for g in GROUP_COLORS if groups.get(g)]


ZERO_STUB = 2.0  # percentage points: a bar at exactly 0 % is drawn this high (hatched) so that it shows


def _bars(ax, x, values: np.ndarray, width: float, color, label: str | None = None):
    """Bars of ``values`` (%) at ``x``; a value of exactly 0 gets a short hatched stub, a NaN nothing. Returns the
    BarContainer of the real bars."""
    values = np.asarray(values, float)
    bars = ax.bar(x, values, width=width, color=color, zorder=2, label=label)
    zero = values == 0
    if zero.any():
        ax.bar(np.asarray(x, float)[zero], ZERO_STUB, width=width, facecolor="white", edgecolor=color, hatch="////",
               lw=1.0, zorder=2)
    return bars


def per_class_figure(runs: list[Run], counts: list[int] | None, groups: dict | None) -> Figure:
    """Final per-class test accuracy, classes sorted by training size, head/medium/tail shaded; counts on a log twin
    axis (in the legend); a class at 0 % shows a hatched stub."""
    k = len(runs[0].last["test_acc_per_class"])
    order = sorted_by_size(counts) if counts else list(range(k))
    fig = figure(max(7.0, min(16.0, 0.18 * k + 4)), 3.8)
    ax = fig.subplots()
    handles = _shade_groups(ax, order, groups) if groups else []
    x = np.arange(k)
    width = 0.8 / len(runs)
    zero = False
    for i, (run, color) in enumerate(zip(runs, _colors(len(runs)))):
        acc = 100 * np.asarray([math.nan if v is None else v for v in run.last["test_acc_per_class"]], float)[order]
        zero |= bool((acc == 0).any())
        _bars(ax, x - 0.4 + width * (i + 0.5), acc, width, color, run.label)
    ax.set_xlim(-0.5, k - 0.5)
    ax.set_ylabel("test accuracy (%)")
    ax.set_xlabel("class, by decreasing training size" if counts else "class (training sizes unknown)")
    names = runs[0].info.get("class_names")
    if k <= 30:
        labels = [str(names[c]) if isinstance(names, list) and len(names) == k else str(c) for c in order]
        ax.set_xticks(x, labels, rotation=60 if k > 12 else 0, fontsize=7)
    if counts:
        top = ax.twinx()
        top.plot(x, np.asarray(counts, float)[order], color="k", lw=1, marker=".", ms=3)
        top.set_yscale("log")
        top.set_ylabel("training samples (log)")
    epoch = runs[0].last["epoch"]
    ax.set_title(f"per-class test accuracy, epoch {epoch}" if len(runs) == 1
                 else "per-class test accuracy, each run's last epoch", fontsize=10)
    if len(runs) > 1:
        handles += ax.get_legend_handles_labels()[0]
    if counts:
        handles.append(Line2D([], [], color="k", lw=1, marker=".", ms=3, label="training samples\n(right axis)"))
    if zero:
        handles.append(Patch(facecolor="white", edgecolor="0.3", hatch="////", label="0 %"))
    if handles:  # outside the axes: the tail classes' bars sit at the right
        fig.legend(handles=handles, fontsize=8, loc="outside right upper", frameon=False)
    return fig


def group_bars_figure(runs: list[Run]) -> Figure:
    """Grouped bars of the last logged overall / head / medium / tail test accuracy per run, each labelled with its
    value; 0 % shows a hatched stub, a group without classes "n/a"."""
    keys = ["test_acc", *(f"test_acc_{g}" for g in GROUPS)]
    fig = figure(max(7.0, 1.2 * len(runs) + 5), 3.8)
    ax = fig.subplots()
    width = 0.8 / len(runs)
    x = np.arange(len(keys))
    zero = False
    for i, (run, color) in enumerate(zip(runs, _colors(len(runs)))):
        vals = 100 * np.asarray([math.nan if run.last.get(k) is None else run.last[k] for k in keys], float)
        zero |= bool((vals == 0).any())
        pos = x - 0.4 + width * (i + 0.5)
        bars = _bars(ax, pos, vals, width, color, run.label)
        ax.bar_label(bars, labels=["" if not np.isfinite(v) else f"{v:.1f}" for v in vals], fontsize=7)
        for p, v in zip(pos, vals):
            if not np.isfinite(v):
                ax.text(p, 1, "n/a", ha="center", va="bottom", fontsize=7, color="0.4")
    ax.set_xticks(x, ["overall", *GROUPS])
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 112)  # room for the value labels above a bar at 100 %
    ax.set_title("test accuracy by group, last epoch", fontsize=10)
    handles = ax.get_legend_handles_labels()[0]
    if zero:
        handles.append(Patch(facecolor="white", edgecolor="0.3", hatch="////", label="0 %"))
    fig.legend(handles=handles, fontsize=8, loc="outside right upper", frameon=False)  # never over a bar or label
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def normalized_gram(vectors: torch.Tensor, center: bool) -> np.ndarray:
    """Cosine Gram of the rows of ``vectors`` (centred on their mean first when ``center``): for the class means
    this is cos(μ_k − μ_G, μ_l − μ_G), μ_G the mean of class means; at a simplex ETF every off-diagonal entry is
    −1/(K−1) (Papyan et al. 2020, NC2)."""
    v = vectors.to(torch.float64)
    if center:
        v = v - v.mean(0, keepdim=True)
    unit = v / v.norm(dim=1, keepdim=True).clamp(min=torch.finfo(v.dtype).tiny)
    return (unit @ unit.T).numpy()


def gram_figure(means: torch.Tensor, weight: torch.Tensor | None, epoch, stacked: bool = False) -> Figure:
    """Heatmaps of the normalised Gram of centred class means and, when given, of the classifier rows; side by side,
    or one above the other when ``stacked`` (a narrow column of a comparison page)."""
    panels = [("class means  cos(μ_k − μ_G, μ_l − μ_G)", normalized_gram(means, center=True))]
    if weight is not None:
        panels.append(("classifier  cos(w_k, w_l)", normalized_gram(weight, center=False)))
    k = means.shape[0]
    rows, cols = (len(panels), 1) if stacked else (1, len(panels))
    fig = figure(4.6 * cols + 0.8, 4.0 * rows + 0.3)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (title, gram) in zip(axes, panels):
        image = ax.imshow(gram, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("class")
        ax.set_ylabel("class")
    fig.colorbar(image, ax=list(axes), shrink=0.85 / rows, label="cosine")
    etf = f"simplex ETF off-diagonal −1/(K−1) = {-1 / (k - 1):.3f}"
    fig.suptitle(f"epoch {epoch}; {etf}" if stacked else f"cosine Grams, epoch {epoch}; {etf}", fontsize=10)
    return fig


def spectrum_figure(spectra: list[tuple[object, np.ndarray]]) -> Figure:
    """Eigenvalues of Σ_B (descending, log scale), one line per (epoch, spectrum), later epochs darker."""
    fig = figure(6.5, 3.8)
    ax = fig.subplots()
    colors = colormaps["viridis_r"](np.linspace(0.15, 1.0, len(spectra)))
    for (epoch, values), color in zip(spectra, colors):
        values = np.asarray(values, float)
        shown = np.where(values > SPECTRUM_RTOL * np.nanmax(values), values, np.nan)
        ax.plot(np.arange(1, len(values) + 1), shown, marker="o", ms=3, color=color, label=f"epoch {epoch}")
    ax.set_yscale("log")
    ax.set_xlabel("index i (descending)")
    ax.set_ylabel(r"eigenvalue $\lambda_i(\Sigma_B)$")
    ax.set_title(r"spectrum of $\Sigma_B$ (values < $10^{-10}\lambda_1$ not drawn)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), fontsize=7, loc="outside right upper", frameon=False)
    return fig

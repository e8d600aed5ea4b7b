"""``cdnv-gap``: class-distance normalised variance on train and test features over training, and its relation
to the generalisation gap (Galanti et al. 2021, §3 and fig. 8; review §4.1, eq. 51-52).

CDNV = mean_{k<l} (V_k + V_l)/(2‖μ_k − μ_l‖²) (Galanti et al. 2021, eq. 2; ``ncollapse.measure``). Their bound
(eq. 52 of the review) ties the population (test) CDNV to the training CDNV plus terms shrinking with the
samples per class, so a collapsed training set should predict a small test CDNV and a small gap. The experiment
logs both CDNVs and the gap = train accuracy − test accuracy (deterministic passes, no augmentation) at every
probe and reports their ratio and Spearman rank correlations over the probes.
"""

from __future__ import annotations

import math

import numpy as np

from ..report.figures import figure_row
from ..report.html import html_table, write_report
from ._common import claims_outputs, write_results
from .split_collapse import probed_training

__all__ = ["cdnv_gap", "spearman", "DEFAULTS"]

DEFAULTS = {"probe_every": 1}


def spearman(x, y) -> float:
    """Spearman rank correlation (Pearson correlation of the ranks, ties averaged); NaN for constant input."""
    from scipy.stats import rankdata  # deliberately lazy: scipy.stats is a heavy import

    rx, ry = rankdata(np.asarray(x, float)), rankdata(np.asarray(y, float))
    if len(rx) < 2 or rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def _figures(rows: list[dict]) -> dict:
    epochs = np.array([r["epoch"] for r in rows])
    cdnv_tr = np.array([r["train/cdnv"] for r in rows])
    cdnv_te = np.array([r["test/cdnv"] for r in rows])
    gap = np.array([r["gap"] for r in rows])
    fig, (ax, ax2) = figure_row(11, 3.8, ncols=2)
    ax.plot(epochs, cdnv_tr, "-o", ms=3, label="CDNV train")
    ax.plot(epochs, cdnv_te, "--s", ms=3, label="CDNV test")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("CDNV")
    twin = ax.twinx()
    twin.plot(epochs, 100 * gap, ":", color="C3", label="gap (train − test acc)")
    twin.set_ylabel("generalisation gap (%)", color="C3")
    ax.legend(handles=ax.get_lines() + twin.get_lines(), fontsize=8)
    ax.set_title("CDNV over training (Galanti et al. 2021)", fontsize=10)
    points = ax2.scatter(cdnv_te, 100 * gap, c=epochs, cmap="viridis", s=18, label="test CDNV")
    ax2.scatter(cdnv_tr, 100 * gap, c=epochs, cmap="viridis", s=18, marker="x", label="train CDNV")
    ax2.set_xscale("log")
    ax2.set_xlabel("CDNV")
    ax2.set_ylabel("generalisation gap (%)")
    ax2.legend(fontsize=8)
    ax2.figure.colorbar(points, ax=ax2, label="epoch")
    ax2.set_title("gap vs CDNV, one point per probe", fontsize=10)
    return {"cdnv_gap": fig}


@claims_outputs("cdnv_gap")
def cdnv_gap(cfg, out_dir, params: dict | None = None, device: str = "auto", progress: bool = False, *,
             outputs=None) -> dict:
    """Train ``cfg`` into ``out_dir`` tracking train/test CDNV and the gap; writes results.json, PNGs, report.html."""
    params = {**DEFAULTS, **(params or {})}
    out, train_set, test_set, summary, rows = probed_training(cfg, out_dir, params, device, progress)
    last = rows[-1]
    test_cdnv = [r["test/cdnv"] for r in rows]
    result = {"epochs": cfg.train.epochs, "train_size": len(train_set), "test_size": len(test_set),
              "summary": summary,
              "final": {"train_cdnv": last["train/cdnv"], "test_cdnv": last["test/cdnv"], "gap": last["gap"],
                        "train_acc": last["train/acc"], "test_acc": last["test/acc"]},
              "test_over_train_cdnv": last["test/cdnv"] / last["train/cdnv"],
              "spearman_test_cdnv_gap": spearman(test_cdnv, [r["gap"] for r in rows]),
              "spearman_test_cdnv_test_error": spearman(test_cdnv, [1 - r["test/acc"] for r in rows]),
              "spearman_train_cdnv_test_cdnv": spearman([r["train/cdnv"] for r in rows], test_cdnv),
              "trajectory": [{k: r[k] for k in ("epoch", "train/cdnv", "test/cdnv", "gap", "train/acc", "test/acc")}
                             for r in rows]}
    figures = _figures(rows)
    table = html_table(["quantity", "value"], [
        ["final train CDNV", last["train/cdnv"]], ["final test CDNV", last["test/cdnv"]],
        ["test / train CDNV", result["test_over_train_cdnv"]], ["final gap (train − test acc)", last["gap"]],
        ["Spearman(test CDNV, gap) over probes", result["spearman_test_cdnv_gap"]],
        ["Spearman(test CDNV, test error) over probes", result["spearman_test_cdnv_test_error"]]])
    write_report(out, extra_sections=[("CDNV train vs test and the generalisation gap", figures["cdnv_gap"]),
                                      ("Summary of the CDNV experiment", table)], outputs=outputs)
    return write_results(out, "cdnv-gap", result, figures, outputs)

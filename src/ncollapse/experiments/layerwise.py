"""``layerwise-ncc``: NCC accuracy and NC1 / CDNV at every block, and the ε-effective depth (Galanti et al. 2022,
Def. 3; review §4.2).

The model is trained with ``ncollapse.train.train``; its final checkpoint is probed at every block of
``model.feature_layers()`` (``probe.collect_stats`` for the class statistics of the training set, then
``probe.layerwise_ncc`` on the training and on the test set, both with the training class means). The
ε-effective depth is the first block whose NCC training accuracy is ≥ 1 − ε (``probe.effective_depth``).
With ``random_labels = true`` the training labels are shuffled first (Galanti et al. 2022, fig. 2: fitting
random labels needs more depth).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ..metrics import measure
from ..probe import collect_stats, effective_depth, layerwise_ncc
from ..report.figures import figure_row
from ..report.html import html_table, write_report
from ..train.build import build_data
from ..train.dist import resolve_device
from ._common import claims_outputs, eval_loader, relabeled, shuffled_labels, train_run, write_results

__all__ = ["layerwise_depth", "probe_layers", "DEFAULTS"]

DEFAULTS = {"epsilons": [0.01, 0.05, 0.1], "pool": "gap", "random_labels": False}


def probe_layers(model, train_loader, test_loader, num_classes: int, pool: str = "gap") -> list[dict]:
    """One row per block of ``model.feature_layers()``: NCC train / test accuracy (training means), NC1, CDNV."""
    blocks = model.feature_layers()
    stats = collect_stats(model, train_loader, blocks, num_classes, pool=pool)
    layers = list(stats)
    ncc_train = layerwise_ncc(model, train_loader, stats, blocks, pool=pool)
    ncc_test = layerwise_ncc(model, test_loader, stats, blocks, pool=pool)
    rows = []
    for depth, name in enumerate(layers, start=1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = measure(stats[name])
        rows.append({"depth": depth, "layer": name, "dim": stats[name].dim, "ncc_train_acc": ncc_train[name],
                     "ncc_test_acc": ncc_test[name], "nc1": report["nc1"], "cdnv": report["cdnv"]})
    return rows


def _figure(rows: list[dict], depths: dict):
    fig, (ax, ax2) = figure_row(11, 3.8, ncols=2)
    x = [r["depth"] for r in rows]
    ax.plot(x, [100 * r["ncc_train_acc"] for r in rows], "-o", label="NCC train")
    ax.plot(x, [100 * r["ncc_test_acc"] for r in rows], "--s", label="NCC test (train means)")
    for (eps, depth), color in zip(depths.items(), ("C2", "C3", "C4", "C5")):
        if depth is not None:
            ax.axvline(depth, ls=":", color=color, label=f"ε = {eps}: depth {depth}")
    ax.set_xticks(x, [r["layer"].split(".")[-1] for r in rows], rotation=45, fontsize=8)
    ax.set_ylabel("NCC accuracy (%)")
    ax.set_title("nearest-class-center accuracy per block (Galanti et al. 2022)", fontsize=10)
    ax.legend(fontsize=8)
    ax2.plot(x, [r["nc1"] for r in rows], "-o", label="NC1 (train)")
    ax2.plot(x, [r["cdnv"] for r in rows], "-s", label="CDNV (train)")
    ax2.set_yscale("log")
    ax2.set_xticks(x, [r["layer"].split(".")[-1] for r in rows], rotation=45, fontsize=8)
    ax2.set_title("variability collapse per block", fontsize=10)
    ax2.legend(fontsize=8)
    return fig


@claims_outputs("layerwise_ncc")
def layerwise_depth(cfg, out_dir, params: dict | None = None, device: str = "auto", progress: bool = False, *,
                    outputs=None) -> dict:
    """Train ``cfg`` into ``out_dir``, probe every block; writes results.json, PNGs and report.html."""
    params = {**DEFAULTS, **(params or {})}
    out = Path(out_dir)
    train_set, test_set = build_data(cfg)
    if params["random_labels"]:
        train_set = relabeled(train_set, shuffled_labels(train_set.labels, cfg.train.seed))
    summary, model = train_run(cfg, out, data=(train_set, test_set), device=device, progress=progress)
    dev = resolve_device(device)
    rows = probe_layers(model, eval_loader(train_set, cfg, dev), eval_loader(test_set, cfg, dev),
                        train_set.num_classes, params["pool"])
    ncc = {r["layer"]: r["ncc_train_acc"] for r in rows}
    depths = {eps: effective_depth(ncc, float(eps)) for eps in params["epsilons"]}
    figures = {"layerwise_ncc": _figure(rows, depths)}
    result = {"layers": rows, "num_layers": len(rows), "effective_depth": {str(k): v for k, v in depths.items()},
              "random_labels": params["random_labels"], "summary": summary}
    table = html_table(["depth", "block", "dim", "NCC train acc", "NCC test acc", "NC1", "CDNV"],
                       [[r["depth"], r["layer"], r["dim"], r["ncc_train_acc"], r["ncc_test_acc"], r["nc1"], r["cdnv"]]
                        for r in rows])
    eff = html_table(["ε", f"ε-effective depth (of {len(rows)} blocks)"],
                     [[eps, "not reached" if d is None else d] for eps, d in depths.items()])
    write_report(out, extra_sections=[("Layer-wise NCC accuracy and collapse", figures["layerwise_ncc"]),
                                      ("Per-block values", table), ("ε-effective depth", eff)], outputs=outputs)
    return write_results(out, "layerwise-ncc", result, figures, outputs)

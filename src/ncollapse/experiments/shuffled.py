"""``random-labels``: neural collapse on a training set whose labels are shuffled (Zhu et al. 2021, fig. 4;
review §3.1.6 "data independence").

Two runs of the same config with ``ncollapse.train.train``: the true labels, and a seeded permutation of them
(every image gets a random label, class sizes unchanged). A network that memorises the random labels reaches
zero training error and, per the unconstrained-features view, NC as well, while its test accuracy stays at
chance. The comparison report overlays accuracy and every ``nc/`` metric of the two runs.
"""

from __future__ import annotations

from pathlib import Path

from ..report.figures import figure_row
from ..report.html import html_table, write_comparison
from ..report.runs import read_metrics
from ..train.build import build_data
from ._common import claims_outputs, relabeled, shuffled_labels, train_run, write_results

__all__ = ["random_labels", "DEFAULTS", "PANELS"]

DEFAULTS = {"label_seed": 0}
# Zhu et al. 2021, fig. 4 panels: train accuracy, NC1, NC2 (ETF error of the means), NC3 (self-duality), NC4.
PANELS = (("train_acc", "training accuracy"), ("nc/nc1", "NC1"), ("nc/etf_error_means", "NC2: ETF error of means"),
          ("nc/self_duality", "NC3: self-duality"), ("nc/ncc_mismatch", "NC4: NCC mismatch"))


def _figure(rows: dict):
    fig, axes = figure_row(16, 3.4, ncols=len(PANELS))
    for ax, (key, title) in zip(axes, PANELS):
        for label, lines in rows.items():
            pts = [(m["epoch"], m[key]) for m in lines if m.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), "-o", ms=3, label=label)
        if key == "nc/ncc_mismatch":
            ax.set_yscale("symlog", linthresh=1e-3)
        elif key != "train_acc":
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=8)
    return fig


@claims_outputs("random_labels_nc")
def random_labels(cfg, out_dir, params: dict | None = None, device: str = "auto", progress: bool = False, *,
                  outputs=None) -> dict:
    """Train on true and on shuffled labels into ``out_dir``/{true_labels,random_labels}; writes the comparison."""
    params = {**DEFAULTS, **(params or {})}
    out = Path(out_dir)
    train_set, test_set = build_data(cfg)
    noisy = relabeled(train_set, shuffled_labels(train_set.labels, params["label_seed"]))
    runs = {"true labels": (out / "true_labels", train_set), "random labels": (out / "random_labels", noisy)}
    summaries, rows, final = {}, {}, {}
    for label, (run_dir, ds) in runs.items():
        summaries[label], _ = train_run(cfg, run_dir, data=(ds, test_set), device=device, progress=progress)
        rows[label] = read_metrics(run_dir / "metrics.jsonl")
        nc_lines = [m for m in rows[label] if "nc/nc1" in m]
        final[label] = {"train_acc": rows[label][-1]["train_acc"], "test_acc": rows[label][-1]["test_acc"],
                        **{key: nc_lines[-1].get(key) for key, _ in PANELS[1:]}}
    agree = float((noisy.labels == train_set.labels).double().mean())
    figures = {"random_labels_nc": _figure(rows)}
    result = {"final": final, "summaries": summaries, "fraction_labels_unchanged": agree,
              "epochs": cfg.train.epochs, "train_size": len(train_set),
              "trajectory": {label: [{k: m.get(k) for k in ("epoch", *dict(PANELS))} for m in lines]
                             for label, lines in rows.items()}}
    table = html_table(["run", "train acc", "test acc", *[t for _, t in PANELS[1:]]],
                       [[label, f["train_acc"], f["test_acc"], *[f[k] for k, _ in PANELS[1:]]]
                        for label, f in final.items()])
    write_comparison([d for d, _ in runs.values()], out / "report.html", labels=list(runs),
                     extra_sections=[("NC with true vs random labels (Zhu et al. 2021, fig. 4)",
                                      figures["random_labels_nc"]),
                                     (f"Final values ({agree:.1%} of the shuffled labels equal the true ones)", table)],
                     outputs=outputs)
    return write_results(out, "random-labels", result, figures, outputs)

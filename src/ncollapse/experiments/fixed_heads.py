"""``fixed-classifiers``: a learnable classifier vs fixed simplex, d-cube and d-orthoplex classifiers trained end
to end (Pernici et al. 2019, 2021; review §5 "desirable geometries").

One ``ncollapse.train.train`` run per head of ``heads``. With ``native_dim = true`` each fixed head gets the
feature width of its polytope (an extra linear layer): K − 1 for the simplex ETF, ⌈log₂ K⌉ for the d-cube and
⌈K/2⌉ for the d-orthoplex (Pernici et al. 2021, §3.2); learnable heads keep the config's width. The report
compares accuracy and NC metrics; the table adds each classifier's largest pairwise cosine (simplex −1/(K−1),
orthoplex 0, cube 1 − 2/m for m bits).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ..geometry import FIXED_FRAMES
from ..report.figures import figure_row
from ..report.html import html_table, write_comparison
from ..report.runs import read_metrics
from ..train.build import build_data
from ._common import claims_outputs, train_run, write_results

__all__ = ["fixed_classifiers", "native_dim", "DEFAULTS"]

DEFAULTS = {"heads": ["normed", "etf", "cube", "orthoplex"], "native_dim": True}
NC_KEYS = ("nc/nc1", "nc/etf_error_means", "nc/self_duality", "nc/ncc_mismatch")


def native_dim(head: str, num_classes: int) -> int | None:
    """Feature width of a fixed head's polytope (module docstring); None for learnable heads."""
    return {"etf": num_classes - 1, "orthogonal": num_classes, "cube": max(1, math.ceil(math.log2(num_classes))),
            "orthoplex": math.ceil(num_classes / 2)}.get(head)


def _figure(final: dict):
    fig, (ax, ax2) = figure_row(11, 3.6, ncols=2)
    heads = list(final)
    bars = ax.bar(heads, [100 * final[h]["test_acc"] for h in heads], color=[f"C{i}" for i in range(len(heads))])
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_ylim(min(100 * final[h]["test_acc"] for h in heads) - 5, 100)
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title("fixed vs learnable classifiers (Pernici et al.)", fontsize=10)
    width = 0.8 / len(NC_KEYS)
    for i, key in enumerate(NC_KEYS[:3]):
        ax2.bar([j + i * width for j in range(len(heads))], [final[h][key] or math.nan for h in heads], width,
                label=key.removeprefix("nc/"))
    ax2.set_xticks([j + width for j in range(len(heads))], heads)
    ax2.set_yscale("log")
    ax2.legend(fontsize=8)
    ax2.set_title("NC metrics of the training features, last epoch", fontsize=10)
    return fig


@claims_outputs("fixed_classifiers")
def fixed_classifiers(cfg, out_dir, params: dict | None = None, device: str = "auto",
                      progress: bool = False, *, outputs=None) -> dict:
    """One run per head into ``out_dir``/<head>; writes results.json, PNGs and the comparison report."""
    params = {**DEFAULTS, **(params or {})}
    out = Path(out_dir)
    allowed = ("linear", "normed", *FIXED_FRAMES)
    unknown = [h for h in params["heads"] if h not in allowed]
    if unknown or not params["heads"]:
        raise ValueError(f"experiment.heads == {params['heads']}: give heads among {', '.join(allowed)}")
    train_set, test_set = build_data(cfg)
    k = train_set.num_classes
    final = {}
    for head in params["heads"]:
        dim = native_dim(head, k) if params["native_dim"] else None
        model_cfg = dataclasses.replace(cfg.model, head=head, feature_dim=dim or cfg.model.feature_dim)
        summary, model = train_run(cfg.replace(model=model_cfg), out / head, data=(train_set, test_set),
                                   device=device, progress=progress)
        w = F.normalize(model.head.weight.detach().double(), dim=1)
        cos = (w @ w.T).masked_fill(torch.eye(k, dtype=torch.bool), -math.inf)
        lines = read_metrics(out / head / "metrics.jsonl")
        nc = [m for m in lines if "nc/nc1" in m][-1]
        final[head] = {"feature_dim": model_cfg.feature_dim or model.head.weight.shape[1],
                       "test_acc": summary["final_test_acc"], "best_test_acc": summary["best_test_acc"],
                       "train_acc": lines[-1]["train_acc"], "max_classifier_cos": float(cos.max()),
                       **{key: nc.get(key) for key in NC_KEYS}}
    figures = {"fixed_classifiers": _figure(final)}
    table = html_table(["head", "feature dim", "max cos(w_k, w_l)", "train acc", "test acc",
                        *[key.removeprefix("nc/") for key in NC_KEYS]],
                       [[h, f["feature_dim"], f["max_classifier_cos"], f["train_acc"], f["test_acc"],
                         *[f[key] for key in NC_KEYS]] for h, f in final.items()])
    write_comparison([out / h for h in final], out / "report.html", labels=list(final),
                     extra_sections=[("Fixed classifiers: accuracy and collapse", figures["fixed_classifiers"]),
                                     ("Per-head values", table)], outputs=outputs)
    return write_results(out, "fixed-classifiers", {"num_classes": k, "heads": final}, figures, outputs)

"""``test-collapse``: NC of the training and the test features over training (Hui et al. 2022, §3; review §4.1).

After every ``probe_every`` epochs the penultimate features of both splits are measured (deterministic passes,
no augmentation):

* train collapse: NC1 / CDNV of the training features grouped by their labels (Papyan et al. 2020);
* strong test collapse: the same on the test features grouped by their true labels (Hui et al. 2022, "strong
  NC": test points collapse to the mean of their own class);
* weak test collapse: the test features grouped by the network's predicted labels (Hui et al. 2022, "weak NC":
  every test point collapses to *some* class mean, right or wrong);
* NCC test accuracy with the *training* class means (Papyan et al. 2020, NC4 on unseen data).

NC1 = tr(Σ_W Σ_B^†)/K and CDNV = mean_{k<l} (V_k + V_l)/(2‖μ_k − μ_l‖²) are ``ncollapse.measure``'s.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ..metrics import measure_features
from ..report.figures import figure_row
from ..report.html import html_table, write_report
from ..report.runs import read_metrics
from ..stats import ClassStats, NCCCounts
from ..train.build import build_data
from ..train.dist import resolve_device
from ..train.evaluate import classifier_of
from ._common import claims_outputs, eval_loader, features_of, train_run, write_results

__all__ = ["train_test_collapse", "collapse_on_splits", "DEFAULTS"]

DEFAULTS = {"probe_every": 1}
SPLITS = (("train", "train (labels)"), ("test", "test, strong (true labels)"),
          ("test_weak", "test, weak (predicted labels)"))


def collapse_on_splits(model, train_loader, test_loader, num_classes: int) -> dict:
    """NC1, CDNV and accuracies of ``model``'s features on both splits (see the module docstring).

    Keys: ``train/*`` (labels), ``test/*`` (true labels, strong), ``test_weak/*`` (predicted labels, weak), each
    with ``nc1`` and ``cdnv``; ``train/acc`` and ``test/acc`` (network accuracy), ``test_weak/classes_predicted``,
    ``test/ncc_acc`` (NCC with the training means) and ``gap`` = train acc − test acc.
    """
    W, b = classifier_of(model)
    h_tr, z_tr, y_tr = features_of(model, train_loader)
    h_te, z_te, y_te = features_of(model, test_loader)
    pred = z_te.argmax(1)
    out = {}
    with warnings.catch_warnings():  # weak collapse: classes the network never predicts are left out
        warnings.simplefilter("ignore")
        for prefix, h, y in (("train", h_tr, y_tr), ("test", h_te, y_te), ("test_weak", h_te, pred)):
            report = measure_features(h.double(), y, W=W.to(h.device), b=None if b is None else b.to(h.device),
                                      num_classes=num_classes)
            out[f"{prefix}/nc1"], out[f"{prefix}/cdnv"] = report["nc1"], report["cdnv"]
    out["train/acc"] = float((z_tr.argmax(1) == y_tr).double().mean())
    out["test/acc"] = float((pred == y_te).double().mean())
    out["test_weak/classes_predicted"] = int(torch.unique(pred).numel())
    ncc = NCCCounts.from_stats(ClassStats.from_features(h_tr.double(), y_tr, num_classes=num_classes))
    ncc.update(h_te.double(), y_te)
    out["test/ncc_acc"] = int(ncc.ncc_correct.sum()) / int(ncc.counts.sum())
    out["gap"] = out["train/acc"] - out["test/acc"]
    return out


def probe_hook(cfg, train_set, test_set, every: int, device):
    """``on_epoch`` hook running ``collapse_on_splits`` every ``every`` epochs and at the last epoch."""
    device = resolve_device(device)
    loaders = eval_loader(train_set, cfg, device), eval_loader(test_set, cfg, device)

    def on_epoch(epoch: int, model) -> dict:
        if epoch % every and epoch != cfg.train.epochs:
            return {}
        return collapse_on_splits(model, *loaders, train_set.num_classes)
    return on_epoch


def probed_rows(out: Path) -> list[dict]:
    return [m for m in read_metrics(out / "metrics.jsonl") if "train/nc1" in m]


def probed_training(cfg, out_dir, params: dict, device, progress: bool):
    """Train ``cfg`` with ``probe_hook`` every ``params["probe_every"]`` epochs; returns
    (out dir, train set, test set, training summary, probed metrics rows)."""
    out = Path(out_dir)
    train_set, test_set = build_data(cfg)
    hook = probe_hook(cfg, train_set, test_set, params["probe_every"], device)
    summary, _ = train_run(cfg, out, data=(train_set, test_set), on_epoch=hook, device=device, progress=progress)
    return out, train_set, test_set, summary, probed_rows(out)


def _curves(rows: list[dict], metric: str, title: str):
    fig, (ax,) = figure_row(6.5, 3.8)
    epochs = [r["epoch"] for r in rows]
    for (prefix, label), style in zip(SPLITS, ("-o", "--s", "--^")):
        ax.plot(epochs, [r[f"{prefix}/{metric}"] for r in rows], style, ms=3, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return fig


@claims_outputs("nc1_train_test", "cdnv_train_test")
def train_test_collapse(cfg, out_dir, params: dict | None = None, device: str = "auto", progress: bool = False, *,
                        outputs=None) -> dict:
    """Train ``cfg`` into ``out_dir`` probing train and test collapse; writes results.json, PNGs and report.html."""
    params = {**DEFAULTS, **(params or {})}
    out, train_set, test_set, summary, rows = probed_training(cfg, out_dir, params, device, progress)
    last = rows[-1]
    figures = {"nc1_train_test": _curves(rows, "nc1", "NC1 = tr(Σ_W Σ_B†)/K: train vs test (Hui et al. 2022)"),
               "cdnv_train_test": _curves(rows, "cdnv", "CDNV (Galanti et al. 2021): train vs test")}
    final = {key: last[key] for key in last if key.split("/")[0] in ("train", "test", "test_weak") or key == "gap"}
    result = {"epochs": cfg.train.epochs, "train_size": len(train_set), "test_size": len(test_set),
              "final": final, "summary": summary,
              "nc1_test_over_train": last["test/nc1"] / last["train/nc1"],
              "nc1_weak_over_strong": last["test_weak/nc1"] / last["test/nc1"],
              "trajectory": [{k: r[k] for k in ("epoch", *final)} for r in rows]}
    table = html_table(["quantity", "train", "test (strong)", "test (weak)"],
                       [[m, last[f"train/{m}"], last[f"test/{m}"], last[f"test_weak/{m}"]] for m in ("nc1", "cdnv")]
                       + [["network accuracy", last["train/acc"], last["test/acc"], None],
                          ["NCC accuracy (train means)", None, last["test/ncc_acc"], None]])
    write_report(out, extra_sections=[("Test collapse: NC1 on train and test features", figures["nc1_train_test"]),
                                      ("Test collapse: CDNV on train and test features", figures["cdnv_train_test"]),
                                      (f"Final epoch ({last['epoch']})", table)], outputs=outputs)
    return write_results(out, "test-collapse", result, figures, outputs)

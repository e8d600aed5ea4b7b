"""``transfer``: collapse on source classes vs few-shot accuracy on unseen target classes (Galanti et al. 2021,
§4 and fig. 10; review §4.3).

The network is trained (``ncollapse.train.train``) on the source classes only. Every ``probe_every`` epochs its
penultimate features are frozen and used for N-way n-shot episodes on the disjoint target classes (N = number of
target classes, n in ``shots``): the support comes from the target classes' training images, ``queries`` test
images per class are the queries, and all episodes run as one batched computation:

* NCC: predict the nearest support-class mean (Galanti et al. 2021, the classifier of their bound);
* ridge regression on the frozen features with ±1 targets and an intercept (the RidgeClassifier of Galanti et
  al. 2021, fig. 10): W = X_cᵀ(X_c X_cᵀ + λI)⁻¹Y_c in the dual (support ≪ feature width), X_c, Y_c centred by
  their support means, scores (x − x̄)W + ȳ (Hastie et al. 2009, eq. 3.44 with the intercept unpenalised).

Alongside: the CDNV of the source training features and of the target test features (Galanti et al. 2021,
eq. 2), so the report plots target accuracy against source CDNV over training.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch

from ..metrics import measure_features
from ..report.figures import figure_row
from ..report.html import html_table, write_report
from ..report.runs import read_metrics
from ..train.build import build_data
from ..train.dist import resolve_device
from ..validation import check_scalar
from ._common import claims_outputs, class_subset, eval_loader, features_of, train_run, write_results
from .cdnv import spearman

__all__ = ["transfer", "few_shot_episodes", "ncc_scores", "ridge_scores", "DEFAULTS"]

DEFAULTS = {"source_classes": [0, 1, 2, 3, 4], "target_classes": [5, 6, 7, 8, 9], "shots": [1, 5, 10],
            "episodes": 300, "queries": 50, "ridge": 1.0, "probe_every": 2, "episode_seed": 0}


def _sample(labels: torch.Tensor, num_classes: int, per_class: int, episodes: int, gen) -> torch.Tensor:
    """(episodes, num_classes, per_class) indices into ``labels``: per episode and class, a uniform draw without
    replacement (argsort of uniform keys); the loop runs over the few classes, never over samples."""
    out = []
    for c in range(num_classes):
        pool = torch.nonzero(labels == c).flatten()
        if len(pool) < per_class:
            raise ValueError(f"target class {c} has {len(pool)} samples; {per_class} per episode were asked for")
        keys = torch.rand(episodes, len(pool), generator=gen)
        out.append(pool[keys.argsort(1)[:, :per_class]])
    return torch.stack(out, 1)


def _pool_gemm(pool: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """pool (P, d) times every episode's (d, N) matrix of ``weight`` (E, d, N) as one GEMM → (E, P, N)."""
    e, d, n = weight.shape
    return (pool @ weight.permute(1, 0, 2).reshape(d, e * n)).view(-1, e, n).transpose(0, 1)


def ncc_scores(support: torch.Tensor, shots: int, pool: torch.Tensor) -> torch.Tensor:
    """Batched NCC scores −‖x − μ_c‖² + ‖x‖² = 2⟨x, μ_c⟩ − ‖μ_c‖² (same argmax over c): support (E, N·n, d)
    ordered class by class, query pool (P, d) → (E, P, N)."""
    e, m, d = support.shape
    means = support.view(e, m // shots, shots, d).mean(2)
    return 2.0 * _pool_gemm(pool, means.transpose(1, 2)) - means.square().sum(2)[:, None, :]


def ridge_scores(support: torch.Tensor, support_labels: torch.Tensor, pool: torch.Tensor, num_classes: int,
                 lam: float) -> torch.Tensor:
    """Batched ridge classifier scores (module docstring): support (E, m, d), labels (m,), pool (P, d) → (E, P, N)."""
    x_mean = support.mean(1, keepdim=True)
    xc = support - x_mean
    y = 2.0 * torch.nn.functional.one_hot(support_labels, num_classes).to(support.dtype) - 1.0
    y_mean = y.mean(0)
    gram = xc @ xc.transpose(1, 2) + lam * torch.eye(xc.shape[1], dtype=support.dtype, device=support.device)
    alpha = torch.linalg.solve(gram, (y - y_mean).expand(xc.shape[0], -1, -1).contiguous())
    weight = xc.transpose(1, 2) @ alpha
    return _pool_gemm(pool, weight) - x_mean @ weight + y_mean


def few_shot_episodes(support_x, support_y, query_x, query_y, num_classes: int, shots: int, episodes: int,
                      queries: int, lam: float = 1.0, generator=None) -> dict:
    """Accuracy per episode (tensors of length ``episodes``) of NCC and ridge on ``num_classes``-way ``shots``-shot
    episodes drawn from (support_x, support_y) with ``queries`` queries per class from (query_x, query_y).

    Each episode's classifier scores the whole query pool in one GEMM; its ``queries`` sampled rows are kept.
    """
    check_scalar(shots, "shots", int, low=1)
    check_scalar(episodes, "episodes", int, low=1)
    check_scalar(queries, "queries", int, low=1)
    check_scalar(lam, "ridge", float, low=0.0, low_open=True)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    s_idx = _sample(support_y.cpu(), num_classes, shots, episodes, gen).flatten(1).to(support_x.device)
    q_idx = _sample(query_y.cpu(), num_classes, queries, episodes, gen).flatten(1).to(query_x.device)
    support, pool = support_x.double()[s_idx], query_x.double()
    truth = torch.arange(num_classes, device=support.device).repeat_interleave(queries)
    labels = torch.arange(num_classes, device=support.device).repeat_interleave(shots)
    out = {}
    for method, scores in (("ncc", ncc_scores(support, shots, pool)),
                           ("ridge", ridge_scores(support, labels, pool, num_classes, lam))):
        picked = scores.gather(1, q_idx[:, :, None].expand(-1, -1, num_classes))
        out[method] = (picked.argmax(2) == truth).double().mean(1)
    return out


def _hook(cfg, params, source, target_train, target_test, device):
    dev = resolve_device(device)
    loaders = [eval_loader(ds, cfg, dev) for ds in (source, target_train, target_test)]
    k_target = target_train.num_classes

    def on_epoch(epoch: int, model) -> dict:
        if epoch % params["probe_every"] and epoch != cfg.train.epochs:
            return {}
        (h_src, _, y_src), (h_sup, _, y_sup), (h_q, _, y_q) = [features_of(model, ld) for ld in loaders]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            row = {"source/cdnv": measure_features(h_src.double(), y_src)["cdnv"],
                   "target/cdnv": measure_features(h_q.double(), y_q)["cdnv"]}
        gen = torch.Generator().manual_seed(params["episode_seed"])
        for shots in params["shots"]:
            acc = few_shot_episodes(h_sup, y_sup, h_q, y_q, k_target, shots, params["episodes"], params["queries"],
                                    params["ridge"], gen)
            for method, values in acc.items():
                row[f"fewshot/{method}_{shots}shot"] = float(values.mean())
                row[f"fewshot/{method}_{shots}shot_ci95"] = 1.96 * float(values.std()) / math.sqrt(len(values))
        return row
    return on_epoch


def _figure(rows: list[dict], shots: list[int]):
    fig, (ax, ax2) = figure_row(11, 3.8, ncols=2)
    epochs = [r["epoch"] for r in rows]
    cdnv = [r["source/cdnv"] for r in rows]
    for n, color in zip(shots, ("C0", "C1", "C2", "C3", "C4")):
        for method, style in (("ridge", "-o"), ("ncc", ":s")):
            acc = [100 * r[f"fewshot/{method}_{n}shot"] for r in rows]
            ax.plot(epochs, acc, style, color=color, ms=3, label=f"{n}-shot {method}")
            ax2.plot(cdnv, acc, style, color=color, ms=3, label=f"{n}-shot {method}")
    ax.set_xlabel("epoch of source training")
    ax.set_ylabel("target few-shot accuracy (%)")
    ax.set_title("few-shot accuracy on unseen classes (frozen features)", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    if max(cdnv) > 10 * min(cdnv):  # log axis only when the CDNV spans more than a decade
        ax2.set_xscale("log")
    ax2.invert_xaxis()
    ax2.set_xlabel("source-class CDNV (train), decreasing →")
    ax2.set_ylabel("target few-shot accuracy (%)")
    ax2.set_title("target accuracy vs source collapse (Galanti et al. 2021)", fontsize=10)
    return fig


@claims_outputs("transfer")
def transfer(cfg, out_dir, params: dict | None = None, device: str = "auto", progress: bool = False, *,
             outputs=None) -> dict:
    """Train on the source classes into ``out_dir``, probing few-shot transfer; writes results.json, PNGs, report."""
    params = {**DEFAULTS, **(params or {})}
    src, tgt = params["source_classes"], params["target_classes"]
    if set(src) & set(tgt):
        raise ValueError(f"experiment.source_classes {src} and target_classes {tgt} must be disjoint")
    out = Path(out_dir)
    train_set, test_set = build_data(cfg)
    source_train, source_test = class_subset(train_set, src), class_subset(test_set, src)
    target_train, target_test = class_subset(train_set, tgt), class_subset(test_set, tgt)
    hook = _hook(cfg, params, source_train, target_train, target_test, device)
    summary, _ = train_run(cfg, out, data=(source_train, source_test), on_epoch=hook, device=device,
                           progress=progress)
    rows = [m for m in read_metrics(out / "metrics.jsonl") if "source/cdnv" in m]
    last = rows[-1]
    fewshot = {key.removeprefix("fewshot/"): last[key] for key in last if key.startswith("fewshot/")}
    correlation = {f"{n}shot": spearman([r["source/cdnv"] for r in rows], [r[f"fewshot/ridge_{n}shot"] for r in rows])
                   for n in params["shots"]}
    figures = {"transfer": _figure(rows, params["shots"])}
    result = {"source_classes": [train_set.classes[c] for c in src],
              "target_classes": [train_set.classes[c] for c in tgt], "episodes": params["episodes"],
              "queries_per_class": params["queries"], "ridge": params["ridge"], "summary": summary,
              "final": {"source_cdnv": last["source/cdnv"], "target_cdnv": last["target/cdnv"],
                        "source_test_acc": last["test_acc"], **fewshot},
              "spearman_source_cdnv_ridge_acc": correlation,
              "trajectory": [{k: r[k] for k in r if k == "epoch" or "/" in k and not k.startswith("nc")} for r in rows]}
    table = html_table(["shots", "NCC accuracy", "± 95 % CI", "ridge accuracy", "± 95 % CI",
                        "Spearman(source CDNV, ridge acc)"],
                       [[n, fewshot[f"ncc_{n}shot"], fewshot[f"ncc_{n}shot_ci95"], fewshot[f"ridge_{n}shot"],
                         fewshot[f"ridge_{n}shot_ci95"], correlation[f"{n}shot"]] for n in params["shots"]])
    write_report(out, extra_sections=[("Transfer to unseen classes", figures["transfer"]),
                                      (f"Final epoch: {len(tgt)}-way few-shot accuracy over {params['episodes']} "
                                       f"episodes (source CDNV {last['source/cdnv']:.3g}, target CDNV "
                                       f"{last['target/cdnv']:.3g})", table)], outputs=outputs)
    return write_results(out, "transfer", result, figures, outputs)

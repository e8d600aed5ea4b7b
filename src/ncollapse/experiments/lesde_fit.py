"""``lesde-fit``: fit the locally elastic ODE to a real network's class-mean logits (Zhang et al. 2021b; review
§3.2.2-3.2.3, seed eq. 43).

After every ``record_every`` epochs the ``on_epoch`` hook records the class means of the training set's logits
(a deterministic pass, no augmentation). ``lesde.fit_le_ode`` then fits the intra-class impact α and the
inter-class impact β of dX̄/dt = A X̄ by least squares on the recorded trajectory, with time in epochs. It reports
the fit, its relative residual and whether the fitted (α, β) satisfy the ETF convergence condition (K ≥ 4:
β > 0 and α + (K − 1)β > 0). The figure overlays s_k = ⟨r_k, X̄_k⟩, the coordinate the model drives, with the
fitted ODE integrated from the first recorded means (``lesde.mean_path``). Zhang et al. let α and β depend on
time, so the same fit on every pair of consecutive records (``local_fits``) shows how the impacts change over
training, and how often the local pair satisfies the ETF condition.
"""

from __future__ import annotations

import numpy as np
import torch

from ..lesde import fit_le_ode, mean_path
from ..report.figures import figure_row
from ..report.html import html_table, write_report
from ..train.build import build_data
from ..train.dist import resolve_device
from ._common import claims_outputs, eval_loader, features_of, train_run, write_results

__all__ = ["lesde_fit", "class_mean_logits", "DEFAULTS"]

DEFAULTS = {"record_every": 1}


def class_mean_logits(model, loader, num_classes: int) -> torch.Tensor:
    """(K, K) float64: row k is the mean logit vector of class k's samples in ``loader``."""
    _, logits, labels = features_of(model, loader)
    sums = torch.zeros(num_classes, logits.shape[1], dtype=torch.float64).index_add_(0, labels.cpu(),
                                                                                     logits.double().cpu())
    return sums / torch.bincount(labels.cpu(), minlength=num_classes).clamp(min=1)[:, None]


def _residual_coordinate(means: torch.Tensor) -> np.ndarray:
    """s_k = ⟨r_k, X̄_k⟩ with r_k = e_k − 1/K, for a (T, K, K) trajectory: (T, K)."""
    k = means.shape[1]
    r = torch.eye(k, dtype=torch.float64) - 1.0 / k
    return (means * r).sum(2).numpy()


def _figure(epochs, observed: np.ndarray, predicted: np.ndarray, fit: dict, local: list[dict]):
    fig, (ax, ax2) = figure_row(12, 4, ncols=2)
    for k in range(observed.shape[1]):
        ax.plot(epochs, observed[:, k], "o", ms=3, color=f"C{k % 10}")
        ax.plot(epochs, predicted[:, k], "-", lw=1, color=f"C{k % 10}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("s_k = ⟨r_k, mean logit of class k⟩")
    ax.set_title(f"LE-ODE fit: α = {fit['alpha']:.3g}, β = {fit['beta']:.3g}, residual {fit['residual']:.2f} "
                 "(dots: network, lines: fitted ODE)", fontsize=9)
    ends = [f["epoch_to"] for f in local]
    ax2.plot(ends, [f["alpha"] for f in local], "o-", ms=3, label="α (intra-class)")
    ax2.plot(ends, [f["beta"] for f in local], "s-", ms=3, label="β (inter-class)")
    ax2.axhline(0, color="gray", lw=0.8)
    ax2.set_xlabel("epoch (end of the fitted step)")
    ax2.set_ylabel("impact per epoch")
    ax2.set_title("LE-ODE fitted on each pair of consecutive records", fontsize=9)
    ax2.legend(fontsize=8)
    return fig


@claims_outputs("lesde_fit")
def lesde_fit(cfg, out_dir, params: dict | None = None, device: str = "auto", progress: bool = False, *,
              outputs=None) -> dict:
    """Train ``cfg`` into ``out_dir`` recording class-mean logits; fit the LE-ODE; writes results.json, PNG, report."""
    params = {**DEFAULTS, **(params or {})}
    every, epochs_total = params["record_every"], cfg.train.epochs
    if every < 1:
        raise ValueError(f"experiment.record_every == {every}, must be >= 1")
    records = len({e for e in range(1, epochs_total + 1) if e % every == 0 or e == epochs_total})
    if records < 3:
        raise ValueError(f"the LE-ODE fit needs at least 3 recorded epochs; got {records} (train.epochs == "
                         f"{epochs_total}, experiment.record_every == {every})")
    train_set, test_set = build_data(cfg)
    loader = eval_loader(train_set, cfg, resolve_device(device))
    epochs, trajectory = [], []

    def on_epoch(epoch: int, model) -> dict:
        if epoch % every and epoch != epochs_total:
            return {}
        means = class_mean_logits(model, loader, train_set.num_classes)
        epochs.append(epoch)
        trajectory.append(means)
        return {"lesde/mean_logit_norm": float(means.norm())}

    summary, _ = train_run(cfg, out_dir, data=(train_set, test_set), on_epoch=on_epoch, device=device,
                           progress=progress)
    means = torch.stack(trajectory)
    fit = fit_le_ode(epochs, means)
    local = [{"epoch_from": epochs[j], "epoch_to": epochs[j + 1],
              **{key: value for key, value in fit_le_ode(epochs[j:j + 2], means[j:j + 2]).items()
                 if key in ("alpha", "beta", "residual", "etf_condition")}} for j in range(len(epochs) - 1)]
    centred = means - means.mean(2, keepdim=True)
    predicted = torch.stack([mean_path(centred[0], fit["alpha"], fit["beta"], float(e - epochs[0]))
                             for e in epochs])
    observed_s, predicted_s = _residual_coordinate(centred), _residual_coordinate(predicted)
    result = {"epochs": epochs_total, "train_size": len(train_set), "num_classes": train_set.num_classes,
              "summary": summary, "record_every": every, "time_unit": "epoch", "fit": fit,
              "local_fits": local, "local_etf_fraction": float(np.mean([f["etf_condition"] for f in local])),
              "trajectory": [{"epoch": e, "s": s.tolist(), "s_fitted": p.tolist()}
                             for e, s, p in zip(epochs, observed_s, predicted_s)],
              "class_mean_logits": means.tolist()}
    figures = {"lesde_fit": _figure(epochs, observed_s, predicted_s, fit, local)}
    table = html_table(["quantity", "value"], [
        ["α (intra-class impact, per epoch)", fit["alpha"]], ["β (inter-class impact, per epoch)", fit["beta"]],
        ["relative residual of the drift", fit["residual"]], ["ETF mode rate", fit["rates"]["etf_mode"]],
        ["other modes' rate", fit["rates"]["other_modes"]], ["ETF condition holds", str(fit["etf_condition"])],
        ["recorded epochs", fit["points"]],
        ["steps whose local fit satisfies the ETF condition", result["local_etf_fraction"]]])
    write_report(out_dir, extra_sections=[("LE-ODE fit to the class-mean logits", figures["lesde_fit"]),
                                          ("Fitted LE-ODE (Zhang et al. 2021b)", table)], outputs=outputs)
    return write_results(out_dir, "lesde-fit", result, figures, outputs)

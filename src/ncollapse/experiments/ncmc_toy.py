"""Toy comparison of the regular (RCR) and generalised (GCR) classification rules (Yan et al. 2024, §3.1).

Hard-to-predict features carry no label information: z = μ + p, p ~ N(0, s I_d), while their labels follow
P{E_k} (ascending: minority classes are more often hard). Two set-ups:

* ``frame="independent"`` (Prop. 3.1): RCR uses K orthonormal classifiers w_k with μ = (1/K) Σ_k w_k; GCR uses
  F = Σ f_k orthonormal vectors w̃_j^(k) with μ = their mean. By symmetry RCR picks each class with probability
  1/K, GCR picks class k with probability f_k/F, so P_RCR = 1/K and P_GCR = Σ_k f_k P{E_k}/F; with ascending
  f_k and P{E_k}, Chebyshev's sum inequality gives P_GCR ≥ P_RCR.
* ``frame="ncmc"`` (Remark 3.9, Prop. C.1): the NCMC frame (``geometry.multicenter_frame``), μ' = (1/K) Σ_k w̄^(k);
  RCR argmax_k ⟨w_k, z⟩ against GCR argmax_k max_j ⟨w_j^(k), z⟩ on the same z (Monte Carlo only).

``simulate_rcr_gcr`` returns estimates with binomial standard errors; ``toy_figure`` writes the PNG.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch

from ..geometry import check_theta, multicenter_frame, orthonormal_basis
from ..nn.heads import gcr_scores
from ..report.figures import figure, write_png
from ..resources import check_memory
from ..validation import check_counts, check_scalar

__all__ = ["simulate_rcr_gcr", "toy_figure", "toy_bytes", "check_toy_memory"]


def _probabilities(hard_probs, num_classes: int) -> torch.Tensor:
    p = torch.as_tensor(hard_probs, dtype=torch.float64).reshape(-1)
    if p.shape[0] != num_classes or bool((p < 0).any()) or float(p.sum()) <= 0:
        raise ValueError(f"hard_probs must be {num_classes} non-negative numbers with a positive sum; got {hard_probs}")
    return p / p.sum()


def toy_bytes(num_classes: int, total_centers: int, dim: int, num_samples: int) -> int:
    """Float64 memory of one simulation: the frames and their orthonormalisation (3·d·(F + K)), the noise and
    the shifted features (2·S·d), the scores (S·(F + K))."""
    return 8 * (3 * dim * (total_centers + num_classes) + 2 * num_samples * dim
                + num_samples * (total_centers + num_classes))


def check_toy_memory(centers_per_class, num_samples: int, dim: int | None = None) -> None:
    """The memory guard of one simulation (``toy_bytes``; width d = F + K unless given)."""
    k, total = len(centers_per_class), sum(centers_per_class)
    dim = total + k if dim is None else dim
    check_memory(toy_bytes(k, total, dim, num_samples), f"the RCR/GCR toy with F = {total} centers for "
                 f"K = {k} classes (width {dim}) and {num_samples} samples", "give fewer centers or samples")


def simulate_rcr_gcr(centers_per_class, hard_probs, *, noise: float = 0.05, num_samples: int = 20000,
                     frame: str = "independent", theta: float = 0.2, dim: int | None = None, seed: int = 0) -> dict:
    """Monte Carlo accuracy of RCR and GCR on hard-to-predict features (see the module docstring).

    Returns ``p_rcr``, ``p_gcr`` (estimates), ``se_rcr``, ``se_gcr`` (standard errors), ``share_rcr`` and
    ``share_gcr`` (fraction of features assigned to each class) and, for ``frame="independent"``, the closed
    forms ``p_rcr_theory`` = 1/K and ``p_gcr_theory`` = Σ f_k P{E_k}/F, plus ``assumptions_hold`` (f_k and
    P{E_k} both ascending, Prop. 3.1).
    """
    f = check_counts(centers_per_class, "centers_per_class")
    k, total = len(f), sum(f)
    probs = _probabilities(hard_probs, k)
    check_scalar(noise, "noise", Real, low=0, low_open=True)
    check_scalar(num_samples, "num_samples", Integral, low=1)
    if frame not in ("independent", "ncmc"):
        raise ValueError(f"frame == {frame!r}, must be 'independent' (Prop. 3.1) or 'ncmc' (Prop. C.1)")
    dim = total + k if dim is None else dim
    check_scalar(dim, "dim", Integral, low=total + k)
    check_toy_memory(f, num_samples, dim)
    gen = torch.Generator().manual_seed(seed)
    labels = torch.multinomial(probs, num_samples, replacement=True, generator=gen)
    noise_draw = math.sqrt(noise) * torch.randn(num_samples, dim, generator=gen, dtype=torch.float64)
    owner = torch.repeat_interleave(torch.arange(k), torch.tensor(f))
    if frame == "independent":
        classifiers = orthonormal_basis(dim, k, seed).T
        centers = orthonormal_basis(dim, total, seed + 1).T
        rcr = (noise_draw + classifiers.mean(0)) @ classifiers.T
        gcr = gcr_scores(noise_draw + centers.mean(0), centers, owner, k)
    else:
        mc = multicenter_frame(dim, f, check_theta(theta), seed)
        z = noise_draw + mc.mean_centers().mean(0)
        rcr, gcr = z @ mc.classifier.T, gcr_scores(z, mc.centers, mc.owner, k)
    out = {"num_classes": k, "centers_per_class": f, "hard_probs": probs.tolist(), "frame": frame, "noise": noise,
           "num_samples": num_samples}
    for rule, scores in (("rcr", rcr), ("gcr", gcr)):
        pred = scores.argmax(1)
        p = float((pred == labels).double().mean())
        out[f"p_{rule}"] = p
        out[f"se_{rule}"] = math.sqrt(max(p * (1 - p), 1e-12) / num_samples)
        out[f"share_{rule}"] = (torch.bincount(pred, minlength=k).double() / num_samples).tolist()
    if frame == "independent":
        ft = torch.tensor(f, dtype=torch.float64)
        out["p_rcr_theory"] = 1.0 / k
        out["p_gcr_theory"] = float((ft * probs).sum() / total)
        out["assumptions_hold"] = bool((ft.diff() >= 0).all() and (probs.diff() >= 0).all())
    return out


def toy_figure(path, centers_per_class=(1, 2, 3, 4, 5), *, exponents=(0.0, 0.5, 1.0, 2.0, 3.0), noise: float = 0.05,
               num_samples: int = 20000, theta: float = 0.2, seed: int = 0, outputs=None) -> list[dict]:
    """Write a two-panel PNG and return the simulations behind it.

    Left: accuracy on hard features against the skew of P{E_k} ∝ k^γ (γ in ``exponents``), RCR vs GCR, Monte
    Carlo (markers, ±2 s.e.) and Prop. 3.1's closed forms (lines), plus the NCMC-frame rules of Prop. C.1.
    Right: share of hard features assigned to each class by GCR against f_k/F, at the largest γ.
    """
    k = len(centers_per_class)
    runs, ncmc_runs = [], []
    for gamma in exponents:
        probs = [(i + 1) ** gamma for i in range(k)]
        runs.append(simulate_rcr_gcr(centers_per_class, probs, noise=noise, num_samples=num_samples, seed=seed))
        ncmc_runs.append(simulate_rcr_gcr(centers_per_class, probs, noise=noise, num_samples=num_samples,
                                          frame="ncmc", theta=theta, seed=seed))
    fig = figure(10, 4, layout=None)
    left, right = fig.subplots(1, 2)
    gam = list(exponents)
    for rule, color in (("rcr", "tab:blue"), ("gcr", "tab:orange")):
        left.plot(gam, [r[f"p_{rule}_theory"] for r in runs], "-", color=color, label=f"{rule.upper()} theory")
        left.errorbar(gam, [r[f"p_{rule}"] for r in runs], yerr=[2 * r[f"se_{rule}"] for r in runs], fmt="o",
                      color=color, label=f"{rule.upper()} simulated")
        left.plot(gam, [r[f"p_{rule}"] for r in ncmc_runs], "x:", color=color, alpha=0.7,
                  label=f"{rule.upper()} on NCMC frame (θ={theta})")
    left.set_xlabel("γ in P{E_k} ∝ k^γ")
    left.set_ylabel("accuracy on hard-to-predict features")
    left.set_title(f"Prop. 3.1: f_k = {list(centers_per_class)}")
    left.legend(fontsize=7)
    last, classes = runs[-1], list(range(1, k + 1))
    total = sum(centers_per_class)
    right.bar([c - 0.2 for c in classes], last["share_gcr"], width=0.4, label="GCR simulated", color="tab:orange")
    right.bar([c + 0.2 for c in classes], last["share_rcr"], width=0.4, label="RCR simulated", color="tab:blue")
    right.plot(classes, [fk / total for fk in centers_per_class], "k_", markersize=20, label="f_k / F")
    right.set_xlabel("class k")
    right.set_ylabel("share of hard features assigned")
    right.legend(fontsize=7)
    fig.tight_layout()
    write_png(path, fig, outputs=outputs)
    return runs + ncmc_runs

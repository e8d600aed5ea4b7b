"""Closed-form global minima of UFM instances, and the gaps between a solve and them.

``predict(problem)`` returns ``{"loss", "geometry", "source", ...}`` or None where no closed form applies;
``gaps(result, i)`` measures how far instance i of a ``UFMResult`` is from it (relative loss gap and the
geometry errors, all scale-free). Derivations (docs/ufm.md has them step by step):

* With a temperature τ the logits are (W/τ)h, so every formula below is for the effective classifier W/τ with
  penalty λ_W τ² (``classifier_norm`` and ``classifier_sq_norms`` are of W/τ).
* Balanced CE (Zhu et al. 2021, Thm 3.1): W a simplex ETF, h_k = (η/ω) w_k, b constant. On that ansatz with
  ‖w_k‖ = ω, ‖h_k‖ = η, p = ωη the objective is log(1 + (K−1)e^{−pK/(K−1)}) + (K/2)(λ_W ω² + nλ_H η²) ≥ ... + K s p,
  s = √(nλ_Wλ_H) (AM-GM, equality at λ_W ω² = nλ_H η²). With x = pK/(K−1) the stationary point is
  e^{−x} = s/(1 − (K−1)s), i.e. x = log(1/s − K + 1) (needs Ks < 1), and the value is
  −log(1 − (K−1)s) + (K−1)s·log(1/s − K + 1) — the issue's formula, confirmed by the solver. Ks ≥ 1: log K at 0.
* MSE without bias, any counts (Tirer & Bruna 2022 balanced; Dang et al. 2023, Hong & Ling 2023 imbalanced):
  with collapsed features the problem is min_A (1/2N)‖A − D^{1/2}‖_F² + √(λ_Wλ_H)‖A‖_*, A = Z D^{1/2}, Z = W Mᵀ,
  D = diag(n_k); singular-value thresholding gives A_kk = (√n_k − t)_+, t = N√(λ_Wλ_H): own logit
  z_k = (1 − N√(λ_Wλ_H/n_k))_+, ‖w_k‖² = √(λ_H/λ_W) A_kk, n_k‖h_k‖² = √(λ_W/λ_H) A_kk, value
  Σ_k [t²/2N + (t/N)(√n_k − t) if √n_k > t else n_k/2N]; balanced: own logit 1 − Ks, value Ks − K²s²/2.
* CE with unit features and classifier, temperature τ, balanced (Lu & Steinerberger 2022; Wojtowytsch et al.
  2020; Yaras et al. 2022): simplex ETF, h_i = w_{y_i}, value log(1 + (K−1) exp(−K/((K−1)τ))).
* SupCon on the sphere, balanced (Graf et al. 2021, Thm 1; Fang et al. 2021): collapse to a simplex ETF; per
  sample −1/τ + log((n−1)e^{1/τ} + (K−1)n e^{−1/((K−1)τ)}).
* NCMC Loss P with the frame fixed (Yan et al. 2024, Cor. 3.7): each h_i solves the strictly convex
  min_h (1/2S)‖C h − y‖² + (λ_H/2)‖h‖²; the class-k centers' Gram cos²θ I + sin²θ 11ᵀ has 1 as eigenvector,
  so h_k = C_kᵀ1/(f_k cos²α*_k + λ_H S) = t_k w̄^(k)/‖w̄^(k)‖, t_k = f_k cos α*_k / (f_k cos²α*_k + λ_H S),
  value Σ_k n_k [(f_k/2S)(t_k cos α*_k − 1)² + (λ_H/2) t_k²].
* NCMC Loss P with a learned frame (Yan et al. 2024, Thm 3.3 balanced, Thm 3.4 imbalanced): the frame is an
  orthonormal Q scaled by ρ_k = ‖w_k‖ = ‖v_j^(k)‖, and the objective is rotation invariant, so only ρ matters.
  Eliminating h as above gives Σ_k n_k λ_H f_k / (2(u_k f_k cos²α*_k + λ_H S)) + (λ_W0/2) Σ_k u_k, u_k = ρ_k², whose
  minimiser u_k = (√(n_kλ_H/λ_W0)/cos α*_k − λ_H S/(f_k cos²α*_k))_+ is the theorems' ‖w_k‖² (``ncmc_learned_frame``).
* Variability at NCMC (Yan et al. 2024, §4.3; ncmc.md §1): features align with w̄^(k), so the per-sample
  1 − ĥ·ŵ_k is 1 − cos ρ*_k, cos ρ*_k = sin θ / cos α*_k, for the fixed and the learned frame alike.
* Ball-constrained CE, balanced (Fang et al. 2021, Thm 3): simplex ETF with ‖w_k‖² = E_W, ‖h_i‖² = E_H,
  h_i ∥ w_{y_i}; value log(1 + (K−1) exp(−K√(E_W E_H)/((K−1)τ))).
* NCMC cosine loss with the frame fixed (Yan et al. 2024, eq. 20 + App. F): ĥ_k = w̄^(k)/‖w̄^(k)‖ minimises
  Σ_j (⟨w_j^(k), ĥ⟩ − 1)² on the sphere, and ‖h‖ = t = 2λ_norm/(2λ_norm + Nλ_H).
"""

from __future__ import annotations

import math

import torch

from ..metrics import etf_error
from .problem import UFMProblem

__all__ = ["predict", "gaps", "ncmc_learned_frame"]


def _plain(p: UFMProblem) -> bool:
    return p.normalize == "none" and not p.extra_layers


def _effective_lambda_w(p: UFMProblem) -> float:
    """λ_W τ²: the penalty on the effective classifier W/τ, which is what the formulas below are written for."""
    return p.lambda_w * p.temperature ** 2


def _ce_balanced(p: UFMProblem) -> dict | None:
    if not (p.loss == "ce" and _plain(p) and p.learn_classifier and p.is_balanced
            and p.lambda_w > 0 and p.lambda_h > 0):
        return None
    k, n, lw = p.num_classes, p.counts[0], _effective_lambda_w(p)
    s = math.sqrt(n * lw * p.lambda_h)
    source = "Zhu et al. 2021, Thm 3.1 (value derived from the ETF ansatz)"
    if k * s >= 1:
        return {"loss": math.log(k), "geometry": "zero", "source": source}
    x = math.log(1.0 / s - k + 1)
    prod = (k - 1) * x / k
    omega = math.sqrt(prod * math.sqrt(n * p.lambda_h / lw))
    return {"loss": -math.log(1 - (k - 1) * s) + (k - 1) * s * x, "geometry": "simplex_etf", "source": source,
            "classifier_norm": omega, "feature_norm": prod / omega, "own_logit": prod,
            "bias": {"none": None, "free": "constant", "decay": "zero"}[p.bias]}


def _mse_no_bias(p: UFMProblem) -> dict | None:
    if not (p.loss == "mse" and _plain(p) and p.learn_classifier and p.bias == "none" and p.dim >= p.num_classes
            and p.lambda_w > 0 and p.lambda_h > 0):
        return None
    n, lw = torch.tensor(p.counts, dtype=torch.float64), _effective_lambda_w(p)
    total = float(n.sum())
    t = total * math.sqrt(lw * p.lambda_h)
    a = (n.sqrt() - t).clamp(min=0.0)
    value = torch.where(n.sqrt() > t, t * t / (2 * total) + (t / total) * (n.sqrt() - t), n / (2 * total)).sum()
    alive = a > 0
    geometry = ("orthogonal_frame" if bool(alive.all()) else
                "zero" if not bool(alive.any()) else "orthogonal_frame_with_collapsed_classes")
    return {"loss": float(value), "geometry": geometry,
            "source": "Tirer & Bruna 2022 (balanced); Dang et al. 2023, Hong & Ling 2023 (imbalanced): SVT of D^1/2",
            "own_logits": (a / n.sqrt()).tolist(), "collapsed_classes": torch.nonzero(a == 0).flatten().tolist(),
            "classifier_sq_norms": (math.sqrt(p.lambda_h / lw) * a).tolist(),
            "feature_sq_norms": (math.sqrt(lw / p.lambda_h) * a / n).tolist()}


def _normalized_ce(p: UFMProblem) -> dict | None:
    if not (p.loss == "ce" and p.normalize == "both" and not p.extra_layers and p.learn_classifier
            and p.bias == "none" and p.is_balanced):
        return None
    k, tau = p.num_classes, p.temperature
    return {"loss": math.log1p((k - 1) * math.exp(-k / ((k - 1) * tau))), "geometry": "simplex_etf",
            "source": "Lu & Steinerberger 2022; Wojtowytsch et al. 2020; Yaras et al. 2022 (unit sphere)",
            "classifier_norm": 1.0 / tau, "feature_norm": 1.0, "bias": None}


def _ball_ce(p: UFMProblem) -> dict | None:
    if not (p.constraint == "ball" and p.loss == "ce" and p.is_balanced):
        return None
    k, tau, energy = p.num_classes, p.temperature, math.sqrt(p.energy_w * p.energy_h)
    return {"loss": math.log1p((k - 1) * math.exp(-k * energy / ((k - 1) * tau))), "geometry": "simplex_etf",
            "source": "Fang et al. 2021, Thm 3 (layer-peeled model, balanced)",
            "classifier_norm": math.sqrt(p.energy_w) / tau, "feature_norm": math.sqrt(p.energy_h), "bias": None}


def _supcon(p: UFMProblem) -> dict | None:
    if not (p.loss == "supcon" and not p.extra_layers and p.is_balanced):
        return None
    k, n, tau = p.num_classes, p.counts[0], p.temperature
    value = -1.0 / tau + math.log((n - 1) * math.exp(1.0 / tau) + (k - 1) * n * math.exp(-1.0 / ((k - 1) * tau)))
    return {"loss": value, "geometry": "simplex_etf", "feature_norm": 1.0,
            "source": "Graf et al. 2021, Thm 1; Fang et al. 2021 (SupCon on the sphere)"}


def _ncmc(p: UFMProblem) -> dict | None:
    if not (p.loss.startswith("ncmc") and not p.extra_layers):
        return None
    f = torch.tensor(p.centers_per_class, dtype=torch.float64)
    n = torch.tensor(p.counts, dtype=torch.float64)
    c = torch.sqrt((math.cos(p.theta) ** 2 + f * math.sin(p.theta) ** 2) / f)  # cos α*_k
    variability = 1.0 - math.sin(p.theta) / c  # 1 − cos ρ*_k
    expected = {"variability": float((n * variability).sum() / n.sum()), "variability_per_class": variability.tolist(),
                "cos_alpha": c.tolist()}
    if p.ncmc_frame == "learned":
        out = ncmc_learned_frame(p.counts, p.centers_per_class, p.theta, p.lambda_w, p.lambda_h)
        return {**out, "geometry": "ncmc", **expected}
    if p.loss == "ncmc_p":
        s = float((f * n).sum())
        t = f * c / (f * c * c + p.lambda_h * s)
        value = (n * ((f / (2 * s)) * (t * c - 1) ** 2 + 0.5 * p.lambda_h * t * t)).sum()
        source = "Yan et al. 2024, Cor. 3.7 (fixed frame, Loss P with 1/(2S))"
    else:
        if p.lambda_norm == 0:
            return None
        total = float(n.sum())
        t = torch.full_like(f, 2 * p.lambda_norm / (2 * p.lambda_norm + total * p.lambda_h))
        value = ((n * c * f * (1 - c) ** 2).sum() / total + p.lambda_norm * (1 - t[0]) ** 2
                 + 0.5 * p.lambda_h * total * t[0] ** 2)
        source = "Yan et al. 2024, eq. 20 + App. F weight (fixed frame; derived in docs/ufm.md)"
    return {"loss": float(value), "geometry": "ncmc", "source": source, "feature_norms": t.tolist(), **expected}


def ncmc_learned_frame(counts, centers_per_class, theta: float, lambda_w0: float, lambda_h: float) -> dict:
    """Optimum of Loss P when V and W_0 are learned (Yan et al. 2024, Thm 3.3 / 3.4; module docstring).

    Returns ``classifier_sq_norms`` ‖w_k‖², ``feature_norms`` ‖h_k‖ (0 for a class whose frame vanishes) and the
    optimal ``loss``; at the optimum λ_W0‖w_k‖² = n_k λ_H ‖h_k‖² (Thm 3.3).
    """
    n = torch.tensor(counts, dtype=torch.float64)
    f = torch.tensor(centers_per_class, dtype=torch.float64)
    c = torch.sqrt((math.cos(theta) ** 2 + f * math.sin(theta) ** 2) / f)
    s = float((f * n).sum())
    u = (torch.sqrt(n * lambda_h / lambda_w0) / c - lambda_h * s / (f * c * c)).clamp(min=0.0)
    den = u * f * c * c + lambda_h * s
    loss = (n * lambda_h * f / (2 * den)).sum() + 0.5 * lambda_w0 * u.sum()
    return {"loss": float(loss), "classifier_sq_norms": u.tolist(), "feature_norms": (u.sqrt() * f * c / den).tolist(),
            "source": "Yan et al. 2024, Thm 3.3 / 3.4 (learned frame; derived in docs/ufm.md)"}


def predict(problem: UFMProblem) -> dict | None:
    """The closed-form optimum of ``problem`` (see the module docstring), or None if none applies."""
    if not isinstance(problem, UFMProblem):
        raise TypeError(f"problem must be a UFMProblem; got {type(problem).__name__}")
    if problem.constraint == "ball":
        return _ball_ce(problem)
    for rule in (_ce_balanced, _mse_no_bias, _normalized_ce, _supcon, _ncmc):
        out = rule(problem)
        if out is not None:
            return out
    return None


def _class_means(x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    sums = torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, y, x)
    return sums / torch.bincount(y, minlength=k).to(x.dtype)[:, None]


def gaps(result, i: int, theory: dict | None = None) -> dict | None:
    """Relative loss gap and scale-free geometry errors of instance ``i`` against ``predict``; None if no theory.

    ``geometry`` is the largest geometry error; each entry is 0 exactly at the predicted optimum.
    """
    p = result.problems[i]
    theory = predict(p) if theory is None else theory
    if theory is None:
        return None
    x, y = result.features(i)
    x, y = x.to("cpu", torch.float64), y.cpu()
    k = p.num_classes
    means = _class_means(x, y, k)
    w, b = result.classifier(i)
    w = None if w is None else w.to("cpu", torch.float64)
    loss = float(result.objective[i])
    out = {"loss": abs(loss - theory["loss"]) / max(abs(theory["loss"]), 1e-300)}
    geo: dict = {}
    kind = theory["geometry"]
    scale = max(float(means.norm(dim=1).max()), 1e-300)
    geo["within_class"] = float((x - means[y]).norm(dim=1).max()) / scale
    if kind == "simplex_etf":
        centred = means - means.mean(0)
        geo["etf_means"] = etf_error(centred @ centred.T)
        geo["feature_norm"] = float((means.norm(dim=1) / theory["feature_norm"] - 1).abs().max())
        if w is not None:
            geo["etf_weights"] = etf_error(w @ w.T)
            geo["self_duality"] = etf_error(w @ centred.T)
            geo["classifier_norm"] = float((w.norm(dim=1) / theory["classifier_norm"] - 1).abs().max())
        if b is not None and theory.get("bias"):
            b = b.to("cpu", torch.float64)
            spread = b - b.mean() if theory["bias"] == "constant" else b
            geo["bias"] = float(spread.abs().max()) / max(theory.get("own_logit", 1.0), 1e-300)
    elif kind.startswith("orthogonal_frame"):
        own = torch.tensor(theory["own_logits"], dtype=torch.float64)
        top = max(float(own.max()), 1e-300)
        geo["logits"] = float((w @ means.T - torch.diag(own)).abs().max()) / top
        gram = torch.diag(torch.tensor(theory["classifier_sq_norms"], dtype=torch.float64))
        geo["classifier_gram"] = float((w @ w.T - gram).abs().max()) / max(float(gram.max()), 1e-300)
        geo["feature_sq_norms"] = float((means.square().sum(1) - torch.tensor(theory["feature_sq_norms"])).abs().max()
                                        ) / max(max(theory["feature_sq_norms"]), 1e-300)
    elif kind == "ncmc":
        mean_centers = p.frame().mean_centers()
        target = torch.tensor(theory["feature_norms"])[:, None] * mean_centers / mean_centers.norm(dim=1, keepdim=True)
        geo["features"] = float((x - target[y]).norm(dim=1).max()) / float(target.norm(dim=1).max())
        unit_w = w / w.norm(dim=1, keepdim=True).clamp(min=1e-300)
        out["variability_expected"] = theory["variability"]
        out["variability_achieved"] = float((1 - (x / x.norm(dim=1, keepdim=True) * unit_w[y]).sum(1)).mean())
    elif kind == "zero":
        geo["within_class"] = float(x.norm(dim=1).max())
        if w is not None:
            geo["classifier"] = float(w.norm(dim=1).max())
    out.update(geo)
    out["geometry"] = max(geo.values()) if geo else 0.0
    return out

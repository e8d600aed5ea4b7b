"""Locally elastic ODE / SDE of class features (Zhang et al. 2021b; the first seed's §3.2.2–3.2.3).

Model (logits-as-features, p = K): K classes with residuals r_k = e_k − 1/K (the softmax residual at a uniform
prediction), LE impact matrix E = (α − β) I + β 11ᵀ (α intra-class, β inter-class impact) and transformation
blocks G_kl = r_k r_lᵀ, so the drift of class k is Σ_l E_kl r_k r_lᵀ X̄_l = r_k (E s)_k with s_l = ⟨r_l, X̄_l⟩.

* LE-ODE (seed eq. 43): dX̄/dt = A X̄ for the class means.
* LE-SDE (seed eq. 42): every sample X_{k,i} moves with its class's drift plus independent noise σ dW_{k,i};
  integrated by Euler–Maruyama, X ← X + dt·drift + σ√dt·ξ, all seeds at once as one (S, K, n, p) tensor.

Spectrum (derived in docs/ufm.md): on span{r_k} A acts as c E with c = ‖r_k‖² = (K−1)/K, so the mode
(r_1, …, r_K) — whose class means form a simplex ETF — grows at λ_etf = c(α + (K−1)β), the K−1 modes
Σ a_k r_k with Σ a_k = 0 at λ_other = c(α − β), and everything else is constant. For K ≥ 4 the means therefore
tend to a simplex ETF iff λ_etf > max(λ_other, 0), i.e. β > 0 and α + (K−1)β > 0 (``etf_condition``); with β ≤ 0
(even when α > β, the local-elasticity assumption) they end in the random configuration a_k r_k, not an ETF. Two
small-K exceptions follow from the centred Gram a_k²δ_kl − a_k a_l/K − (a_k² + a_l²)/K + ‖a‖²/K² of such a
configuration: K = 2 is always an ETF, and for K = 3 every a with Σ a_k = 0 gives an ETF too, so there any β ≠ 0
with a growing mode suffices. With noise the within-class spread grows like σ√t while the means grow
exponentially, so NC1 → 0 whenever some mode grows.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from numbers import Integral, Real

import numpy as np
import torch

from .metrics import measure_features
from .validation import check_scalar

__all__ = ["simulate", "LESDEResult", "etf_condition", "mode_rates", "le_drift"]

_TRACKED = ("nc1", "nc1_quotient", "etf_error_means", "equinorm_means", "equiangularity_means")


def etf_condition(num_classes: int, alpha: float, beta: float) -> bool:
    """True when the LE-ODE's class means converge to a simplex ETF (module docstring).

    K ≥ 4: β > 0 and α + (K−1)β > 0; K = 3: β ≠ 0 and a growing mode; K = 2: a growing mode.
    """
    rates = mode_rates(num_classes, alpha, beta)
    if num_classes == 2:
        return max(rates.values()) > 0
    if num_classes == 3:
        return beta != 0 and max(rates.values()) > 0
    return beta > 0 and rates["etf_mode"] > 0


def mode_rates(num_classes: int, alpha: float, beta: float) -> dict:
    """Growth rates of the ETF mode and of the K−1 competing modes (module docstring)."""
    c = (num_classes - 1) / num_classes
    return {"etf_mode": c * (alpha + (num_classes - 1) * beta), "other_modes": c * (alpha - beta)}


def le_drift(means: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Drift r_k (E s)_k of the class means, (S, K, p) → (S, K, p) (seed eq. 43 with G_kl = r_k r_lᵀ)."""
    k = means.shape[1]
    r = torch.eye(k, dtype=means.dtype, device=means.device) - 1.0 / k
    s = torch.einsum("kp,skp->sk", r, means)
    es = (alpha - beta) * s + beta * s.sum(1, keepdim=True)
    return es[..., None] * r


@dataclass
class LESDEResult:
    """Simulated features (S, K, n, p) at the end, and NC metrics per seed at log-spaced times."""

    features: torch.Tensor
    times: list[float]
    trajectory: dict = field(default_factory=dict)
    rates: dict = field(default_factory=dict)
    etf_expected: bool = False

    def final(self, key: str) -> np.ndarray:
        return np.asarray(self.trajectory[key][-1])


def _metrics(features: torch.Tensor) -> dict[str, list[float]]:
    s, k, n, p = features.shape
    labels = torch.arange(k).repeat_interleave(n)
    out: dict[str, list[float]] = {key: [] for key in _TRACKED}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in range(s):  # metrics only, at log-spaced times
            report = measure_features(features[seed].reshape(k * n, p).cpu(), labels, num_classes=k)
            for key in _TRACKED:
                out[key].append(float(report[key]))
    return out


def simulate(num_classes: int, alpha: float, beta: float, steps: int = 2000, dt: float = 0.01, noise: float = 0.0,
             seeds: int = 4, per_class: int = 1, init_scale: float = 1.0, seed: int = 0, log_points: int = 20,
             device=None, dtype: torch.dtype = torch.float64) -> LESDEResult:
    """Integrate the LE-SDE (LE-ODE when ``noise`` = 0) for ``seeds`` independent runs at once.

    Initial features are N(0, init_scale²) entries drawn from ``torch.Generator(seed)``; noise increments come
    from the same generator. Returns features at the end and NC metrics (``measure_features``) at ~``log_points``
    log-spaced times.
    """
    check_scalar(num_classes, "num_classes", Integral, low=2)
    for name, value in (("alpha", alpha), ("beta", beta)):
        check_scalar(value, name, Real)
    check_scalar(steps, "steps", Integral, low=1)
    check_scalar(dt, "dt", Real, low=0.0, low_open=True)
    check_scalar(noise, "noise", Real, low=0.0)
    check_scalar(seeds, "seeds", Integral, low=1)
    check_scalar(per_class, "per_class", Integral, low=1)
    check_scalar(init_scale, "init_scale", Real, low=0.0, low_open=True)
    g = torch.Generator().manual_seed(int(seed))
    shape = (seeds, num_classes, per_class, num_classes)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * init_scale).to(device or "cpu", dtype)
    grid = np.logspace(0, math.log10(steps), max(log_points - 1, 1))
    log_at = sorted({0, steps, *(int(round(v)) for v in grid)})
    trajectory: dict[str, list] = {key: [] for key in _TRACKED}
    times = []
    for step in range(steps + 1):
        if step in log_at:
            if not bool(x.abs().max() < 1e100):  # also catches NaN/Inf
                raise ValueError(f"LE-SDE features overflowed by step {step} (t = {step * dt:g}); "
                                 f"use fewer steps or a smaller dt")
            times.append(step * dt)
            for key, values in _metrics(x).items():
                trajectory[key].append(values)
        if step == steps:
            break
        x = x + dt * le_drift(x.mean(2), alpha, beta)[:, :, None, :]
        if noise > 0:
            xi = torch.randn(shape, generator=g, dtype=torch.float64).to(x)
            x = x + noise * math.sqrt(dt) * xi
    return LESDEResult(x, times, trajectory, mode_rates(num_classes, alpha, beta),
                       etf_condition(num_classes, alpha, beta))

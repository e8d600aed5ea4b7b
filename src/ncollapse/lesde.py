"""Locally elastic ODE / SDE of class features (Zhang et al. 2021b; the first seed's §3.2.2–3.2.3).

Model (logits-as-features, p = K): K classes with residuals r_k = e_k − 1/K (the softmax residual at a uniform
prediction), LE impact matrix E = (α − β) I + β 11ᵀ (α intra-class, β inter-class impact) and transformation
blocks G_kl = r_k r_lᵀ, so the drift of class k is Σ_l E_kl r_k r_lᵀ X̄_l = r_k (E s)_k with s_l = ⟨r_l, X̄_l⟩.

* LE-ODE (seed eq. 43): dX̄/dt = A X̄ for the class means.
* LE-SDE (seed eq. 42): dX = A X̄ dt + Σ^½ dW for the representative tuple X = (X_1, …, X_K) ∈ R^{Kp}; sample i
  of every class forms one tuple, tuples get independent noise, and Σ is σ²I (a number ``noise``) or any PSD
  (Kp × Kp) matrix, so noise may differ per class and correlate across classes. Integrated by Euler–Maruyama,
  X ← X + dt·drift + √dt Σ^½ ξ, all seeds at once as one (S, K, n, p) tensor.
* Separability (seed Thm. of §3.2.2, eqs. 44–45; derived in docs/ufm.md, "Separability"): with X̄ = E X the exact LE-ODE
  solution and X(0) = X̄(0), X(t) ~ N(X̄(t), tΣ), so for classes k ≠ l the best fixed direction u separates
  them, ⟨u, X_k(t) − X_l(t)⟩ > 0 (eq. 44), with probability max_u P = Φ(√(Δᵀ S⁻¹ Δ / t)), where
  Δ = X̄_k(t) − X̄_l(t) and S = Σ_kk + Σ_ll − Σ_kl − Σ_lk; it tends to 1 (eq. 45) iff a mode with a positive
  rate moves Δ, and to ½ otherwise. ``separability`` simulates many paths at once and reports both.
* Fit (Zhang et al. 2021b fit the LE-ODE to recorded class means): the drift is linear in (α, β),
  A X̄ = α D_α(X̄) + β D_β(X̄) with D_α = ``le_drift``(·, 1, 0) and D_β = ``le_drift``(·, 0, 1), so ``fit_le_ode``
  solves the least-squares problem Σ_j ‖(X̄_{j+1} − X̄_j)/Δt_j − ½(A X̄_j + A X̄_{j+1})‖² (trapezoidal rule) in
  closed form and reports the relative residual and ``etf_condition`` of the fitted pair.

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
from .resources import check_memory
from .validation import check_scalar

__all__ = ["simulate", "LESDEResult", "etf_condition", "mode_rates", "le_drift", "mean_path", "separability",
           "separability_formula", "fit_le_ode"]

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


def mean_path(means0: torch.Tensor, alpha: float, beta: float, t: float) -> torch.Tensor:
    """Exact LE-ODE solution X̄(t) from X̄(0) = ``means0`` (K, p) (seed eq. 43 with G_kl = r_k r_lᵀ).

    With s_k = ⟨r_k, X̄_k⟩: ds/dt = cEs, so s(t) = e^{cEt} s(0) = (e^{λ_o t}(I − J) + e^{λ_e t} J) s(0) with J = 11ᵀ/K,
    λ_e, λ_o the ``mode_rates``, and X̄_k(t) = X̄_k(0) + r_k (s_k(t) − s_k(0)) / c.
    """
    k = means0.shape[0]
    c = (k - 1) / k
    rates = mode_rates(k, alpha, beta)
    r = torch.eye(k, dtype=means0.dtype) - 1.0 / k
    if max(rates.values()) * t > 700:
        raise ValueError(f"the LE-ODE mean overflows float64 by t = {t:g} (growth rate {max(rates.values()):.3g}); "
                         f"use a smaller t")
    s0 = (r * means0).sum(1)
    mean_s = s0.mean()
    st = math.exp(rates["other_modes"] * t) * (s0 - mean_s) + math.exp(rates["etf_mode"] * t) * mean_s
    return means0 + r * ((st - s0) / c)[:, None]


def _noise_root(noise, num_classes: int, dim: int) -> torch.Tensor | None:
    """Σ^½ (symmetric PSD root) of a (Kp × Kp) covariance, or None for a number σ (Σ = σ²I, handled elementwise)."""
    if isinstance(noise, Real) and not isinstance(noise, bool):
        check_scalar(noise, "noise", Real, low=0.0)
        return None
    size = num_classes * dim
    check_memory(8 * 4 * size * size, f"a noise covariance for K = {num_classes} classes ({size} x {size})",
                 "lower the number of classes")
    cov = torch.as_tensor(np.asarray(noise, dtype=np.float64))
    if cov.shape != (size, size):
        raise ValueError(f"noise covariance has shape {tuple(cov.shape)}; expected (K·p, K·p) = ({size}, {size}) "
                         f"for K = {num_classes} classes of p = {dim} features")
    if not bool(torch.isfinite(cov).all()) or not torch.allclose(cov, cov.T, atol=1e-12 * max(1.0, cov.abs().max())):
        raise ValueError("noise covariance must be a finite symmetric matrix")
    eig, vec = torch.linalg.eigh(cov)
    if float(eig.min()) < -1e-10 * max(1.0, float(eig.max())):
        raise ValueError(f"noise covariance is not positive semidefinite (smallest eigenvalue {float(eig.min()):.3g})")
    return (vec * eig.clamp(min=0).sqrt()) @ vec.T


def _correlated(xi: torch.Tensor, root: torch.Tensor) -> torch.Tensor:
    """Σ^½ applied to each representative tuple of ξ (S, K, n, p): tuples are (K·p)-vectors over classes."""
    s, k, n, p = xi.shape
    tuples = xi.permute(0, 2, 1, 3).reshape(s, n, k * p) @ root.T.to(xi)
    return tuples.reshape(s, n, k, p).permute(0, 2, 1, 3)


def _euler_maruyama(x, alpha, beta, dt, steps, noise, root, g, stops):
    """X ← X + dt·A X̄ + √dt Σ^½ ξ on x (S, K, n, p), X̄ the mean over n; yields (step, x) at each step in ``stops``."""
    for step in range(steps + 1):
        if step in stops:
            if not bool(x.abs().max() < 1e100):  # also catches NaN/Inf
                raise ValueError(f"LE-SDE features overflowed by step {step} (t = {step * dt:g}); "
                                 f"use fewer steps or a smaller dt")
            yield step, x
        if step == steps:
            return
        x = x + dt * le_drift(x.mean(2), alpha, beta)[:, :, None, :]
        if root is not None or noise > 0:
            xi = torch.randn(x.shape, generator=g, dtype=torch.float64).to(x)
            x = x + math.sqrt(dt) * (noise * xi if root is None else _correlated(xi, root))


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


def simulate(num_classes: int, alpha: float, beta: float, steps: int = 2000, dt: float = 0.01, noise=0.0,
             seeds: int = 4, per_class: int = 1, init_scale: float = 1.0, seed: int = 0, log_points: int = 20,
             device=None, dtype: torch.dtype = torch.float64) -> LESDEResult:
    """Integrate the LE-SDE (LE-ODE when ``noise`` = 0) for ``seeds`` independent runs at once.

    ``noise`` is σ (Σ = σ²I) or the (K² × K²) covariance Σ of a representative tuple (module docstring). Initial
    features are N(0, init_scale²) entries drawn from ``torch.Generator(seed)``; noise increments come from the
    same generator. Returns features at the end and NC metrics (``measure_features``) at ~``log_points``
    log-spaced times. The memory (x, its drift, the noise draw and the update: 4·S·K·n·K float64) is checked
    before anything is allocated (``resources.check_memory``).
    """
    check_scalar(num_classes, "num_classes", Integral, low=2)
    for name, value in (("alpha", alpha), ("beta", beta)):
        check_scalar(value, name, Real)
    check_scalar(steps, "steps", Integral, low=1)
    check_scalar(dt, "dt", Real, low=0.0, low_open=True)
    root = _noise_root(noise, num_classes, num_classes)
    check_scalar(seeds, "seeds", Integral, low=1)
    check_scalar(per_class, "per_class", Integral, low=1)
    check_scalar(init_scale, "init_scale", Real, low=0.0, low_open=True)
    k = num_classes
    check_memory(8 * (4 * seeds * per_class * k * k + 8 * k * k), f"the LE-SDE with K = {k} classes, "
                 f"{seeds} seeds and {per_class} per class", "lower --classes, --seeds or --per-class", device=device)
    g = torch.Generator().manual_seed(int(seed))
    shape = (seeds, num_classes, per_class, num_classes)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * init_scale).to(device or "cpu", dtype)
    grid = np.logspace(0, math.log10(steps), max(log_points - 1, 1))
    log_at = sorted({0, steps, *(int(round(v)) for v in grid)})
    trajectory: dict[str, list] = {key: [] for key in _TRACKED}
    times = []
    for step, x in _euler_maruyama(x, alpha, beta, dt, steps, noise, root, g, set(log_at)):
        times.append(step * dt)
        for key, values in _metrics(x).items():
            trajectory[key].append(values)
    return LESDEResult(x, times, trajectory, mode_rates(num_classes, alpha, beta),
                       etf_condition(num_classes, alpha, beta))


def _pair_covariances(cov: torch.Tensor, k: int, pairs: torch.Tensor) -> torch.Tensor:
    """S_kl = Σ_kk + Σ_ll − Σ_kl − Σ_lk, the (p × p) covariance rate of X_k − X_l, for every pair: (P, p, p)."""
    blocks = cov.reshape(k, cov.shape[0] // k, k, cov.shape[0] // k).permute(0, 2, 1, 3)
    a, b = pairs[:, 0], pairs[:, 1]
    return blocks[a, a] + blocks[b, b] - blocks[a, b] - blocks[b, a]


def _noise_cov(noise, k: int) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """(Σ^½ or None, pairs (P, 2), pair covariance rates (P, p, p)); singular pair covariances are an error."""
    root = _noise_root(noise, k, k)
    cov = torch.eye(k * k, dtype=torch.float64) * noise ** 2 if root is None else root @ root
    pairs = torch.combinations(torch.arange(k), 2)
    rate_cov = _pair_covariances(cov, k, pairs)
    smallest = torch.linalg.eigvalsh(rate_cov).min(1).values
    if bool((smallest <= 1e-12).any()):
        a, b = pairs[int(smallest.argmin())].tolist()
        raise ValueError(f"the noise of X_{a} − X_{b} has a singular covariance (smallest eigenvalue "
                         f"{float(smallest.min()):.3g}); separability needs positive definite pair covariances")
    return root, pairs, rate_cov


def separability_formula(means0: torch.Tensor, alpha: float, beta: float, noise, t: float) -> dict:
    """P(separable) of every class pair at time t > 0 and its t → ∞ limit (module docstring, seed eqs. 44–45).

    ``probability`` = Φ(√(Δᵀ (tS)⁻¹ Δ)) with Δ = X̄_k(t) − X̄_l(t) from ``mean_path``; ``limit`` is 1 when a mode
    with a positive rate moves Δ (it then outgrows the noise's √t), else ½. ``pairs`` lists (k, l), k < l.
    """
    means0 = torch.as_tensor(np.asarray(means0, dtype=np.float64))
    k = means0.shape[0]
    if means0.shape != (k, k):
        raise ValueError(f"means0 has shape {tuple(means0.shape)}; expected (K, p) with p = K")
    check_scalar(t, "t", Real, low=0.0, low_open=True)
    _, pairs, rate_cov = _noise_cov(noise, k)
    mean = mean_path(means0, alpha, beta, t)
    delta = (mean[pairs[:, 0]] - mean[pairs[:, 1]])[..., None]
    distance = (delta.transpose(1, 2) @ torch.linalg.solve(t * rate_cov, delta))[:, 0, 0].sqrt()
    rates = mode_rates(k, alpha, beta)
    r = torch.eye(k, dtype=torch.float64) - 1.0 / k
    s0 = (r * means0).sum(1)
    other = r * (s0 - s0.mean())[:, None]  # c times the coefficient of e^{λ_o t} in X̄_k(t)
    tol = 1e-12 * max(1.0, float(s0.abs().max()))
    moves_other = (other[pairs[:, 0]] - other[pairs[:, 1]]).norm(dim=1) > tol
    grows = (moves_other & (rates["other_modes"] > 0)) | (abs(float(s0.mean())) > tol and rates["etf_mode"] > 0)
    return {"pairs": pairs.tolist(), "probability": torch.special.ndtr(distance).tolist(),
            "limit": torch.where(grows, 1.0, 0.5).tolist()}


def separability(num_classes: int, alpha: float, beta: float, noise, times, paths: int = 10000, dt: float = 0.01,
                 means0=None, seed: int = 0, device=None) -> dict:
    """Separability of every class pair, simulated on ``paths`` LE-SDE paths at once against ``separability_formula``.

    Paths start at X̄(0) = ``means0`` (K × K; default N(0, 1) entries from ``torch.Generator(seed)``) and take
    ``simulate``'s Euler–Maruyama step with the drift at the mean over paths, so the simulation never uses the
    closed form. At each of ``times`` the simulated probability is the fraction of paths with ⟨û, X_k − X_l⟩ > 0
    for the direction û = Ŝ⁻¹Δ̂ fitted to the paths. ``noise`` is σ or a (K² × K²) covariance whose pair
    covariances S_kl must be positive definite. The memory (Σ and the P = K(K−1)/2 pair covariances: 2·K⁴; the
    pair differences over paths: 3·P·paths·K; the paths: 4·paths·K², all float64) is checked before allocating.
    """
    check_scalar(num_classes, "num_classes", Integral, low=2)
    for name, value in (("alpha", alpha), ("beta", beta)):
        check_scalar(value, name, Real)
    check_scalar(paths, "paths", Integral, low=2)
    check_scalar(dt, "dt", Real, low=0.0, low_open=True)
    times = [check_scalar(t, "times entry", Real, low=0.0, low_open=True) for t in times]
    if not times or times != sorted(times):
        raise ValueError(f"times must be a non-empty increasing list of positive times; got {times}")
    k = num_classes
    pairs = k * (k - 1) // 2
    check_memory(8 * (2 * k ** 4 + 3 * pairs * paths * k + 4 * paths * k * k), f"separability for K = {k} classes "
                 f"on {paths} paths", "lower --classes or --paths", device=device)
    root, pairs, _ = _noise_cov(noise, k)
    g = torch.Generator().manual_seed(int(seed))
    means0 = torch.randn(k, k, generator=g, dtype=torch.float64) if means0 is None else means0
    means0 = torch.as_tensor(np.asarray(means0, dtype=np.float64))
    stops = sorted({max(1, int(round(t / dt))) for t in times})
    x = means0[None, :, None, :].expand(1, k, paths, k).to(device or "cpu", torch.float64)
    simulated, formula = [], []
    for step, x in _euler_maruyama(x, alpha, beta, dt, stops[-1], noise, root, g, set(stops)):
        diff = (x[0, pairs[:, 0]] - x[0, pairs[:, 1]]).cpu()  # (P, paths, p)
        centred = diff - diff.mean(1, keepdim=True)
        u = torch.linalg.solve(centred.transpose(1, 2) @ centred / (paths - 1), diff.mean(1)[..., None])
        simulated.append(((diff @ u)[..., 0] > 0).double().mean(1).tolist())
        formula.append(separability_formula(means0, alpha, beta, noise, step * dt))
    probability = [f["probability"] for f in formula]
    return {"times": [step * dt for step in stops], "pairs": formula[0]["pairs"], "simulated": simulated,
            "formula": probability, "limit": formula[0]["limit"], "paths": paths, "dt": dt,
            "rates": mode_rates(k, alpha, beta),
            "max_abs_diff": float(np.abs(np.asarray(simulated) - np.asarray(probability)).max())}


def fit_le_ode(times, means) -> dict:
    """Least-squares (α, β) of the LE-ODE dX̄/dt = A X̄ to class means ``means`` (T, K, K) at ``times`` (T,).

    Trapezoidal differences (module docstring); the means are logits of K classes (p = K) and are centred over the
    logits first, since the drift is orthogonal to 1 and softmax ignores that direction. Returns ``alpha``,
    ``beta``, ``residual`` = ‖observed − fitted difference quotients‖ / ‖observed‖ (0: the ODE explains every
    step), ``rates`` and ``etf_condition`` (K ≥ 4: β > 0 and α + (K − 1)β > 0).
    """
    means = torch.as_tensor(np.asarray(means, dtype=np.float64))
    t = torch.as_tensor(np.asarray(times, dtype=np.float64))
    if means.ndim != 3 or means.shape[1] != means.shape[2] or means.shape[1] < 2:
        raise ValueError(f"means has shape {tuple(means.shape)}; expected (T, K, K) class-mean logits, K >= 2")
    if t.shape != (means.shape[0],) or len(t) < 2:
        raise ValueError(f"times has shape {tuple(t.shape)}; expected ({means.shape[0]},) with at least 2 points")
    step = t[1:] - t[:-1]
    if not bool((step > 0).all()):
        raise ValueError("times must be strictly increasing")
    if not bool(torch.isfinite(means).all()):
        raise ValueError("means contain NaN or Inf")
    k = means.shape[1]
    x = means - means.mean(2, keepdim=True)
    observed = (x[1:] - x[:-1]) / step[:, None, None]
    columns = [0.5 * (le_drift(x[:-1], *ab) + le_drift(x[1:], *ab)) for ab in ((1.0, 0.0), (0.0, 1.0))]
    design = torch.stack([c.reshape(-1) for c in columns], 1)
    (alpha, beta), *_ = np.linalg.lstsq(design.numpy(), observed.reshape(-1).numpy(), rcond=None)
    fitted = design @ torch.tensor([alpha, beta], dtype=torch.float64)
    norm = float(observed.norm())
    residual = float((observed.reshape(-1) - fitted).norm()) / norm if norm > 0 else math.nan
    alpha, beta = float(alpha), float(beta)
    return {"alpha": alpha, "beta": beta, "residual": residual, "points": len(t), "rates": mode_rates(k, alpha, beta),
            "etf_condition": etf_condition(k, alpha, beta)}

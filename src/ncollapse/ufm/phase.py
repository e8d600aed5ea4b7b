"""Minority collapse on certified optima: the threshold ratio R₀ and (R, λ) phase diagrams (needs the extra).

Setting (Fang et al. 2021, §4): K_A majority classes with n_A samples and K_B minority classes with n_B = n_A/R,
λ_W = λ_H = λ. Minority collapse is w_k − w_k' → 0 among the minority classifiers (Fang et al. 2021, Thm 5);
we measure it by their mean pairwise cosine, counting a pair of vanishing classifiers (norm below 1e-3 of the
largest, as MSE's minority classes become at large R) as collapsed, cosine 1.

* ``collapse_threshold``: R₀ = the smallest R whose certified optimum (``ufm.certify``, exact for d ≥ K) has
  minority mean cosine > 1 − ε, by bisection in log R. The program sees the counts only through n_k/N and √n_k,
  so R is continuous (n_B real = per-class sample weights).
* Closed form (derived in docs/ufm.md §5; Fang et al. prove collapse only as R → ∞ and the seed gives no R₀):
  the convex program is invariant under permuting the minority classes, so it has a permutation-symmetric
  optimum; its minority-antisymmetric block decouples from the rest of ‖A‖_*, and A = 0 there is optimal iff the
  gradient's block has spectral norm ≤ μ = τ√(λ_Wλ_H). With identical minority logits that block is
  −(√n_B/N)(e_k − mean) for CE and MSE alike, so the minority classifiers coincide iff √n_B ≤ μN. With
  x = √n_B, R₀ = n_A/x² for the smaller root of K_Bμx² − x + K_Aμn_A = 0 (``closed_form_threshold``), for both
  losses and any bias.
* ``phase_diagram``: a grid over (R, λ) at integer counts, every cell solved by the batched L-BFGS solver and
  certified; heat maps of the minority cosine and of the certificate's relative gap.
"""

from __future__ import annotations

import math
import time
from numbers import Integral, Real
from pathlib import Path

import numpy as np

from .._io import atomic_write_json
from ..report.figures import figure_row, write_png
from ..serialize import to_jsonable
from ..validation import check_scalar
from ..resources import check_memory
from .certify import ConvexUFM, certify
from .problem import UFMProblem
from .solve import solve

__all__ = ["minority_cosine", "collapse_threshold", "closed_form_threshold", "phase_diagram", "write_threshold",
           "write_phase_diagram"]


def minority_cosine(gram: np.ndarray, minority) -> float:
    """Mean pairwise cosine of the classifiers ``minority`` from their Gram matrix (module docstring)."""
    g = np.asarray(gram, dtype=np.float64)[np.ix_(minority, minority)]
    norms = np.sqrt(np.clip(np.diag(g), 0.0, None))
    scale = max(float(np.sqrt(np.clip(np.diag(gram), 0.0, None)).max()), 1e-300)
    alive = norms > 1e-3 * scale  # a conic solver leaves ‖w‖² ~ 1e-9 on a vanished class
    cos = g / np.outer(np.where(alive, norms, 1.0), np.where(alive, norms, 1.0))
    cos = np.where(np.outer(~alive, ~alive), 1.0, np.where(np.outer(alive, alive), cos, 0.0))
    iu = np.triu_indices(len(minority), 1)
    return float(cos[iu].mean())


def _check_setting(k_majority, k_minority, lam, n_majority, loss):
    check_scalar(k_majority, "k_majority", Integral, low=1)
    check_scalar(k_minority, "k_minority", Integral, low=2)
    check_scalar(lam, "lam", Real, low=0.0, low_open=True)
    check_scalar(n_majority, "n_majority", Integral, low=1)
    if loss not in ("ce", "mse"):
        raise ValueError(f"loss == {loss!r}, must be 'ce' or 'mse'")


def check_grid(ratios, lambdas) -> None:
    """Every imbalance ratio R and every λ finite and > 0 (n_B = n_A/R; λ = 0 has no finite CE optimum)."""
    for name, values in (("ratios", ratios), ("lambdas", lambdas)):
        if not len(values):
            raise ValueError(f"{name} is empty; give at least one value")
        try:  # one vectorised test, then the first offender (or every value, if some are not numbers) named
            grid = np.asarray(values, dtype=np.float64)
            suspects = np.flatnonzero(~(np.isfinite(grid) & (grid > 0)))
        except (TypeError, ValueError):
            suspects = range(len(values))
        for i in suspects:
            check_scalar(values[i], f"{name} value", Real, low=0.0, low_open=True, high=math.inf, high_open=True)


def closed_form_threshold(k_majority: int, k_minority: int, lam: float, n_majority: int,
                          temperature: float = 1.0) -> float | None:
    """R₀ from √n_B = τλN (module docstring), or None if no R collapses the minority alone."""
    mu = temperature * lam
    disc = 1.0 - 4.0 * k_majority * k_minority * n_majority * mu * mu
    if disc < 0:
        return None
    x = (1.0 - math.sqrt(disc)) / (2.0 * k_minority * mu)  # √n_B at the threshold
    return n_majority / (x * x)


def collapse_threshold(k_majority: int, k_minority: int, lam: float, loss: str = "ce", n_majority: int = 1000,
                       eps: float = 1e-4, r_max: float = 1e8, rtol: float = 1e-3, bias: str = "none") -> dict:
    """R₀ by bisection on certified optima (module docstring): ``R0`` (None if no collapse up to ``r_max``), the
    bracket, every evaluated (R, cosine), and the closed-form R₀ (module docstring)."""
    _check_setting(k_majority, k_minority, lam, n_majority, loss)
    check_scalar(eps, "eps", Real, low=0.0, low_open=True, high=1.0)
    check_scalar(r_max, "r_max", Real, low=1.0, low_open=True)
    check_scalar(rtol, "rtol", Real, low=0.0, low_open=True)
    k = k_majority + k_minority
    problem = UFMProblem(loss=loss, counts=(n_majority,) * k, dim=k, lambda_w=lam, lambda_h=lam, bias=bias)
    program = ConvexUFM(loss, k, bias)
    minority = list(range(k_majority, k))
    evaluated: dict[float, float] = {}

    def cosine(ratio: float) -> float:
        counts = [n_majority] * k_majority + [n_majority / ratio] * k_minority
        evaluated[ratio] = minority_cosine(program.solve(problem, counts)["classifier_gram"], minority)
        return evaluated[ratio]

    lo, hi = 1.0, 2.0
    if cosine(lo) > 1 - eps:
        hi = lo
    while hi > lo and cosine(hi) <= 1 - eps:
        lo, hi = hi, hi * 4
        if hi > r_max:
            hi = None
            break
    while hi is not None and hi / lo > 1 + rtol:
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if cosine(mid) <= 1 - eps else (lo, mid)
    analytic = closed_form_threshold(k_majority, k_minority, lam, n_majority)
    points = sorted(evaluated.items())
    return {"R0": hi, "bracket": [lo, hi], "eps": eps, "k_majority": k_majority, "k_minority": k_minority,
            "lambda": lam, "loss": loss, "bias": bias, "n_majority": n_majority,
            "ratios": [r for r, _ in points], "minority_cosine": [c for _, c in points],
            "analytic_R0": analytic,
            "analytic_source": "√n_B = τλN, derived in docs/ufm.md §5 (the seed and Fang et al. 2021, Thm 5, give "
                               "only the limit R → ∞)"}


def write_threshold(out_dir, data: dict, outputs=None) -> dict:
    """``threshold.json`` and ``threshold.png`` (minority cosine vs R with R₀ marked) in ``out_dir``, through
    ``outputs`` (the command's ``io_safe.Outputs`` that claimed them) when given."""
    out = Path(out_dir)
    data = to_jsonable(data)
    (atomic_write_json if outputs is None else outputs.write_json)(out / "threshold.json", data)
    fig, (ax,) = figure_row(6, 4)
    ax.plot(data["ratios"], data["minority_cosine"], "o-", ms=3, label="certified optimum")
    if data["R0"] is not None:
        ax.axvline(data["R0"], color="red", lw=1, label=f"R0 = {data['R0']:.4g}")
    if data["analytic_R0"] is not None:
        ax.axvline(data["analytic_R0"], color="gray", ls="--", lw=1,
                   label=f"closed form √n_B = λN: {data['analytic_R0']:.4g}")
    ax.set(xscale="log", xlabel="imbalance ratio R = n_A / n_B", ylabel="minority classifiers' mean cosine",
           title=f"{data['loss'].upper()} UFM, K_A={data['k_majority']}, K_B={data['k_minority']}, "
                 f"λ={data['lambda']:g}, n_A={data['n_majority']}")
    ax.legend()
    write_png(out / "threshold.png", fig, outputs=outputs)
    return data


_CELL_BYTES = 512  # least memory per cell: its UFMProblem (measured 376 B), (R, λ) tuple and result entries


def phase_diagram(k_majority: int, k_minority: int, dim: int, ratios, lambdas, loss: str = "ce",
                  n_majority: int = 100, steps: int = 3000, chunk: int = 64, progress: bool = False) -> dict:
    """Minority cosine and certificate gap on the grid ``ratios`` × ``lambdas`` (module docstring).

    n_B = max(1, round(n_A/R)) (the achieved R = n_A/n_B is reported); cells are solved ``chunk`` at a time as
    one stacked L-BFGS problem and each is certified."""
    check_grid(ratios, lambdas)
    _check_setting(k_majority, k_minority, min(lambdas), n_majority, loss)
    check_memory(len(ratios) * len(lambdas) * _CELL_BYTES,
                 f"a phase diagram of {len(ratios)} ratios x {len(lambdas)} lambdas", "give fewer ratios or lambdas")
    start = time.perf_counter()
    cells = [(r, lam) for lam in lambdas for r in ratios]
    k = k_majority + k_minority
    problems = [UFMProblem(loss=loss, counts=(n_majority,) * k_majority + (max(1, round(n_majority / r)),) * k_minority,
                           dim=dim, lambda_w=lam, lambda_h=lam) for r, lam in cells]
    minority = list(range(k_majority, k))
    cos, gap, cert_cos, converged = [], [], [], []
    seconds = {"solve": 0.0, "certify": 0.0}
    for lo in range(0, len(problems), chunk):
        part = problems[lo: lo + chunk]
        tic = time.perf_counter()
        result = solve(part, steps=steps, record_metrics=False, progress=progress)
        seconds["solve"] += time.perf_counter() - tic
        tic = time.perf_counter()
        certificates = certify(part, result.objective)
        seconds["certify"] += time.perf_counter() - tic
        for i, cert in enumerate(certificates):
            w, _ = result.classifier(i)
            cos.append(minority_cosine((w @ w.T).numpy(), minority))
            cert_cos.append(minority_cosine(cert["classifier_gram"], minority))
            gap.append(cert["relative_gap"])
            converged.append(bool(result.converged[i]))
    shape = (len(lambdas), len(ratios))
    return {"k_majority": k_majority, "k_minority": k_minority, "dim": dim, "loss": loss, "n_majority": n_majority,
            "ratios": list(ratios), "achieved_ratios": [n_majority / p.counts[-1] for p in problems[: len(ratios)]],
            "lambdas": list(lambdas), "minority_cosine": np.reshape(cos, shape).tolist(),
            "certified_minority_cosine": np.reshape(cert_cos, shape).tolist(),
            "relative_gap": np.reshape(gap, shape).tolist(), "converged": np.reshape(converged, shape).tolist(),
            "steps": steps, "seconds": time.perf_counter() - start, "solve_seconds": seconds["solve"],
            "certify_seconds": seconds["certify"]}


def write_phase_diagram(out_dir, data: dict, outputs=None) -> dict:
    """``phase.json`` and ``phase.png`` (heat maps of minority cosine and |relative gap|) in ``out_dir``, through
    ``outputs`` as in ``write_threshold``."""
    out = Path(out_dir)
    data = to_jsonable(data)
    (atomic_write_json if outputs is None else outputs.write_json)(out / "phase.json", data)
    fig, axes = figure_row(11, 4.2, ncols=2)
    extent = [math.log10(min(data["achieved_ratios"])), math.log10(max(data["achieved_ratios"])),
              math.log10(min(data["lambdas"])), math.log10(max(data["lambdas"]))]
    gap = np.log10(np.maximum(np.abs(np.asarray(data["relative_gap"], dtype=float)), 1e-16))
    for ax, values, title, cmap in ((axes[0], data["minority_cosine"], "minority classifiers' mean cosine",
                                     "viridis"), (axes[1], gap, "log10 |relative certificate gap|", "magma")):
        im = ax.imshow(np.asarray(values, dtype=float), origin="lower", aspect="auto", extent=extent, cmap=cmap)
        ax.set(xlabel="log10 R", ylabel="log10 λ", title=title)
        fig.colorbar(im, ax=ax)
    write_png(out / "phase.png", fig, outputs=outputs)
    return data

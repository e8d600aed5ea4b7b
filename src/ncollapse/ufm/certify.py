"""Certified global optima of the CE / MSE UFM through its convex reformulation over Z = W Hᵀ (needs the extra).

Penalised model (Zhu et al. 2021, Thm 3.1's proof; Hong & Ling 2023): for logits Z = W Hᵀ/τ,
min over W, H with W Hᵀ = τZ of (λ_W/2)‖W‖² + (λ_H/2)‖H‖² is τ√(λ_Wλ_H)‖Z‖_* (AM-GM on a balanced
factorisation of the SVD; ≥ by ‖AB‖_* ≤ ‖A‖_F‖B‖_F). The loss is convex in Z and the objective is invariant
under permuting the samples of a class, so averaging over those permutations (Jensen) puts one column z_k per
class, and ‖[z_k repeated n_k times]‖_* = ‖Z_c D^{1/2}‖_*, D = diag(n_k). With A = Z_c D^{1/2}::

    min_{A, b}  Σ_k (n_k/N) ℓ(A e_k/√n_k + b, k) + τ√(λ_Wλ_H)‖A‖_* + (λ_b/2)‖b‖²

is convex, lower-bounds the UFM for every d and equals it when d ≥ K (any A factors through d ≥ rank A).
Ball-constrained model (Fang et al. 2021, eq. 3; ``UFMProblem(constraint="ball")``): (1/K)Σ‖w_k‖² ≤ E_W and
(1/K)Σ_k (1/n_k)Σ_i‖h_{k,i}‖² ≤ E_H give, after the same averaging, min Σ_k (n_k/N) ℓ(z_k, k) subject to
‖Z_c‖_* ≤ K√(E_W E_H)/τ. docs/ufm.md §3 derives both. The program is solved by cvxpy with Clarabel (SCS as
fallback); ``convex_objective`` is its solution's objective re-evaluated in float64.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .._extras import CONIC_SOLVERS, require_cvxpy
from ..resources import check_memory
from .problem import UFMProblem

__all__ = ["certify", "ConvexUFM", "check_certifiable", "program_bytes"]

_SOLVER_OPTIONS = {"CLARABEL": dict(tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10,
                                    max_iter=400),
                   "SCS": dict(eps_abs=1e-9, eps_rel=1e-9, max_iters=200_000)}


def check_certifiable(p: UFMProblem) -> None:
    """Raise ``ValueError`` unless ``p`` is a CE / MSE UFM that the convex reformulation covers."""
    why = None
    if p.loss not in ("ce", "mse"):
        why = f"loss {p.loss!r} (only 'ce' and 'mse')"
    elif p.normalize != "none" or p.extra_layers:
        why = "normalised features/weights or extra layers"
    elif not p.learn_classifier:
        why = "a fixed classifier"
    elif p.constraint == "penalty" and (p.lambda_w <= 0 or p.lambda_h <= 0):
        why = "λ_W = 0 or λ_H = 0 (no minimiser)"
    if why is not None:
        raise ValueError(f"the convex certificate does not cover {why}; it needs loss ce or mse, a learned "
                         f"classifier, normalize='none', no extra layers and λ_W, λ_H > 0 (or constraint='ball')")
    check_memory(program_bytes(p.num_classes), f"the convex certificate with K = {p.num_classes} classes",
                 "certify fewer classes (the program grows like K^4)")


def program_bytes(num_classes: int) -> int:
    """Peak memory of compiling the convex program for K classes, about 200·K⁴ bytes: cvxpy's DPP
    canonicalisation of the K × K nuclear norm (measured 207–212·K⁴ bytes above the import for K = 32, 40, 48)."""
    return 200 * num_classes ** 4


class ConvexUFM:
    """The reduced convex program for one (loss, K, bias, constraint) shape, compiled once and re-solved with
    new counts and penalties through cvxpy parameters (DPP), so a sweep pays the compilation once."""

    def __init__(self, loss: str, num_classes: int, bias: str, constraint: str = "penalty"):
        check_memory(program_bytes(num_classes), f"the convex certificate with K = {num_classes} classes",
                     "certify fewer classes (the program grows like K^4)")
        cp, self.solver = require_cvxpy("the UFM certificate")
        self._cp = cp
        k = num_classes
        self.loss, self.k, self.bias, self.constraint = loss, k, bias, constraint
        self.a = cp.Variable((k, k), name="A")
        self.b = cp.Variable(k, name="b") if bias != "none" else None
        self.z = cp.Variable((k, k), name="Z")  # column k: logits of class k
        self.weight = cp.Parameter(k, nonneg=True, name="n_over_N")
        self.root_weight = cp.Parameter(k, nonneg=True, name="sqrt_n_over_N")
        self.inv_sqrt = cp.Parameter(k, nonneg=True, name="inv_sqrt_n")
        self.scale = cp.Parameter(nonneg=True, name="mu_or_radius")
        self.lam_b = cp.Parameter(nonneg=True, name="lambda_b")
        logits = self.a @ cp.diag(self.inv_sqrt)
        if self.b is not None:
            logits = logits + cp.reshape(self.b, (k, 1), order="F") @ np.ones((1, k))
        if loss == "ce":
            data = self.weight @ (cp.log_sum_exp(self.z, axis=0) - cp.diag(self.z))
        else:
            data = 0.5 * cp.sum_squares((self.z - np.eye(k)) @ cp.diag(self.root_weight))
        constraints = [self.z == logits]
        objective = data
        if constraint == "ball":
            constraints.append(cp.normNuc(self.a) <= self.scale)
        else:
            objective = objective + self.scale * cp.normNuc(self.a)
        if self.b is not None:
            objective = objective + 0.5 * self.lam_b * cp.sum_squares(self.b)
        self.program = cp.Problem(cp.Minimize(objective), constraints)

    def _solve(self) -> str:
        """Solve with the preferred solver, then SCS if that one fails; the status (e.g. "optimal_inaccurate")
        is reported in the certificate instead of cvxpy's warning."""
        installed = self._cp.installed_solvers()
        for solver in [self.solver] + [s for s in CONIC_SOLVERS if s != self.solver and s in installed]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                try:
                    self.program.solve(solver=solver, **_SOLVER_OPTIONS[solver])
                except self._cp.error.SolverError:
                    continue
            if self.a.value is not None:
                return solver
        return solver

    def key(self) -> tuple:
        return (self.loss, self.k, self.bias, self.constraint)

    @staticmethod
    def key_of(p: UFMProblem) -> tuple:
        return (p.loss, p.num_classes, p.bias, p.constraint)

    def solve(self, p: UFMProblem, counts=None) -> dict:
        """Certificate of ``p``: convex optimum, its classifier / feature Gram matrices and logits.

        ``counts`` (positive reals) replaces ``p.counts``: the program sees the counts only through n_k/N and
        √n_k, so real counts are the UFM with per-class sample weights (used for a continuous ratio R)."""
        check_certifiable(p)
        if self.key_of(p) != self.key():
            raise ValueError(f"this program is for {self.key()}; the problem is {self.key_of(p)}")
        n = np.asarray(p.counts if counts is None else counts, dtype=np.float64)
        if n.shape != (self.k,) or not bool((n > 0).all()):
            raise ValueError(f"counts must be {self.k} positive numbers; got {n.tolist()}")
        ball = p.constraint == "ball"
        self.weight.value = n / n.sum()
        self.root_weight.value = np.sqrt(n / n.sum())
        self.inv_sqrt.value = np.ones_like(n) if ball else 1.0 / np.sqrt(n)
        self.scale.value = (p.num_classes * math.sqrt(p.energy_w * p.energy_h) / p.temperature if ball
                            else p.temperature * math.sqrt(p.lambda_w * p.lambda_h))
        self.lam_b.value = p.lambda_b
        solver = self._solve()
        if self.a.value is None:
            raise ValueError(f"the convex certificate failed: {solver} returned status {self.program.status}")
        a = self.a.value
        b = np.zeros(p.num_classes) if self.b is None else self.b.value
        value = _objective(p, a, b, n)
        u, s, vt = np.linalg.svd(a)
        half = u @ np.diag(s) @ u.T  # (A Aᵀ)^{1/2}
        right = vt.T @ np.diag(s) @ vt  # (Aᵀ A)^{1/2}
        if ball:  # W = a U (τS)^{1/2}, H_c = V (τS)^{1/2}/a, a² = √(E_W/E_H)
            cw = math.sqrt(p.energy_w / p.energy_h) * p.temperature
            feature_gram = math.sqrt(p.energy_h / p.energy_w) * p.temperature * right
        else:
            cw = math.sqrt(p.lambda_h / p.lambda_w) * p.temperature
            feature_gram = (math.sqrt(p.lambda_w / p.lambda_h) * p.temperature) * right / np.sqrt(np.outer(n, n))
        return {"convex_objective": value, "status": self.program.status, "solver": solver,
                "rank": int((s > 1e-6 * max(s.max(), 1e-300)).sum()), "classifier_gram": cw * half,
                "feature_gram": feature_gram, "logits": a * self.inv_sqrt.value[None, :] + b[:, None],
                "bias": None if self.b is None else b}


def _objective(p: UFMProblem, a: np.ndarray, b: np.ndarray, n: np.ndarray) -> float:
    """The reduced objective at (A, b) with counts n, in float64 (module docstring)."""
    ball = p.constraint == "ball"
    z = (a if ball else a / np.sqrt(n)[None, :]) + b[:, None]
    if p.loss == "ce":
        top = z.max(axis=0)
        ell = top + np.log(np.exp(z - top).sum(axis=0)) - np.diag(z)
    else:
        ell = 0.5 * np.square(z - np.eye(len(n))).sum(axis=0)
    value = float((n / n.sum()) @ ell)
    if not ball:
        value += p.temperature * math.sqrt(p.lambda_w * p.lambda_h) * float(np.linalg.svd(a, compute_uv=False).sum())
    return value + 0.5 * p.lambda_b * float(b @ b)


def certify(problems, achieved=None) -> list[dict]:
    """Certificates of ``problems`` (one ``UFMProblem`` or a list); with ``achieved`` (one value per problem, e.g.
    ``UFMResult.objective``) also ``gap`` = achieved − convex optimum and ``relative_gap`` = gap/|convex optimum|.
    Programs of the same shape are compiled once."""
    problems = [problems] if isinstance(problems, UFMProblem) else list(problems)
    for p in problems:
        if not isinstance(p, UFMProblem):
            raise TypeError(f"problems must be UFMProblem instances; got {type(p).__name__}")
        check_certifiable(p)
    if achieved is not None and len(achieved) != len(problems):
        raise ValueError(f"achieved has {len(achieved)} values for {len(problems)} problems")
    programs: dict = {}
    out = []
    for i, p in enumerate(problems):
        key = ConvexUFM.key_of(p)
        if key not in programs:
            programs[key] = ConvexUFM(*key)
        cert = programs[key].solve(p)
        if achieved is not None:
            cert["gap"] = float(achieved[i]) - cert["convex_objective"]
            cert["relative_gap"] = cert["gap"] / max(abs(cert["convex_objective"]), 1e-300)
        out.append(cert)
    return out

"""The max-margin limit of unregularised cross-entropy on the UFM (Ji et al. 2022, "An unconstrained layer-peeled
perspective on neural collapse": gradient flow converges in direction to a KKT point of the min-norm separation
problem (MM), and its global minimisers are neural-collapse solutions).

    (MM)  min ½(‖W‖_F² + ‖H‖_F²)  s.t.  (w_{y_i} − w_j)ᵀ h_i ≥ 1  for every sample i and class j ≠ y_i.

Convex form (derived in docs/ufm.md, "Max-margin limit"): min over WHᵀ = Z of ½(‖W‖² + ‖H‖²) is ‖Z‖_*
(W = U S^½, H = V S^½ from the SVD Z = U S Vᵀ, possible when d ≥ rank Z), and the margins are linear in Z, so (MM)
is min ‖Z‖_* over z_{y_i,i} − z_{j,i} ≥ 1. Averaging the columns of one class keeps them feasible and does not
raise ‖Z‖_*, so one column per class suffices: min ‖Z_c diag(√n_k)‖_* with (Z_c)_kk − (Z_c)_jk ≥ 1. Balanced
counts give Z_c = I − 11ᵀ/K and the optimum (K − 1)√n. cvxpy solves the program (the optional ``theory`` extra).

Comparison with a solution (W, H) of gradient descent, rotation-free because (MM) is invariant under W → WQ, H → HQ:

* ``cos_logits`` = ⟨WHᵀ, Z*⟩ / (‖WHᵀ‖ ‖Z*‖);
* ``cos_params`` = max_Q ⟨X, X* Q⟩ / (‖X‖ ‖X*‖) = ‖X*ᵀ X‖_* / (‖X‖ ‖X*‖) (orthogonal Procrustes) with the stacked
  X = [W; H] and X* = [U S^½; V S^½];
* ``margin_ratio`` = γ(θ)/γ* with the normalised margin γ(θ) = min_{i, j≠y_i} (z_{y_i,i} − z_{j,i}) / ‖θ‖², whose
  optimum is γ* = 1/(2‖Z*‖_*); it is at most 1.
"""

from __future__ import annotations

import numpy as np
import torch

from .._extras import require_cvxpy
from ..validation import check_counts

__all__ = ["max_margin", "compare_direction"]


def max_margin(counts) -> dict:
    """Solve the convex form of (MM) for class sizes ``counts``; returns the optimum and Z* (K × N, float64).

    Keys: ``objective`` (‖Z*‖_* = min ½‖(W, H)‖²), ``class_logits`` (Z_c, K × K), ``logits`` (Z*, columns grouped by
    class), ``solver``.
    """
    counts = check_counts(counts, "counts")
    if len(counts) < 2:
        raise ValueError(f"counts has {len(counts)} class; the max-margin problem needs at least two classes")
    cp, solver = require_cvxpy("the max-margin program")
    k = len(counts)
    zc = cp.Variable((k, k))
    scale = np.diag(np.sqrt(np.asarray(counts, dtype=np.float64)))
    own = cp.reshape(cp.diag(zc), (1, k), order="C")
    off = ~np.eye(k, dtype=bool)
    problem = cp.Problem(cp.Minimize(cp.normNuc(zc @ scale)), [(own - zc)[off] >= 1])
    problem.solve(solver=solver)
    if problem.status != cp.OPTIMAL:
        raise ValueError(f"the max-margin program ended with status {problem.status!r} ({solver})")
    z_class = np.asarray(zc.value, dtype=np.float64)
    logits = np.repeat(z_class, counts, axis=1)
    return {"objective": float(np.linalg.norm(logits, "nuc")), "class_logits": z_class, "logits": logits,
            "solver": solver}


def _factor(z: np.ndarray, dim: int) -> np.ndarray:
    """X* = [U S^½; V S^½] padded to ``dim`` columns, the balanced factorisation of Z* (rank r ≤ dim)."""
    u, s, vt = np.linalg.svd(z, full_matrices=False)
    rank = int((s > s[0] * 1e-8).sum())
    if rank > dim:
        raise ValueError(f"dim == {dim} is below rank(Z*) = {rank}: W Hᵀ cannot reach the max-margin solution")
    root = np.sqrt(s[:rank])
    x = np.concatenate([u[:, :rank] * root, vt[:rank].T * root])
    return np.pad(x, ((0, 0), (0, dim - rank)))


def compare_direction(W: torch.Tensor, H: torch.Tensor, labels: torch.Tensor, solution: dict) -> dict[str, float]:
    """``cos_logits``, ``cos_params`` and ``margin_ratio`` of (W, H) against ``max_margin``'s solution (docstring).

    ``W`` is (K, d), ``H`` (N, d) with rows grouped by class as in ``UFMProblem.labels``.
    """
    w, h = W.detach().double().cpu().numpy(), H.detach().double().cpu().numpy()
    y = labels.cpu().numpy()
    z_star = solution["logits"]
    if w.shape[0] != z_star.shape[0] or h.shape[0] != z_star.shape[1] or w.shape[1] != h.shape[1]:
        raise ValueError(f"W {w.shape} and H {h.shape} do not match the max-margin logits {z_star.shape}")
    z = w @ h.T
    x = np.concatenate([w, h])
    x_star = _factor(z_star, w.shape[1])
    own = z[y, np.arange(len(y))]
    rival = np.where(np.arange(z.shape[0])[:, None] == y[None, :], -np.inf, z).max(0)
    gamma = (own - rival).min() / (x * x).sum()
    return {
        "cos_logits": float((z * z_star).sum() / (np.linalg.norm(z) * np.linalg.norm(z_star))),
        "cos_params": float(np.linalg.norm(x_star.T @ x, "nuc") / (np.linalg.norm(x) * np.linalg.norm(x_star))),
        "margin_ratio": float(gamma * 2 * solution["objective"]),
    }

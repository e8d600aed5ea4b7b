"""The Σ_B rank rule: the eigenvalue cut-off of Σ_B^† from the precision the class means were computed in, and
the class pairs behind a rank deficit.

Derivation (docs/measurement.md, "The Σ_B rank rule"). The kept eigenvalues are those of M_c M_cᵀ, M_c (K × d)
the centred class means, computed in float64. Two roundings limit what can be resolved:

* the class means themselves. Mean k is held with an error vector e_k of norm at most
  ε_k = (u_in + √n_k·u_state)·√(‖μ_k‖² + V_k) + 2·u_64·(‖μ_k‖ + ‖μ_G‖): the features were rounded to their dtype
  (or to the float32 GEMM that summed them, whichever is coarser: unit roundoff u_in, relative to the samples'
  root-mean-square norm √(‖μ_k‖² + V_k), V_k the mean squared deviation) before being summed, each of at most n_k
  merges of the running mean rounds in the state's dtype (u_state; √n_k: the probabilistic bound of Higham &
  Mary 2019, Thm. 3.1), and centring rounds in float64. Weyl's inequality (Golub & Van Loan, Cor. 8.6.2)
  moves every singular value of M_c by at most ‖E‖_2 ≤ ‖E‖_F = (Σ_k ε_k²)^½, so a computed singular value
  below ‖E‖_F is consistent with an exact zero: eigenvalue ‖E‖_F².
* the float64 factorisation. A Gram (M_c M_cᵀ, inner size m = d, or M_cᵀ M_c, m = K) rounds each inner product
  by √m·u_64 of ‖M_c‖_F² (Higham & Mary 2019) and the symmetric eigensolver adds u_64·‖G‖_2 ≤ u_64·‖M_c‖_F²
  (Golub & Van Loan §8.3): eigenvalues below (√m + 1)·u_64·‖M_c‖_F² are rounding. The SVD of M_c itself is
  backward stable with ‖δM‖_F ≲ (√max(K, d) + 1)·u_64·‖M_c‖_F (Golub & Van Loan §8.6): eigenvalues below
  ((√max(K, d) + 1)·u_64·‖M_c‖_F)² are rounding.

The cut-off on the eigenvalues of M_c M_cᵀ (equivalently M_cᵀ M_c) is the sum of the two.
"""

from __future__ import annotations

import math

import torch

__all__ = ["unit_roundoff", "means_noise", "factorisation_noise", "eigenvalue_cutoff", "closest_pairs"]


def unit_roundoff(dtype: torch.dtype) -> float:
    """u = ε/2 of a floating dtype (Higham 2002, §2.1): 2^-53 for float64, 2^-24 for float32, 2^-8 for bfloat16."""
    return torch.finfo(dtype).eps / 2


def means_noise(means: torch.Tensor, centred: torch.Tensor, counts: torch.Tensor, sq_dev: torch.Tensor,
                feature_dtype: torch.dtype, state_dtype: torch.dtype) -> float:
    """‖E‖_F² = Σ_k ε_k², the class means' share of the cut-off (module docstring), from float64 ``means`` (K, d),
    ``centred`` = means − μ_G, ``counts`` and ``sq_dev`` (K,)."""
    u_in, u_state, u_64 = unit_roundoff(feature_dtype), unit_roundoff(state_dtype), unit_roundoff(torch.float64)
    n = counts.to(torch.float64)
    norms = means.norm(dim=1)
    rms = (norms.square() + sq_dev.clamp(min=0) / n).sqrt()
    mu_g = (means - centred)[0].norm()
    eps = (u_in + n.sqrt() * u_state) * rms + 2 * u_64 * (norms + mu_g)
    return float(eps.square().sum())


def factorisation_noise(centred: torch.Tensor, method: str) -> float:
    """The factorisation's share of the cut-off (module docstring): ``"svd"`` of M_c, ((√d + 1)·u_64·‖M_c‖_F)²
    (d the longer side), or ``"gram"``, an eigendecomposition of a Gram of inner size m (d for M_c M_cᵀ, K for
    M_cᵀ M_c), (√m + 1)·u_64·‖M_c‖_F²."""
    k, d = centred.shape
    u_64, total = unit_roundoff(torch.float64), float(centred.square().sum())
    if method == "svd":
        return ((math.sqrt(max(k, d)) + 1) * u_64) ** 2 * total
    return (math.sqrt(d if k <= d else k) + 1) * u_64 * total


def eigenvalue_cutoff(means: torch.Tensor, centred: torch.Tensor, counts: torch.Tensor, sq_dev: torch.Tensor,
                      feature_dtype: torch.dtype, state_dtype: torch.dtype, method: str) -> float:
    """Largest eigenvalue of M_c M_cᵀ that rounding alone could produce: ``means_noise`` + ``factorisation_noise``."""
    return (means_noise(means, centred, counts, sq_dev, feature_dtype, state_dtype)
            + factorisation_noise(centred, method))


def closest_pairs(centred: torch.Tensor, count: int, tile_size: int) -> tuple[list[list[int]], list[float]]:
    """The ``count`` class pairs (k < l, rows of ``centred``) with the smallest ‖μ_k − μ_l‖ (the CDNV's
    denominators), nearest first, and their distances. Candidates are screened per tile with the Gram form and
    their distances recomputed from the difference vectors, so coinciding means come out at 0, not at rounding."""
    k = centred.shape[0]
    sq = centred.square().sum(1)
    keep = min(k * (k - 1) // 2, 4 * count + 8)
    best_d = torch.empty(0, dtype=torch.float64)
    best_i = torch.empty(0, dtype=torch.int64)
    best_j = torch.empty(0, dtype=torch.int64)
    for a in range(0, k, tile_size):
        rows = centred[a:a + tile_size]
        for c in range(a, k, tile_size):
            cols = centred[c:c + tile_size]
            dist = sq[a:a + tile_size, None] + sq[None, c:c + tile_size] - 2 * rows @ cols.T
            i, j = torch.meshgrid(torch.arange(a, a + rows.shape[0]), torch.arange(c, c + cols.shape[0]),
                                  indexing="ij")
            upper = i < j
            best_d = torch.cat([best_d, dist[upper]])
            best_i, best_j = torch.cat([best_i, i[upper]]), torch.cat([best_j, j[upper]])
            if best_d.numel() > keep:
                order = torch.topk(best_d, keep, largest=False).indices
                best_d, best_i, best_j = best_d[order], best_i[order], best_j[order]
    exact = (centred[best_i] - centred[best_j]).norm(dim=1)
    order = torch.argsort(exact, stable=True)[:count]
    return ([[int(best_i[o]), int(best_j[o])] for o in order], [float(exact[o]) for o in order])

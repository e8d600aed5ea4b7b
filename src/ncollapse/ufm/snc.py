"""Strong neural collapse (SNC) errors of Mixon, Parshall & Pi (2020), "Neural collapse with unconstrained features".

For the MSE UFM with an unpenalised bias, K classes of n samples each, Mixon et al. (the invariant subspace S of
the linearised gradient flow) call (W, H, b) strongly collapsed when

    W Wᵀ = √n (I_K − 11ᵀ/K),   H = (1/√n)(W ⊗ 1_n)ᵀ  (h_{k,i} = w_k/√n),   b = 1/K · 1_K.

These are zero-loss points (WH + b1ᵀ = Y), and small initialisations flow to them. The lab's objective carries an
extra factor 1/N, which only rescales time, so the same configuration is the target. The three relative errors are

    gram    = ‖W Wᵀ − √n P‖_F / ‖√n P‖_F,          P = I − 11ᵀ/K, ‖√n P‖_F = √(n(K − 1)),
    feature = ‖H − (W ⊗ 1_n)ᵀ/√n‖_F / ‖W‖_F,       (‖(W ⊗ 1_n)ᵀ/√n‖_F = ‖W‖_F),
    bias    = ‖b − 1/K‖ / ‖1/K‖ = √K ‖b − 1/K‖.
"""

from __future__ import annotations

import math

import torch

__all__ = ["snc_errors"]


def snc_errors(W: torch.Tensor, H: torch.Tensor, labels: torch.Tensor, b: torch.Tensor | None) -> dict[str, float]:
    """The SNC errors ``snc_gram``, ``snc_feature``, ``snc_bias`` of one balanced MSE UFM instance (module docstring).

    ``W`` is (K, d), ``H`` (N, d) with one row per sample, ``labels`` (N,) and ``b`` (K,). SNC is defined for the
    model with a bias and equal class sizes; anything else is a ValueError.
    """
    if b is None:
        raise ValueError("strong neural collapse (Mixon et al. 2020) is defined for the UFM with a bias; "
                         "solve with bias='free'")
    k = W.shape[0]
    if H.ndim != 2 or H.shape[1] != W.shape[1] or labels.shape != (H.shape[0],) or b.shape != (k,):
        raise ValueError(f"shapes do not fit: W {tuple(W.shape)}, H {tuple(H.shape)}, labels {tuple(labels.shape)}, "
                         f"b {tuple(b.shape)}; expected (K, d), (N, d), (N,), (K,)")
    counts = torch.bincount(labels, minlength=k)
    if len(counts) != k or bool((counts != counts[0]).any()):
        raise ValueError(f"strong neural collapse needs K = {k} classes of equal size; got counts {counts.tolist()}")
    W, H, b = W.double(), H.double(), b.double()
    n = int(counts[0])
    p = torch.eye(k, dtype=torch.float64) - 1.0 / k
    gram = torch.linalg.norm(W @ W.T - math.sqrt(n) * p) / math.sqrt(n * (k - 1))
    feature = torch.linalg.norm(H - W[labels] / math.sqrt(n)) / torch.linalg.norm(W).clamp(min=1e-300)
    bias = math.sqrt(k) * torch.linalg.norm(b - 1.0 / k)
    return {"snc_gram": float(gram), "snc_feature": float(feature), "snc_bias": float(bias)}

"""Pairwise quantities over K class vectors in tiles: never a K × K matrix, memory O(K·d + tile²).

One pass over the blocks (i ≤ j) of the Gram A Aᵀ gives every pairwise metric of the class means (or of
the classifier rows); a second, non-symmetric pass over A Bᵀ gives self-duality. Sums over pairs are kept as
per-block moments merged with Chan, Golub & LeVeque's (1979) pairwise update, so a standard deviation near
zero keeps its precision; Frobenius errors are summed entry by entry (no ‖X‖² − 2⟨X, Y⟩ + ‖Y‖² cancellation).
Normalisers that have a d × d closed form (‖A Aᵀ‖_F = ‖AᵀA‖_F) come from ``gram_norm``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["Moments", "gram_norm", "vector_pairs", "duality_pass"]


class Moments:
    """Count, mean and centred sum of squares of a stream of values (Chan et al. 1979, eq. 2.1)."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, values: torch.Tensor) -> None:
        n_b = values.numel()
        if n_b == 0:
            return
        mean_b = float(values.mean())
        m2_b = float((values - mean_b).square().sum())
        total = self.count + n_b
        delta = mean_b - self.mean
        self.m2 += m2_b + delta * delta * self.count * n_b / total
        self.mean += delta * n_b / total
        self.count = total

    def result(self) -> tuple[float, float]:
        """(mean, population std); NaN for no values."""
        if self.count == 0:
            return float("nan"), float("nan")
        return self.mean, math.sqrt(max(self.m2 / self.count, 0.0))


class _LogSumExp:
    """Streaming log Σ exp(values), for kernels that overflow float64 (Riesz energy in high dimension)."""

    def __init__(self):
        self.value = -math.inf

    def add(self, values: torch.Tensor) -> None:
        if values.numel():
            self.value = float(torch.logaddexp(torch.tensor(self.value, dtype=values.dtype), torch.logsumexp(values, 0)))


def gram_norm(a: torch.Tensor, b: torch.Tensor | None = None) -> float:
    """‖A Bᵀ‖_F through the smaller of the K × K and d × d problems: ‖A Bᵀ‖_F² = Σ (AᵀA) ⊙ (BᵀB)."""
    b = a if b is None else b
    if a.shape[0] <= a.shape[1]:
        return float(torch.linalg.matrix_norm(a @ b.T))
    if b is a:
        return float(torch.linalg.matrix_norm(a.T @ a))
    return math.sqrt(max(float(((a.T @ a) * (b.T @ b)).sum()), 0.0))


def _blocks(k: int, tile: int):
    for i in range(0, k, tile):
        for j in range(i, k, tile):
            yield slice(i, min(i + tile, k)), slice(j, min(j + tile, k)), i == j


def vector_pairs(rows: torch.Tensor, tile: int, *, variances: torch.Tensor | None = None,
                 cdnv_exponent: float = 2.0, offset: torch.Tensor | None = None, gnc2: bool = False) -> dict:
    """Every pairwise quantity of the rows v_k (K × d, float64) in one tiled pass over V Vᵀ.

    Returns, over pairs k < l with c_kl = cos(v_k, v_l) (NaN entries if some v_k = 0):
    ``cos_mean``, ``cos_std`` (population; equiangularity, Papyan et al. 2020),
    ``max_angle`` = mean |c_kl + 1/(K−1)| (Papyan et al. 2020),
    ``etf_error`` = ‖G/‖G‖_F − (I − 11ᵀ/K)/√(K−1)‖_F over all k, l (Zhu et al. 2021, NC2);
    with ``variances`` V_k: ``cdnv`` = mean of (V_k + V_l)/(2‖v_k − v_l‖^p), p = ``cdnv_exponent``
    (Galanti et al. 2021, Def. 1; pairs with a NaN variance left out);
    with ``offset`` μ: ``orth_error`` = ‖H/‖H‖_F − I/√K‖_F for H the Gram of the uncentred rows v_k + μ
    (the orthogonal frame, e.g. bias-free imbalanced MSE; H_kl = G_kl + v_k·μ + v_l·μ + ‖μ‖²);
    with ``gnc2``: ``gnc2_log_mean``, ``gnc2_log_var`` (population) of log(1/‖u_k − u_l‖) and
    ``gnc2_riesz_mean`` of ‖u_k − u_l‖^−(d−2), u_k = v_k/‖v_k‖, ‖u_k − u_l‖² = 2 − 2c_kl (hyperspherical
    uniformity, Liu et al. 2023, GNC2; the Riesz mean is summed in log space so it never overflows midway).
    """
    k, d = rows.shape
    norms = rows.norm(dim=1)
    sq = norms.square()
    fro = gram_norm(rows)
    etf_off = 1.0 / (k * math.sqrt(k - 1))  # −(target) off the diagonal
    etf_diag = (1.0 - 1.0 / k) / math.sqrt(k - 1)
    cos, gnc2_log, riesz, max_angle = Moments(), Moments(), _LogSumExp(), 0.0
    etf_sum = orth_sum = cdnv_sum = 0.0
    cdnv_count = 0
    if offset is not None:
        along = rows @ offset
        centre = float(offset @ offset)
        uncentred = rows + offset
        orth_fro = gram_norm(uncentred)
    mask = torch.ones(min(tile, k), min(tile, k), dtype=torch.bool).triu(1)
    for si, sj, diagonal in _blocks(k, tile):
        g = rows[si] @ rows[sj].T
        weight = 1.0 if diagonal else 2.0  # an off-diagonal block stands for itself and its transpose
        m = mask[:g.shape[0], :g.shape[1]] if diagonal else None
        eye = torch.eye(g.shape[0], dtype=g.dtype) if diagonal else None
        target = -etf_off + (etf_diag + etf_off) * eye if diagonal else -etf_off
        etf_sum += weight * float((g / fro - target).square().sum())
        if offset is not None:
            h = g + along[si, None] + along[None, sj] + centre
            orth_target = eye / math.sqrt(k) if diagonal else 0.0
            orth_sum += weight * float((h / orth_fro - orth_target).square().sum())
        c = g / (norms[si, None] * norms[None, sj])
        c = c[m] if diagonal else c.flatten()
        cos.add(c)
        max_angle += float((c + 1.0 / (k - 1)).abs().sum())
        if variances is not None:
            dist2 = (sq[si, None] + sq[None, sj] - 2.0 * g).clamp(min=0.0)
            vals = (variances[si, None] + variances[None, sj]) / (2.0 * dist2 ** (cdnv_exponent / 2.0))
            vals = vals[m] if diagonal else vals.flatten()
            keep = ~torch.isnan(vals)
            cdnv_sum += float(vals[keep].sum())
            cdnv_count += int(keep.sum())
        if gnc2:
            log_dist = 0.5 * torch.log((2.0 - 2.0 * c).clamp(min=0.0))  # log ‖u_k − u_l‖
            gnc2_log.add(-log_dist)
            riesz.add(-(d - 2) * log_dist)
    pairs = k * (k - 1) // 2
    cos_mean, cos_std = cos.result()
    out = {"cos_mean": cos_mean, "cos_std": cos_std, "max_angle": max_angle / pairs,
           "etf_error": math.sqrt(etf_sum) if fro > 0 else float("nan")}
    if bool((norms == 0).any()):  # an angle to the zero vector is undefined
        out.update(cos_mean=float("nan"), cos_std=float("nan"), max_angle=float("nan"))
    if offset is not None:
        out["orth_error"] = math.sqrt(orth_sum) if orth_fro > 0 else float("nan")
    if variances is not None:
        out["cdnv"] = cdnv_sum / cdnv_count if cdnv_count else float("nan")
    if gnc2:
        mean, std = gnc2_log.result()
        log_riesz = riesz.value - math.log(pairs)
        out.update(gnc2_log_mean=mean, gnc2_log_var=std * std,
                   gnc2_riesz_mean=math.exp(log_riesz) if log_riesz < math.log(torch.finfo(torch.float64).max) else math.inf)
    return out


def duality_pass(weights: torch.Tensor, means: torch.Tensor, tile: int) -> float:
    """Self-duality ‖W M_cᵀ/‖W M_cᵀ‖_F − (I − 11ᵀ/K)/√(K−1)‖_F (Zhu et al. 2021, NC3) over tiles of W M_cᵀ."""
    k = weights.shape[0]
    fro = gram_norm(weights, means)
    if fro == 0:
        return float("nan")
    off = -1.0 / (k * math.sqrt(k - 1))
    total = 0.0
    for i in range(0, k, tile):
        for j in range(0, k, tile):
            block = weights[i:i + tile] @ means[j:j + tile].T / fro
            target = torch.full_like(block, off)
            if i == j:
                target += torch.eye(block.shape[0], dtype=block.dtype) / math.sqrt(k - 1)
            total += float((block - target).square().sum())
    return math.sqrt(total)

"""Pairwise quantities over K class vectors in tiles: never a K × K matrix, memory O(K·d + tile²).

One pass over the blocks (i ≤ j) of the Gram A Aᵀ gives every pairwise metric of the class means (or of
the classifier rows); a second, non-symmetric pass over A Bᵀ gives self-duality. Sums over pairs are kept as
per-block moments merged with Chan, Golub & LeVeque's (1979) pairwise update, so a standard deviation near
zero keeps its precision. A Frobenius error ‖X/‖X‖_F − T‖_F comes from the closed form 2 − 2⟨X, T⟩/‖X‖_F
(d × d products and K-vectors) when its square is ≥ 1e-4, and is otherwise summed entry by entry over the
tiles, so errors near zero (a collapsed network) keep their precision too. Normalisers come from the d × d
closed form ‖A Bᵀ‖_F² = Σ (AᵀA) ⊙ (BᵀB) (``gram_norm``).

Scale safety: every pass first divides its vectors by a power of two (``unit_scale``), so their largest entry
lies in [1/2, 1). That only shifts exponents (IEEE 754), so the scale-invariant results are bit-identical to the
unscaled computation wherever that one neither overflows nor underflows, and no Gram or norm can overflow at any
scale the inputs can hold (features or W of 1e±150 in float64).
"""

from __future__ import annotations

import math

import torch

__all__ = ["Moments", "gram_norm", "vector_pairs", "duality_pass", "binary_exponent", "unit_scale"]


def binary_exponent(*tensors: torch.Tensor) -> int:
    """e with 2^(e−1) ≤ max |x| < 2^e over the entries of ``tensors`` (``math.frexp``); 0 for all-zero or non-finite."""
    top = max((float(t.abs().max()) for t in tensors if t.numel()), default=0.0)
    return math.frexp(top)[1] if 0.0 < top < math.inf else 0


def _times_power_of_two(x: torch.Tensor, e: int) -> torch.Tensor:
    """x·2^e, exact (a change of exponent); in two factors so that 2^e itself never overflows a float."""
    half = e // 2
    return x * 2.0 ** half * 2.0 ** (e - half) if e else x


def unit_scale(x: torch.Tensor) -> torch.Tensor:
    """x·2^−e, e = ``binary_exponent(x)``: the largest entry in [1/2, 1), exactly, so no square overflows or
    underflows and every scale-invariant quantity of x is unchanged (IEEE 754 scaling by a power of two)."""
    return _times_power_of_two(x, -binary_exponent(x))


class Moments:
    """Count, mean and centred sum of squares of a stream of values (Chan et al. 1979, eq. 2.1)."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, values: torch.Tensor) -> None:
        n_b = values.numel()
        if n_b == 0:
            return
        mean_b = float(values.mean())
        m2_b = float(torch.linalg.vector_norm(values - mean_b)) ** 2
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
    """Streaming log Σ of a kernel that can overflow float64 (the Riesz energy in high dimension)."""

    def __init__(self):
        self.value = -math.inf

    def add_powers(self, base: torch.Tensor, exponent: float) -> None:
        """Add log Σ base^exponent (base ≥ 0): a plain power sum when it neither overflows nor underflows,
        ``torch.logsumexp`` of exponent·log(base) otherwise."""
        if not base.numel():
            return
        plain = float(torch.pow(base, exponent).sum())
        if 1e-280 < plain < math.inf:
            block = math.log(plain)
        else:
            block = float(torch.logsumexp((exponent * torch.log(base)).reshape(-1), 0))
        top = max(self.value, block)
        self.value = top + math.log(math.exp(self.value - top) + math.exp(block - top)) if top > -math.inf else top


def gram_norm(a: torch.Tensor, b: torch.Tensor | None = None) -> float:
    """‖A Bᵀ‖_F through the smaller of the K × K and d × d problems: ‖A Bᵀ‖_F² = Σ (AᵀA) ⊙ (BᵀB)."""
    b = a if b is None else b
    if a.shape[0] <= a.shape[1]:
        return float(torch.linalg.matrix_norm(a @ b.T))
    if b is a:
        return float(torch.linalg.matrix_norm(a.T @ a))
    return math.sqrt(max(float(((a.T @ a) * (b.T @ b)).sum()), 0.0))


CLOSED_FORM_MIN = 1e-4  # squared Frobenius errors at least this large come from the closed form


def _closed_form_sq(inner: float, norm: float) -> float:
    """‖X/‖X‖_F − T‖_F² = 2 − 2⟨X, T⟩/‖X‖_F for a unit-norm target T. Its rounding is about 1e-15 absolute, so the
    value is used when ≥ ``CLOSED_FORM_MIN`` (relative error ≤ 1e-11); smaller errors are summed entry by entry."""
    return 2.0 - 2.0 * inner / norm


def _blocks(k: int, tile: int):
    for i in range(0, k, tile):
        for j in range(i, k, tile):
            yield slice(i, min(i + tile, k)), slice(j, min(j + tile, k)), i == j


def _frobenius_sq(block: torch.Tensor, scale: float, off: float, diagonal_extra: float | None) -> float:
    """Σ (block/scale − target)², target = off everywhere plus ``diagonal_extra`` on the diagonal."""
    r = block - off * scale
    if diagonal_extra is not None:
        r.diagonal().sub_(diagonal_extra * scale)
    return float(torch.linalg.vector_norm(r)) ** 2 / scale ** 2


def vector_pairs(rows: torch.Tensor, tile: int, *, variances: torch.Tensor | None = None,
                 cdnv_exponent: float = 2.0, offset: torch.Tensor | None = None, orth: bool = False,
                 gnc2: bool = False, frobenius: bool = True) -> dict:
    """Every pairwise quantity of the rows v_k (K × d, float64, K ≥ 2) in one tiled pass over V Vᵀ.

    Returns, over pairs k < l with c_kl = cos(v_k, v_l) (NaN if some v_k = 0):
    ``cos_mean``, ``cos_std`` (population; equiangularity, Papyan et al. 2020),
    ``max_angle`` = mean |c_kl + 1/(K−1)| (Papyan et al. 2020);
    with ``frobenius``: ``etf_error`` = ‖G/‖G‖_F − (I − 11ᵀ/K)/√(K−1)‖_F over all k, l (Zhu et al. 2021, NC2);
    with ``variances`` V_k: ``cdnv`` = mean of (V_k + V_l)/(2‖v_k − v_l‖^p), p = ``cdnv_exponent``
    (Galanti et al. 2021, Def. 1; pairs with a NaN variance left out);
    with ``orth``: ``orth_error`` = ‖H/‖H‖_F − I/√K‖_F for H the Gram of the uncentred rows v_k + μ, μ =
    ``offset`` (default 0; the orthogonal frame of bias-free imbalanced MSE, H_kl = G_kl + v_k·μ + v_l·μ + ‖μ‖²);
    with ``gnc2``: ``gnc2_log_mean``, ``gnc2_log_var`` (population) of log(1/‖u_k − u_l‖) and
    ``gnc2_riesz_mean`` of ‖u_k − u_l‖^−(d−2), u_k = v_k/‖v_k‖, ‖u_k − u_l‖² = 2 − 2c_kl (hyperspherical
    uniformity, Liu et al. 2023, GNC2; the Riesz mean is summed in log space so it never overflows midway).
    """
    k, d = rows.shape
    e = binary_exponent(rows) if offset is None else binary_exponent(rows, offset)
    rows = _times_power_of_two(rows, -e)  # exact; the CDNV gets its factor 2^(e(2−p)) back at the end
    if offset is not None:
        offset = _times_power_of_two(offset, -e)
    if variances is not None:
        variances = _times_power_of_two(variances, -2 * e)
    norms = rows.norm(dim=1)
    inv = 1.0 / norms
    sq = norms.square()
    shift = 1.0 / (k - 1)  # c + 1/(K−1) is what max-angle measures, and centres the cosines near an ETF
    cos, log_dist2, riesz = Moments(), Moments(), _LogSumExp()
    max_angle = etf_sum = orth_sum = cdnv_sum = 0.0
    cdnv_count = 0
    fro = gram_norm(rows) if frobenius else 0.0
    etf_closed = orth_closed = -1.0  # a closed form ≥ CLOSED_FORM_MIN replaces the entry-by-entry sum
    if fro > 0:  # ⟨G, I − 11ᵀ/K⟩ = Σ‖v_k‖² − ‖Σ v_k‖²/K
        etf_closed = _closed_form_sq((float(sq.sum()) - float(rows.sum(0).square().sum()) / k) / math.sqrt(k - 1), fro)
    if orth:
        offset = torch.zeros(d, dtype=rows.dtype) if offset is None else offset
        along = rows @ offset + float(offset @ offset) / 2  # H_kl = G_kl + along_k + along_l
        orth_fro = gram_norm(rows + offset)
        if orth_fro > 0:  # ⟨H, I⟩ = Σ‖v_k + μ‖²
            orth_closed = _closed_form_sq(float((rows + offset).square().sum()) / math.sqrt(k), orth_fro)
    nan_variances = variances is not None and bool(torch.isnan(variances).any())
    triu = {}
    for si, sj, diagonal in _blocks(k, tile):
        g = rows[si] @ rows[sj].T
        weight = 1.0 if diagonal else 2.0  # an off-diagonal block stands for itself and its transpose
        etf_extra = (1.0 / math.sqrt(k - 1)) if diagonal else None
        if frobenius and fro > 0 and etf_closed < CLOSED_FORM_MIN:
            etf_sum += weight * _frobenius_sq(g, fro, -1.0 / (k * math.sqrt(k - 1)), etf_extra)
        if orth and orth_fro > 0 and orth_closed < CLOSED_FORM_MIN:
            h = g + along[si, None]
            h += along[None, sj]
            orth_sum += weight * _frobenius_sq(h, orth_fro, 0.0, 1.0 / math.sqrt(k) if diagonal else None)
            del h
        if diagonal:  # strict upper triangle of the block, as 1-D pairs with their row/column vectors
            n = g.shape[0]
            if n not in triu:
                triu[n] = torch.triu_indices(n, n, offset=1)
            ii, jj = triu[n][0] + si.start, triu[n][1] + si.start
            g = g[triu[n][0], triu[n][1]]
            left, right = (lambda v: v[ii]), (lambda v: v[jj])
        else:
            left, right = (lambda v: v[si, None]), (lambda v: v[None, sj])
        if variances is not None:
            dist2 = left(sq) + right(sq)
            dist2.add_(g, alpha=-2.0).clamp_(min=0.0)
            if cdnv_exponent != 2.0:
                dist2.pow_(cdnv_exponent / 2.0)
            ratio = (left(variances) + right(variances)).div_(dist2)
            del dist2
            if nan_variances:
                keep = ~torch.isnan(ratio)
                cdnv_sum += 0.5 * float(ratio[keep].sum())
                cdnv_count += int(keep.sum())
            else:
                cdnv_sum += 0.5 * float(ratio.sum())
                cdnv_count += ratio.numel()
            del ratio
        t = g * left(inv)
        t.mul_(right(inv)).add_(shift)  # c + 1/(K−1)
        max_angle += float(torch.linalg.vector_norm(t, ord=1))
        cos.add(t)
        if gnc2:  # ‖u_k − u_l‖² = 2(1 − c), 1 − c = 1 + 1/(K−1) − t
            t = torch.rsub(t, 1.0 + shift).clamp_(min=0.0)
            riesz.add_powers(t, -(d - 2) / 2.0)
            log_dist2.add(t.log_())
        del t, g
    pairs = k * (k - 1) // 2
    cos_mean, cos_std = cos.result()
    out = {"cos_mean": cos_mean - shift, "cos_std": cos_std, "max_angle": max_angle / pairs}
    if bool((norms == 0).any()):  # an angle to the zero vector is undefined
        out.update(cos_mean=float("nan"), cos_std=float("nan"), max_angle=float("nan"))
    if frobenius:
        out["etf_error"] = math.sqrt(max(etf_closed, 0.0) if etf_closed >= CLOSED_FORM_MIN else etf_sum) \
            if fro > 0 else float("nan")
    if orth:
        out["orth_error"] = math.sqrt(orth_closed if orth_closed >= CLOSED_FORM_MIN else orth_sum) \
            if orth_fro > 0 else float("nan")
    if variances is not None:
        out["cdnv"] = _rescale(cdnv_sum / cdnv_count, e * (2.0 - cdnv_exponent)) if cdnv_count else float("nan")
    if gnc2:
        mean, std = log_dist2.result()  # of log(1 − c) = log ‖u_k − u_l‖² − log 2
        log_riesz = riesz.value - math.log(pairs) - (d - 2) / 2.0 * math.log(2.0)
        out.update(gnc2_log_mean=-0.5 * (mean + math.log(2.0)), gnc2_log_var=0.25 * std * std,
                   gnc2_riesz_mean=math.exp(log_riesz) if log_riesz < math.log(torch.finfo(torch.float64).max)
                   else math.inf)
    return out


def _rescale(value: float, exponent: float) -> float:
    """value·2^exponent for value ≥ 0 (or NaN), through log2 so that neither factor overflows on its own."""
    if exponent == 0 or not 0.0 < value < math.inf:
        return value
    return float(torch.exp2(torch.tensor(math.log2(value) + exponent, dtype=torch.float64)))


def duality_pass(weights: torch.Tensor, means: torch.Tensor, tile: int) -> float:
    """Self-duality ‖W M_cᵀ/‖W M_cᵀ‖_F − (I − 11ᵀ/K)/√(K−1)‖_F (Zhu et al. 2021, NC3): the closed form
    2 − 2(tr W M_cᵀ − (Σw)·(Σμ)/K)/(√(K−1)‖W M_cᵀ‖_F) when it is ≥ CLOSED_FORM_MIN, else summed over tiles.
    W and M_c are each brought to unit scale first (``unit_scale``): the error does not depend on their scales."""
    weights, means = unit_scale(weights), unit_scale(means)
    k = weights.shape[0]
    fro = gram_norm(weights, means)
    if fro == 0:
        return float("nan")
    inner = (float((weights * means).sum()) - float(weights.sum(0) @ means.sum(0)) / k) / math.sqrt(k - 1)
    closed = _closed_form_sq(inner, fro)
    if closed >= CLOSED_FORM_MIN:
        return math.sqrt(closed)
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

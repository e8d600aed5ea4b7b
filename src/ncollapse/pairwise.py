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

import numpy as np
import torch

__all__ = ["Moments", "gram_norm", "vector_pairs", "duality_pass", "binary_exponent", "unit_scale"]


def binary_exponent(*tensors: torch.Tensor) -> int:
    """e with 2^(e−1) ≤ max |x| < 2^e over the entries of ``tensors`` (``math.frexp``); 0 for all-zero or non-finite."""
    top = max((max(-float(lo), float(hi)) for lo, hi in (torch.aminmax(t) for t in tensors if t.numel())), default=0.0)
    return math.frexp(top)[1] if 0.0 < top < math.inf else 0


def _times_power_of_two(x: torch.Tensor, e: int) -> torch.Tensor:
    """x·2^e, exact (a change of exponent); in two factors where 2^e itself would leave the float range."""
    if not e:
        return x
    if abs(e) < 1000:
        return x * 2.0 ** e
    half = e // 2
    return x * 2.0 ** half * 2.0 ** (e - half)


def unit_scale(x: torch.Tensor) -> torch.Tensor:
    """x·2^−e, e = ``binary_exponent(x)``: the largest entry in [1/2, 1), exactly, so no square overflows or
    underflows and every scale-invariant quantity of x is unchanged (IEEE 754 scaling by a power of two)."""
    return _times_power_of_two(x, -binary_exponent(x))


class Moments:
    """Count, mean and centred sum of squares of a stream of values (Chan et al. 1979, eq. 2.1)."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, values: torch.Tensor, mean_b: float | None = None) -> None:
        """Fold in a block of values (``mean_b``: their mean, when the caller has it)."""
        n_b = values.numel()
        if n_b == 0:
            return
        if mean_b is None:
            mean_b = float(values.mean())  # two reads: torch.var_mean's Welford loop is several times slower
        self.merge(n_b, mean_b, float(torch.linalg.vector_norm(values - mean_b)) ** 2)

    def merge(self, n_b: int, mean_b: float, m2_b: float) -> None:
        """Fold in a block of n_b values with mean ``mean_b`` and centred sum of squares ``m2_b``."""
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

    def add_powers(self, log_base: np.ndarray, exponent: float) -> None:
        """Add log Σ base^exponent from log(base): the plain sum of exp(exponent·log base) when it neither overflows
        nor underflows, else max + log Σ exp(x − max) of x = exponent·log base (numpy, see ``_PairSums``)."""
        x = exponent * log_base
        with np.errstate(over="ignore"):
            plain = float(np.exp(x).sum())
        if _PLAIN_RANGE[0] < plain < _PLAIN_RANGE[1]:
            self.add_log(math.log(plain))
            return
        top = float(x.max())
        self.add_log(top + math.log(float(np.exp(x - top).sum())) if math.isfinite(top) else top)

    def add_log(self, block: float) -> None:
        """Add a block whose sum is exp(``block``)."""
        top = max(self.value, block)
        self.value = top + math.log(math.exp(self.value - top) + math.exp(block - top)) if top > -math.inf else top


_PLAIN_RANGE = (1e-280, math.inf)  # power sums in this range keep full relative precision


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
    sq = norms.square()
    acc = _PairSums(rows, norms, variances, cdnv_exponent, gnc2)
    etf_sum = orth_sum = 0.0
    fro = gram_norm(rows) if frobenius else 0.0
    etf_closed = orth_closed = -1.0  # a closed form ≥ CLOSED_FORM_MIN replaces the entry-by-entry sum
    if fro > 0:  # ⟨G, I − 11ᵀ/K⟩ = Σ‖v_k‖² − ‖Σ v_k‖²/K
        etf_closed = _closed_form_sq((float(sq.sum()) - float(rows.sum(0).square().sum()) / k) / math.sqrt(k - 1), fro)
    if orth:
        if offset is None:  # H = G
            offset = torch.zeros(d, dtype=rows.dtype)
            orth_fro = fro if frobenius else gram_norm(rows)
        else:
            orth_fro = gram_norm(rows + offset)
        along = rows @ offset + float(offset @ offset) / 2  # H_kl = G_kl + along_k + along_l
        if orth_fro > 0:  # ⟨H, I⟩ = Σ‖v_k + μ‖²
            orth_closed = _closed_form_sq(float((rows + offset).square().sum()) / math.sqrt(k), orth_fro)
    etf_tiles = frobenius and fro > 0 and etf_closed < CLOSED_FORM_MIN
    orth_tiles = orth and orth_fro > 0 and orth_closed < CLOSED_FORM_MIN
    for si, sj, diagonal in _blocks(k, tile):
        h = acc.unit[si] @ rows[sj].T  # g_kl/‖v_k‖, g = V Vᵀ
        if etf_tiles or orth_tiles:  # near an ETF / orthogonal frame: Frobenius errors entry by entry
            g = h * norms[si, None]
            weight = 1.0 if diagonal else 2.0  # an off-diagonal block stands for itself and its transpose
            if etf_tiles:
                etf_sum += weight * _frobenius_sq(g, fro, -1.0 / (k * math.sqrt(k - 1)),
                                                  (1.0 / math.sqrt(k - 1)) if diagonal else None)
            if orth_tiles:
                g += along[si, None]
                g += along[None, sj]
                orth_sum += weight * _frobenius_sq(g, orth_fro, 0.0, 1.0 / math.sqrt(k) if diagonal else None)
            del g
        acc.add_block(h, si.start, sj.start, diagonal)
        del h
    out = acc.result()
    if bool((norms == 0).any()):  # an angle to the zero vector is undefined
        out.update(cos_mean=float("nan"), cos_std=float("nan"), max_angle=float("nan"))
    if frobenius:
        out["etf_error"] = math.sqrt(max(etf_closed, 0.0) if etf_closed >= CLOSED_FORM_MIN else etf_sum) \
            if fro > 0 else float("nan")
    if orth:
        out["orth_error"] = math.sqrt(orth_closed if orth_closed >= CLOSED_FORM_MIN else orth_sum) \
            if orth_fro > 0 else float("nan")
    if variances is not None:
        out["cdnv"] = _rescale(out["cdnv"], e * (2.0 - cdnv_exponent))
    return out


CHUNK = 32_000  # pairs per elementwise step; see _PairSums


class _PairSums:
    """Running sums over the pairs k < l of one ``vector_pairs`` call, fed one block of h_kl = g_kl/‖v_k‖ at a time.

    Each block is cut into chunks of at most ``CHUNK`` pairs, about a dozen elementwise steps each. A chunk is
    below torch's parallel grain (32,768 elements), so every step runs on one thread with no hand-off between
    threads (on a busy machine each hand-off waits for a descheduled thread), and its 256 KB float64 buffers
    stay in the core's L2 cache from one step to the next instead of streaming the K² values through memory once
    per step. With t = c + 1/(K−1) = shift + h_kl/‖v_l‖: Σ|t| (max-angle) and the moments of t (mean, then the
    norm of t − mean); 1 − c = 1 + shift − t, the moments of its log and Σ exp(−(d−2)/2 · log(1 − c)) (GNC2,
    log and exp in numpy);
    ‖v_k − v_l‖² = ‖v_k‖² + ‖v_l‖² − 2‖v_k‖h_kl, its power −p/2 = R_kl and the CDNV sum
    Σ (V_k + V_l) R_kl = Σ_k V_k Σ_l R_kl + Σ_k Σ_l R_kl V_l (a row sum and a matrix-vector product).
    """

    def __init__(self, rows: torch.Tensor, norms: torch.Tensor, variances, cdnv_exponent: float, gnc2: bool):
        k, d = rows.shape
        self.norms, self.sq = norms, norms.square()
        self.minus_two_norms = -2.0 * norms
        self.inv = torch.where(norms > 0, 1.0 / norms, torch.zeros_like(norms))  # zero rows: c = 0, NaN'd later
        self.unit = rows * self.inv[:, None]
        self.shift = 1.0 / (k - 1)  # c + 1/(K−1) is what max-angle measures, and centres the cosines near an ETF
        self.shift_t = torch.tensor(self.shift, dtype=rows.dtype)
        self.variances, self.power = variances, -cdnv_exponent / 2.0
        self.nan_variances = variances is not None and bool(torch.isnan(variances).any())
        self.gnc2, self.riesz_exponent = gnc2, -(d - 2) / 2.0
        self.cos, self.log_dist2, self.riesz = Moments(), Moments(), _LogSumExp()
        self.max_angle = self.cdnv_sum = 0.0
        self.cdnv_count = 0
        self.pairs = k * (k - 1) // 2
        self._triu: dict = {}

    def add_block(self, h: torch.Tensor, i0: int, j0: int, diagonal: bool) -> None:
        """The pairs of block h (rows from class i0, columns from j0); a diagonal block (i0 = j0) gives only
        its strict upper triangle: per chunk of rows a small square (gathered) and the rectangle right of it."""
        rows_per = max(1, CHUNK // h.shape[1])
        for a in range(0, h.shape[0], rows_per):
            b = min(a + rows_per, h.shape[0])
            if not diagonal:
                self._add(h[a:b], slice(i0 + a, i0 + b), slice(j0, j0 + h.shape[1]), False)
                continue
            n = b - a
            if n > 1:
                if n not in self._triu:
                    self._triu[n] = torch.triu_indices(n, n, offset=1)
                ii, jj = self._triu[n]
                self._add(h[a:b, a:b][ii, jj], ii + (i0 + a), jj + (j0 + a), True)
            if b < h.shape[1]:
                self._add(h[a:b, b:], slice(i0 + a, i0 + b), slice(j0 + b, j0 + h.shape[1]), False)

    def _add(self, h: torch.Tensor, rows, cols, flat: bool) -> None:
        """One chunk: h 2-D over rows × cols (slices), or 1-D over the pairs (rows[m], cols[m]) when ``flat``."""
        if flat:
            left, right = (lambda v: v[rows]), (lambda v: v[cols])
        else:
            left, right = (lambda v: v[rows, None]), (lambda v: v[None, cols])
        t = torch.addcmul(self.shift_t, h, right(self.inv))  # c + 1/(K−1)
        self.max_angle += float(torch.linalg.vector_norm(t, ord=1))
        self.cos.add(t)
        if self.variances is not None:
            self._add_cdnv(h, rows, cols, flat, left, right)
        if self.gnc2:
            self._add_gnc2(t)

    def _add_cdnv(self, h, rows, cols, flat, left, right) -> None:
        dist2 = torch.addcmul(right(self.sq), h, left(self.minus_two_norms)).add_(left(self.sq)).clamp_(min=0.0)
        ratio = dist2.reciprocal_() if self.power == -1.0 else dist2.pow_(self.power)  # ‖v_k − v_l‖^−p
        if self.nan_variances:
            ratio.mul_(left(self.variances) + right(self.variances))
            keep = ~torch.isnan(ratio)
            self.cdnv_sum += 0.5 * float(ratio[keep].sum())
            self.cdnv_count += int(keep.sum())
        elif flat:
            self.cdnv_sum += 0.5 * float(torch.dot(left(self.variances) + right(self.variances), ratio))
            self.cdnv_count += ratio.numel()
        else:  # Σ_k V_k Σ_l R_kl + Σ_k Σ_l R_kl V_l
            row_part = self.variances[rows] @ ratio.sum(1)
            self.cdnv_sum += 0.5 * float(row_part + torch.mv(ratio, self.variances[cols]).sum())
            self.cdnv_count += ratio.numel()

    def _add_gnc2(self, t: torch.Tensor) -> None:
        """‖u_k − u_l‖² = 2(1 − c), 1 − c = 1 + 1/(K−1) − t: the moments of log(1 − c) and Σ (1 − c)^−(d−2)/2.
        log and exp run in numpy: torch's run in parallel from 2,048 elements on, a thread hand-off per call."""
        with np.errstate(divide="ignore", invalid="ignore"):
            log_base = np.log(torch.rsub(t, 1.0 + self.shift).numpy())
            mean = float(log_base.mean())
            if math.isnan(mean):  # rounding put 1 − c of (near-)equal vectors below 0: clamp it to 0
                log_base = np.log(torch.rsub(t, 1.0 + self.shift).clamp_(min=0.0).numpy())
                mean = float(log_base.mean())
        self.log_dist2.add(torch.from_numpy(log_base), mean)
        if self.riesz_exponent:
            self.riesz.add_powers(log_base, self.riesz_exponent)
        else:  # d = 2: every kernel value is 1
            self.riesz.add_log(math.log(log_base.size))

    def result(self) -> dict:
        cos_mean, cos_std = self.cos.result()
        out = {"cos_mean": cos_mean - self.shift, "cos_std": cos_std, "max_angle": self.max_angle / self.pairs}
        if self.variances is not None:
            out["cdnv"] = self.cdnv_sum / self.cdnv_count if self.cdnv_count else float("nan")
        if self.gnc2:
            d = -2.0 * self.riesz_exponent + 2
            mean, std = self.log_dist2.result()  # of log(1 − c) = log ‖u_k − u_l‖² − log 2
            log_riesz = self.riesz.value - math.log(self.pairs) - (d - 2) / 2.0 * math.log(2.0)
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

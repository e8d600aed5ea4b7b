"""Neural-collapse metrics as pure functions of finalized class statistics (and a classifier W, b).

Conventions (design.md §3; metrics.md explains where public codebases differ):

* μ_G: ``global_mean="uniform"`` mean of class means (Papyan et al. 2020) or ``"weighted"`` sample mean.
* Σ_W = (1/(N − ddof·K)) Σ_k Σ_i (h − μ_k)(h − μ_k)ᵀ;  Σ_B = (1/K) Σ_k (μ_k − μ_G)(μ_k − μ_G)ᵀ.
* NC1 = tr(Σ_W Σ_B^†)/K (``scale="papyan"`` drops the /K, Papyan et al. 2020 Fig. 6). Σ_B^† comes from a
  float64 eigendecomposition of the K × K Gram M_c M_cᵀ keeping eigenvalues > rtol·λ_max; the kept rank
  and the spectrum are reported. ``nc1_quotient`` = tr Σ_W / tr Σ_B (Tirer et al. 2023).
* CDNV (Galanti et al. 2021, Def. 1): mean over k < l of (V_k + V_l) / (2‖μ_k − μ_l‖²), V_k = Σ_i‖h − μ_k‖²/(n_k − ddof).
* NC2 (Papyan et al. 2020): equinorm = std(ddof=1)/mean of ‖μ_k − μ_G‖ (and ‖w_k‖); equiangularity = std
  (population) of off-diagonal cosines; max-angle = mean over k ≠ l of |cos + 1/(K−1)|; etf_error =
  ‖G/‖G‖_F − (I − 11ᵀ/K)/√(K−1)‖_F (Zhu et al. 2021, eq. NC2).
* NC3: ``self_duality`` = etf_error of W M_cᵀ (Zhu et al. 2021, eq. NC3); ``duality_papyan`` =
  ‖W/‖W‖_F − M_c/‖M_c‖_F‖_F² (Papyan et al. 2020).
* NC4 (Papyan et al. 2020): ``ncc_mismatch`` = share of samples where the nearest class mean differs from
  argmax(W h + b); needs the second pass ``stats.NCCCounts``.
* Minority collapse (Fang et al. 2021, §4): mean/std of pairwise cosines among minority classifiers and
  among minority centred means; head/medium/tail groups by class size (head > 100, tail < 20).

Classes without samples are left out (listed in ``absent_classes``, with a warning).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from .stats import ClassStats, FinalStats, NCCCounts
from .validation import check_classifier, check_counts, check_features_labels, check_scalar

__all__ = ["measure", "measure_features", "measure_ncmc", "etf_error", "class_groups"]

GROUPS = ("head", "medium", "tail")


def etf_error(gram: torch.Tensor) -> float:
    """‖G/‖G‖_F − (I − 11ᵀ/K)/√(K−1)‖_F (Zhu et al. 2021, NC2/NC3): 0 exactly at a simplex ETF."""
    k = gram.shape[0]
    target = (torch.eye(k, dtype=gram.dtype) - 1.0 / k) / math.sqrt(k - 1)
    norm = torch.linalg.matrix_norm(gram)
    if norm == 0:
        return float("nan")
    return float(torch.linalg.matrix_norm(gram / norm - target))


def _cov(values: torch.Tensor) -> float:
    """Coefficient of variation std(ddof=1)/mean (Papyan et al. 2020, equinorm)."""
    mean = values.mean()
    return float(values.std(correction=1) / mean) if mean > 0 else float("nan")


def _angle_stats(vectors: torch.Tensor) -> tuple[float, float, float, float]:
    """(mean, std, max-angle, pairs) of off-diagonal cosines among the rows of ``vectors``."""
    k = vectors.shape[0]
    norms = vectors.norm(dim=1)
    if bool((norms == 0).any()):  # an angle to the zero vector is undefined
        nan = float("nan")
        return nan, nan, nan, torch.full((k * (k - 1) // 2,), nan, dtype=vectors.dtype)
    unit = vectors / norms[:, None]
    cos = unit @ unit.T
    iu = torch.triu_indices(k, k, offset=1)
    pairs = cos[iu[0], iu[1]]
    return (float(pairs.mean()), float(pairs.std(correction=0)),
            float((pairs + 1.0 / (k - 1)).abs().mean()), pairs)


def class_groups(counts, thresholds=(100, 20)) -> dict[str, list[int]]:
    """Split classes by size: head n_k > thresholds[0], tail n_k < thresholds[1], medium otherwise."""
    n = check_counts(counts, "group_counts", allow_zero=True)
    head_min, tail_max = thresholds
    groups = {"head": [], "medium": [], "tail": []}
    for k, nk in enumerate(n):
        groups["head" if nk > head_min else "tail" if nk < tail_max else "medium"].append(k)
    return groups


def _finalize(stats) -> FinalStats:
    if isinstance(stats, ClassStats):
        return stats.finalize()
    if isinstance(stats, FinalStats):
        return stats
    raise TypeError(f"stats must be a ClassStats or FinalStats; got {type(stats).__name__}")


def measure(stats, W=None, b=None, global_mean: str = "uniform", ddof: int = 0, rtol: float = 1e-10,
            scale: str = "per_class", ncc: NCCCounts | None = None, group_counts=None,
            group_thresholds=(100, 20), minority=None) -> dict:
    """Compute the NC metrics of design.md §3 from class statistics (and optionally W, b and an NCC pass).

    Returns a dict of Python floats/ints and numpy arrays; key names are a contract (see README).
    ``group_counts`` (e.g. the training counts when ``stats`` hold test features) decides head/medium/tail
    and the minority classes; ``minority`` overrides the minority classes (default: the tail group).
    """
    s = _finalize(stats)
    if global_mean not in ("uniform", "weighted"):
        raise ValueError(f"global_mean == {global_mean!r}, must be 'uniform' or 'weighted'")
    if scale not in ("per_class", "papyan"):
        raise ValueError(f"scale == {scale!r}, must be 'per_class' or 'papyan'")
    if ddof not in (0, 1):
        raise ValueError(f"ddof == {ddof!r}, must be 0 or 1")
    check_scalar(rtol, "rtol", float, low=0.0, high=1.0)

    present = s.counts > 0
    k_all = s.num_classes
    absent = torch.nonzero(~present).flatten().tolist()
    if absent:
        warnings.warn(f"classes {absent} have no samples; measuring over the {int(present.sum())} present classes",
                      stacklevel=2)
    k = int(present.sum())
    if k < 2:
        raise ValueError(f"NC metrics need at least two classes with samples; got {k}")
    n = s.counts[present].to(torch.float64)
    total = float(n.sum())
    means = s.means[present]
    mu_g = means.mean(0) if global_mean == "uniform" else (n[:, None] * means).sum(0) / total
    centred = means - mu_g
    denom = total - ddof * k
    if denom <= 0:
        raise ValueError(f"ddof={ddof} needs more than {k} samples for {k} classes; got {int(total)}")
    sigma_w = s.scatter / denom

    gram = centred @ centred.T
    eigvals, eigvecs = torch.linalg.eigh(gram)
    order = torch.argsort(eigvals, descending=True)
    eigvals, eigvecs = eigvals[order].clamp(min=0.0), eigvecs[:, order]
    lam_max = float(eigvals[0])
    keep = eigvals > rtol * lam_max if lam_max > 0 else torch.zeros_like(eigvals, dtype=torch.bool)
    factor = float(k) if scale == "papyan" else 1.0

    def trace_with_pinv(scatter: torch.Tensor) -> float:
        """tr(S Σ_B^†)/K = Σ_i u_iᵀ M_c S M_cᵀ u_i / λ_i² over kept eigenpairs (λ_i of M_c M_cᵀ)."""
        if not bool(keep.any()):
            return float("nan")
        u = eigvecs[:, keep]
        projected = (u.T @ centred) @ scatter @ (centred.T @ u)
        return factor * float((torch.diagonal(projected) / eigvals[keep] ** 2).sum())

    tr_b = float(eigvals.sum()) / k
    out: dict = {
        "num_classes": k_all,
        "num_present_classes": k,
        "num_samples": int(total),
        "dim": s.dim,
        "global_mean": global_mean,
        "ddof": ddof,
        "scale": scale,
        "absent_classes": absent,
        "class_counts": s.counts.numpy().copy(),
        "nc1": trace_with_pinv(sigma_w),
        "nc1_quotient": float(torch.trace(sigma_w)) / tr_b if tr_b > 0 else float("nan"),
        "rank": int(keep.sum()),
        "sigma_b_spectrum": (eigvals / k).numpy(),
        "trace_sigma_w": float(torch.trace(sigma_w)),
        "trace_sigma_b": tr_b,
    }
    if lam_max == 0:
        warnings.warn("all class means coincide: between-class scatter is zero, NC1 is undefined (NaN)", stacklevel=2)

    variances = s.sq_dev[present] / (n - ddof)
    if ddof and bool((n <= ddof).any()):
        warnings.warn("classes with a single sample have no ddof=1 variance; CDNV leaves their pairs out", stacklevel=2)
        variances = torch.where(n > ddof, variances, torch.full_like(variances, float("nan")))
    sq_norms = torch.diagonal(gram)
    dist2 = sq_norms[:, None] + sq_norms[None, :] - 2.0 * gram

    def cdnv(idx: torch.Tensor) -> float:
        if len(idx) < 2:
            return float("nan")
        iu = torch.triu_indices(len(idx), len(idx), offset=1)
        a, c = idx[iu[0]], idx[iu[1]]
        vals = (variances[a] + variances[c]) / (2.0 * dist2[a, c])
        vals = vals[~torch.isnan(vals)]
        return float(vals.mean()) if len(vals) else float("nan")

    out["cdnv"] = cdnv(torch.arange(k))
    out["equinorm_means"] = _cov(centred.norm(dim=1))
    _, eq, max_angle, _ = _angle_stats(centred)
    out["equiangularity_means"], out["max_angle_means"] = eq, max_angle
    out["etf_error_means"] = etf_error(gram)

    if W is not None:
        W, b = check_classifier(W, b, num_classes=k_all, dim=s.dim)
        w = W[present]
        out["equinorm_weights"] = _cov(w.norm(dim=1))
        _, eq, max_angle, _ = _angle_stats(w)
        out["equiangularity_weights"], out["max_angle_weights"] = eq, max_angle
        out["etf_error_weights"] = etf_error(w @ w.T)
        out["self_duality"] = etf_error(w @ centred.T)
        out["duality_papyan"] = float(
            (w / torch.linalg.matrix_norm(w) - centred / torch.linalg.matrix_norm(centred)).square().sum())

    if ncc is not None:
        hits = ncc.finalize()
        seen = int(hits["counts"].sum())
        out["ncc_accuracy"] = int(hits["ncc_correct"].sum()) / seen
        if ncc.W is not None:
            out["ncc_agreement"] = int(hits["agree"].sum()) / seen
            out["ncc_mismatch"] = 1.0 - out["ncc_agreement"]
            out["classifier_accuracy"] = int(hits["net_correct"].sum()) / seen

    ref = s.counts if group_counts is None else torch.as_tensor(check_counts(group_counts, "group_counts", True))
    if ref.shape[0] != k_all:
        raise ValueError(f"group_counts has {ref.shape[0]} entries; expected {k_all} (one per class)")
    if int(ref[present].max()) != int(ref[present].min()):
        _group_metrics(out, s, present, ref, group_thresholds, cdnv, trace_with_pinv)
        _minority_collapse(out, present, ref, group_thresholds, minority, centred, W)
    return out


def _group_metrics(out, s, present, ref, thresholds, cdnv, trace_with_pinv) -> None:
    """Per-group cdnv, nc1_quotient and (with per-class scatter) nc1 over the classes of each group."""
    position = torch.cumsum(present.to(torch.int64), 0) - 1  # index among present classes
    out["group_classes"] = {}
    for name, classes in class_groups(ref.tolist(), thresholds).items():
        classes = [c for c in classes if bool(present[c])]
        out["group_classes"][name] = classes
        if not classes:
            continue
        idx = position[torch.tensor(classes)]
        n_g = float(s.counts[classes].sum())
        out[f"cdnv_{name}"] = cdnv(idx)
        tr_b = out["trace_sigma_b"]
        out[f"nc1_quotient_{name}"] = float(s.sq_dev[classes].sum()) / n_g / tr_b if tr_b > 0 else float("nan")
        if s.class_scatter is not None:
            out[f"nc1_{name}"] = trace_with_pinv(s.class_scatter[classes].sum(0) / n_g)


def _minority_collapse(out, present, ref, thresholds, minority, centred, W) -> None:
    """Fang et al. 2021, §4: cosines among minority classifiers / class means; collapse shows as cos → 1."""
    if minority is None:
        minority = class_groups(ref.tolist(), thresholds)["tail"]
    minority = [int(c) for c in minority if bool(present[int(c)])]
    out["minority_classes"] = minority
    if len(minority) < 2:
        return
    position = torch.cumsum(present.to(torch.int64), 0) - 1
    mean, std, _, _ = _angle_stats(centred[position[torch.tensor(minority)]])
    out["minority_cos_means_mean"], out["minority_cos_means_std"] = mean, std
    if W is not None:
        mean, std, _, _ = _angle_stats(W[torch.tensor(minority)])
        out["minority_cos_weights_mean"], out["minority_cos_weights_std"] = mean, std


def measure_features(features, labels, W=None, b=None, num_classes: int | None = None, **kwargs) -> dict:
    """``measure`` on in-memory features: one pass for the statistics, one for NC4 (NCC)."""
    x, y = check_features_labels(features, labels, num_classes)
    k = int(y.max()) + 1 if num_classes is None else num_classes
    if W is not None:
        k = max(k, int(torch.as_tensor(np.asarray(W) if not isinstance(W, torch.Tensor) else W).shape[0]))
    stats = ClassStats.from_features(x, y, num_classes=k)
    ncc = NCCCounts.from_stats(stats, W=W, b=b)
    for start in range(0, x.shape[0], 8192):
        ncc.update(x[start:start + 8192], y[start:start + 8192])
    return measure(stats, W=W, b=b, ncc=ncc, **kwargs)


def measure_ncmc(stats) -> dict:
    """NCMC metrics (Yan et al. 2024, §4.3): mean and std of ‖ĥ − w̄^(k)/‖w̄^(k)‖‖² and mean of 1 − ĥ·ŵ_k."""
    from .stats import NCMCStats

    if not isinstance(stats, NCMCStats):
        raise TypeError(f"measure_ncmc needs an NCMCStats; got {type(stats).__name__}")
    final = stats.finalize()
    return {"ncmc_collapse_mean": final["mean"], "ncmc_collapse_std": final["std"],
            "ncmc_variability": final["variability"]}

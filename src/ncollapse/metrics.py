"""Neural-collapse metrics as pure functions of finalized class statistics (and a classifier W, b).

Conventions (design.md §3; metrics.md explains where public codebases differ):

* μ_G: ``global_mean="uniform"`` mean of class means (Papyan et al. 2020) or ``"weighted"`` sample mean.
* Σ_W = (1/(N − ddof·K)) Σ_k Σ_i (h − μ_k)(h − μ_k)ᵀ;  Σ_B = (1/K) Σ_k (μ_k − μ_G)(μ_k − μ_G)ᵀ.
* NC1 = tr(Σ_W Σ_B^†)/K, the quantity Papyan et al. 2020 plot in Fig. 6 (Tr(Σ_W Σ_B^†/C));
  ``scale="notebook"`` drops the /K as the reference notebook (neuralcollapse.ipynb, Han/Papyan/Donoho) does
  (``"papyan"``: its deprecated name). Σ_B^† comes from a float64 eigendecomposition of the min(K, d)-sized Gram
  (or the SVD of M_c when K ≤ d and that Gram cannot resolve the smallest eigenvalues, ``_spectrum``), keeping
  at most min(K − 1, d) eigenvalues, those above the rounding noise of the class means
  (``rank.eigenvalue_cutoff``: from the features' and the state's dtype, n_k and d), or above rtol·λ_max when
  ``rtol`` is given; the kept rank, the cut-off and the spectrum are reported, and a rank below min(K − 1, d) is
  warned about with the closest class pairs. ``nc1_quotient`` = tr Σ_W / tr Σ_B (Tirer et al. 2023).
* CDNV (Galanti et al. 2021, Def. 1): mean over k < l of (V_k + V_l) / (2‖μ_k − μ_l‖^p), p = ``cdnv_exponent``
  (default 2), V_k = Σ_i‖h − μ_k‖²/(n_k − ddof).
* NC2 (Papyan et al. 2020): equinorm = std(ddof=1, sample)/mean of ‖μ_k − μ_G‖ (and ‖w_k‖); equiangularity =
  std (population, ddof=0) of off-diagonal cosines; max-angle = mean over k ≠ l of |cos + 1/(K−1)|; etf_error =
  ‖G/‖G‖_F − (I − 11ᵀ/K)/√(K−1)‖_F (Zhu et al. 2021, eq. NC2); orth_error = ‖G/‖G‖_F − I/√K‖_F of the
  uncentred means M Mᵀ (and W Wᵀ), the orthogonal frame of bias-free imbalanced MSE / NCMC's classifier.
* GNC2 (Liu et al. 2023, hyperspherical uniformity): mean and population variance over k < l of
  log(1/‖u_k − u_l‖), u_k = (μ_k − μ_G)/‖μ_k − μ_G‖, and the mean Riesz kernel ‖u_k − u_l‖^−(d−2).
* NC3: ``self_duality`` = etf_error of W M_cᵀ (Zhu et al. 2021, eq. NC3); ``duality_papyan`` =
  ‖W/‖W‖_F − M_c/‖M_c‖_F‖_F² (Papyan et al. 2020); ``duality_cos_mean`` = mean of cos(w_k, μ_k − μ_G)
  (per class in ``duality_cos_per_class``); ``unc3`` = std(ddof=1, sample)/mean of ⟨w_k, μ_k − μ_G⟩ (Wu & Papyan
  2024, uniform duality).
* NC4 (Papyan et al. 2020): ``ncc_mismatch`` = share of samples where the nearest class mean differs from
  argmax(W h + b); needs the second pass ``stats.NCCCounts``.
* NC5 (Ammar et al. 2024, eq. 5): ``nc5_ood`` = mean over k of |cos(μ_k, μ_ood)| for OOD features, uncentred
  (``ood_centering="none"``); ``"global_mean"`` centres both at μ_G.
* Minority collapse (Fang et al. 2021, §4): mean/std (population) of pairwise cosines among minority classifiers
  and among minority centred means; head/medium/tail groups by class size (head > 100, tail < 20).

Every K × K quantity is computed in tiles (``pairwise.py``) or through a d × d closed form, so memory is
O(K·d + d² + tile²) and language-model vocabularies (K ≈ 30k) fit.
Classes without samples are left out (listed in ``absent_classes``, with a warning), and so are classes with
fewer than ``min_count`` samples (counted in ``num_classes_below_min_count``).
"""

from __future__ import annotations

import math
import sys
import warnings
from numbers import Integral, Real

import torch
from tqdm import tqdm

from .pairwise import duality_pass, unit_scale, vector_pairs
from .rank import closest_pairs, factorisation_noise, means_noise
from .serialize import brief_list
from .stats import ClassStats, FinalStats, NCCCounts, NCMCStats
from .validation import (check_classifier, check_counts, check_features, check_features_labels, check_minority,
                         check_scalar, check_size, check_thresholds, classifier_fingerprint)

__all__ = ["measure", "measure_features", "measure_stream", "stream_stats", "measure_ncmc", "etf_error", "class_groups"]

GROUPS = ("head", "medium", "tail")
SCALES = ("per_class", "notebook")
OOD_CENTERINGS = ("none", "global_mean")
GRAM_MARGIN = 1e8  #: the K × K Gram is used when its smallest needed eigenvalue is this far above its rounding


def etf_error(gram: torch.Tensor) -> float:
    """‖G/‖G‖_F − (I − 11ᵀ/K)/√(K−1)‖_F (Zhu et al. 2021, NC2/NC3): 0 exactly at a simplex ETF."""
    k = gram.shape[0]
    target = (torch.eye(k, dtype=gram.dtype) - 1.0 / k) / math.sqrt(k - 1)
    norm = torch.linalg.matrix_norm(gram)
    if norm == 0:
        return float("nan")
    return float(torch.linalg.matrix_norm(gram / norm - target))


def _equinorm(rows: torch.Tensor) -> float:
    """Coefficient of variation std(ddof=1)/mean of the row norms (Papyan et al. 2020, equinorm), from the rows
    at unit scale (``pairwise.unit_scale``) so that no norm overflows or underflows."""
    return _cov(unit_scale(rows).norm(dim=1))


def _cov(values: torch.Tensor) -> float:
    """Coefficient of variation std(ddof=1)/mean (Papyan et al. 2020, equinorm)."""
    mean = values.mean()
    return float(values.std(correction=1) / mean) if mean > 0 and len(values) > 1 else float("nan")


def class_groups(counts, thresholds=(100, 20)) -> dict[str, list[int]]:
    """Split classes by size: head n_k > thresholds[0], tail n_k < thresholds[1], medium otherwise (thresholds
    finite, thresholds[0] ≥ thresholds[1])."""
    n = check_counts(counts, "group_counts", allow_zero=True)
    head_min, tail_max = check_thresholds(thresholds)
    groups = {g: [] for g in GROUPS}
    for k, nk in enumerate(n):
        groups["head" if nk > head_min else "tail" if nk < tail_max else "medium"].append(k)
    return groups


def _finalize(stats) -> FinalStats:
    if isinstance(stats, ClassStats):
        return stats.finalize()
    if isinstance(stats, FinalStats):
        return stats
    raise TypeError(f"stats must be a ClassStats or FinalStats; got {type(stats).__name__}")


def _power_of_two(value: float) -> float:
    """The power of two nearest above ``value`` (1 for 0): dividing by it is exact."""
    return math.ldexp(1.0, math.frexp(value)[1]) if value > 0 else 1.0


def _descending(eigh) -> tuple[torch.Tensor, torch.Tensor]:
    eigvals, vectors = eigh
    order = torch.argsort(eigvals, descending=True)
    return eigvals[order].clamp(min=0.0), vectors[:, order]


def _kept(eigvals: torch.Tensor, floor: float, bound: int) -> torch.Tensor:
    """Eigenvalues above ``floor``, at most the first ``bound`` = min(K − 1, d) (the centred means' rows sum to 0
    under either global mean, so rank ≤ K − 1)."""
    keep = eigvals > floor if float(eigvals[0]) > 0 else torch.zeros_like(eigvals, dtype=torch.bool)
    keep[bound:] = False
    return keep


def _spectrum(centred: torch.Tensor, cutoff):
    """Eigenvalues λ_i (descending, ≥ 0) of M_c M_cᵀ, which shares its nonzero spectrum with M_cᵀ M_c, the unit
    directions v_i in feature space of the kept ones (above ``cutoff(λ_max, method)``), and the cut-off.

    d < K: the eigendecomposition of the d × d Gram M_cᵀ M_c. K ≤ d: that of the K × K Gram M_c M_cᵀ, v_i =
    M_cᵀ u_i/√λ_i, when each of the top min(K − 1, d) eigenvalues is over ``GRAM_MARGIN`` times the Gram's rounding
    (``rank.factorisation_noise``: they keep about 8 digits); otherwise the SVD of M_c (λ_i = s_i², v_i its right
    singular vectors), which does not square the small singular values of nearly coinciding means."""
    k, d = centred.shape
    bound = min(k - 1, d)
    if k > d:
        eigvals, vectors = _descending(torch.linalg.eigh(centred.T @ centred))
        floor = cutoff(float(eigvals[0]), "gram")
        keep = _kept(eigvals, floor, bound)
        return eigvals, vectors[:, keep], keep, floor
    eigvals, vectors = _descending(torch.linalg.eigh(centred @ centred.T))
    if float(eigvals[bound - 1]) > GRAM_MARGIN * factorisation_noise(centred, "gram"):
        floor = cutoff(float(eigvals[0]), "gram")
        keep = _kept(eigvals, floor, bound)
        return eigvals, centred.T @ vectors[:, keep] / eigvals[keep].sqrt(), keep, floor
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    eigvals = singular.square()
    floor = cutoff(float(eigvals[0]), "svd")
    keep = _kept(eigvals, floor, bound)
    return eigvals, vh.T[:, keep], keep, floor


def _rank_deficit(out: dict, measured: torch.Tensor, centred: torch.Tensor, unit: float, tile_size: int) -> None:
    """``sigma_b_rank_deficit`` = min(K − 1, d) − rank; when positive, a warning and the closest class pairs by
    mean distance (``sigma_b_closest_pairs``, ``sigma_b_closest_distances``: as many as the deficit, at most 10),
    from the centred means divided by ``unit``."""
    k, d = centred.shape
    deficit = min(k - 1, d) - out["rank"]
    out["sigma_b_rank_deficit"] = deficit
    if deficit <= 0:
        return
    pairs, dists = closest_pairs(centred, min(deficit, 10), tile_size)
    index = torch.nonzero(measured).flatten()
    pairs = [[int(index[a]), int(index[b])] for a, b in pairs]
    out["sigma_b_closest_pairs"], out["sigma_b_closest_distances"] = pairs, [dist * unit for dist in dists]
    if out["rank"] == 0:
        return  # measure already warns that every class mean coincides
    shown = ", ".join(f"{a}–{b} ({dist:.3g})" for (a, b), dist in zip(pairs, out["sigma_b_closest_distances"]))
    warnings.warn(f"Σ_B has rank {out['rank']}, {deficit} below min(K − 1, d) = {min(k - 1, d)} (eigenvalues up to "
                  f"the cut-off {out['sigma_b_cutoff']:.3g} are dropped): class means coincide or span fewer directions; "
                  f"closest pairs by mean distance: {shown}; NC1 inverts only the kept directions", stacklevel=3)


def _ood_mean(ood, dim: int) -> torch.Tensor:
    """μ_ood in float64: the sample mean of OOD features (n, d) or of the samples behind OOD statistics."""
    if isinstance(ood, (ClassStats, FinalStats)):
        f = _finalize(ood)
        mean = (f.counts.to(torch.float64)[:, None] * f.means).sum(0) / f.num_samples
    else:
        mean = check_features(ood, "ood").to("cpu", torch.float64).mean(0)
    if mean.shape[0] != dim:
        raise ValueError(f"ood features have dim {mean.shape[0]}; the class statistics have dim {dim}")
    return mean


def measure(stats, W=None, b=None, global_mean: str = "uniform", ddof: int = 0, rtol: float | None = None,
            scale: str = "per_class", ncc: NCCCounts | None = None, group_counts=None,
            group_thresholds=(100, 20), minority=None, min_count: int = 1, ood=None,
            cdnv_exponent: float = 2.0, tile_size: int = 2048, ood_centering: str = "none") -> dict:
    """Compute the NC metrics of design.md §3 from class statistics (and optionally W, b and an NCC pass).

    Returns a dict of Python floats/ints and numpy arrays; key names are a contract (see README and
    docs/measurement.md). ``group_counts`` (e.g. the training counts when ``stats`` hold test features)
    decides head/medium/tail and the minority classes; ``minority`` overrides the minority classes (default:
    the tail group). ``min_count`` leaves out classes with fewer samples (reported in
    ``num_classes_below_min_count``); ``ood`` (OOD features (n, d) or their ``ClassStats``) adds ``nc5_ood``,
    with ``ood_centering="none"`` (Ammar et al. 2024, eq. 5) or ``"global_mean"``; ``cdnv_exponent`` is p in
    ‖μ_k − μ_l‖^p of the CDNV; ``tile_size`` bounds the pairwise blocks (memory O(K·d + d² + tile²); the result
    does not depend on it). ``rtol`` (default: the rank rule of ``rank.eigenvalue_cutoff``) keeps the Σ_B
    eigenvalues above rtol·λ_max instead. ``scale="notebook"`` drops the /K of NC1 (``"papyan"``: deprecated name).
    """
    s = _finalize(stats)
    if global_mean not in ("uniform", "weighted"):
        raise ValueError(f"global_mean == {global_mean!r}, must be 'uniform' or 'weighted'")
    scale = _scale_name(scale)
    if ood_centering not in OOD_CENTERINGS:
        raise ValueError(f"ood_centering == {ood_centering!r}, must be one of {OOD_CENTERINGS}")
    ddof = int(check_scalar(ddof, "ddof", Integral, low=0, high=1))
    if rtol is not None:
        check_scalar(rtol, "rtol", Real, low=0.0, high=1.0)
    min_count, tile_size = check_size(min_count, "min_count"), check_size(tile_size, "tile_size")
    check_scalar(cdnv_exponent, "cdnv_exponent", Real, low=0.0, low_open=True, finite=True)
    if ncc is not None and not isinstance(ncc, NCCCounts):
        raise TypeError(f"ncc must be an NCCCounts (the second pass); got {type(ncc).__name__}")
    check_thresholds(group_thresholds)
    W, b = check_classifier(W, b, num_classes=s.num_classes, dim=s.dim)
    if minority is not None:
        minority = check_minority(minority, s.num_classes)

    present = s.counts > 0
    measured = s.counts >= min_count
    k_all = s.num_classes
    absent = torch.nonzero(~present).flatten().tolist()
    below = present & ~measured
    k = int(measured.sum())
    if absent:
        warnings.warn(f"classes {brief_list(absent)} have no samples; measuring over the {int(present.sum())} "
                      "present classes", stacklevel=2)
    if bool(below.any()):
        warnings.warn(f"{int(below.sum())} classes have fewer than min_count={min_count} samples; "
                      f"measuring over the other {k}", stacklevel=2)
    if k < 2:
        raise ValueError(f"NC metrics need at least two classes with samples; got {k}"
                         + (f" with at least min_count={min_count}" if min_count > 1 else ""))
    n = s.counts[measured].to(torch.float64)
    total = float(n.sum())
    means = s.means[measured]
    mu_g = means.mean(0) if global_mean == "uniform" else (n[:, None] * means).sum(0) / total
    centred = means - mu_g
    scatter, n_w, k_w = _within_scatter(s, measured, below)
    denom = n_w - ddof * k_w
    if denom <= 0:
        raise ValueError(f"ddof={ddof} needs more than {k_w} samples for {k_w} classes; got {int(n_w)}")
    sigma_w = scatter / denom

    # the spectrum is taken of M_c/unit, unit a power of two (exact), so no square under- or overflows
    unit = _power_of_two(float(centred.abs().max()))
    unit_means, unit_centred = means / unit, centred / unit
    if rtol is None:
        noise = means_noise(unit_means, unit_centred, s.counts[measured], s.sq_dev[measured] / unit / unit,
                            s.feature_dtype, s.state_dtype)
        unit_eigvals, directions, keep, cutoff = _spectrum(
            unit_centred, lambda lam_max, method: noise + factorisation_noise(unit_centred, method))
    else:
        unit_eigvals, directions, keep, cutoff = _spectrum(unit_centred, lambda lam_max, method: rtol * lam_max)
    eigvals, cutoff = unit_eigvals * unit * unit, cutoff * unit * unit
    factor = float(k) if scale == "notebook" else 1.0

    def trace_with_pinv(scatter: torch.Tensor) -> float:
        """tr(S Σ_B^†)/K = Σ_i v_iᵀ S v_i / λ_i over the kept eigenpairs (λ_i of M_cᵀM_c, Σ_B = M_cᵀM_c/K), with
        S and λ_i both divided by unit²."""
        if not bool(keep.any()):
            return float("nan")
        quadratic = (directions * ((scatter / unit / unit) @ directions)).sum(0)
        return factor * float((quadratic / unit_eigvals[keep]).sum())

    tr_b = float(eigvals.sum()) / k
    out: dict = {
        "num_classes": k_all,
        "num_present_classes": int(present.sum()),
        "num_measured_classes": k,
        "num_samples": int(total),
        "dim": s.dim,
        "global_mean": global_mean,
        "ddof": ddof,
        "scale": scale,
        "min_count": min_count,
        "num_classes_below_min_count": int(below.sum()),
        "absent_classes": absent,
        "class_counts": s.counts.numpy().copy(),
        "nc1": trace_with_pinv(sigma_w),
        "nc1_quotient": float(torch.trace(sigma_w)) / tr_b if tr_b > 0 else float("nan"),
        "rank": int(keep.sum()),
        "sigma_b_cutoff": cutoff / k,
        "sigma_b_spectrum": (eigvals / k).numpy(),
        "trace_sigma_w": float(torch.trace(sigma_w)),
        "trace_sigma_b": tr_b,
        "cdnv_exponent": cdnv_exponent,
    }
    if not bool(keep.any()):
        warnings.warn("all class means coincide to within rounding (no Σ_B eigenvalue above the cut-off "
                      f"{cutoff / k:.3g}): between-class scatter is zero, NC1 is undefined (NaN)", stacklevel=2)
    _rank_deficit(out, measured, unit_centred, unit, tile_size)

    variances = s.sq_dev[measured] / (n - ddof)
    if ddof and bool((n <= ddof).any()):
        warnings.warn("classes with a single sample have no ddof=1 variance; CDNV leaves their pairs out", stacklevel=2)
        variances = torch.where(n > ddof, variances, torch.full_like(variances, float("nan")))
    geo = vector_pairs(centred, tile_size, variances=variances, cdnv_exponent=cdnv_exponent, offset=mu_g, orth=True,
                       gnc2=True)
    out["cdnv"] = geo["cdnv"]
    out["equinorm_means"] = _equinorm(centred)
    out["equiangularity_means"], out["max_angle_means"] = geo["cos_std"], geo["max_angle"]
    out["etf_error_means"], out["orth_error_means"] = geo["etf_error"], geo["orth_error"]
    for key in ("gnc2_log_mean", "gnc2_log_var", "gnc2_riesz_mean"):
        out[key] = geo[key]
    if ood is not None:
        out["ood_centering"] = ood_centering
        out["nc5_ood"] = _nc5(means, _ood_mean(ood, s.dim), mu_g if ood_centering == "global_mean" else None)

    if W is not None:
        _classifier_metrics(out, W[measured], centred, tile_size)

    if ncc is not None:
        _check_ncc_classifier(ncc, W, b)
        _ncc_metrics(out, ncc)

    ref = s.counts if group_counts is None else torch.as_tensor(check_counts(group_counts, "group_counts", True))
    if ref.shape[0] != k_all:
        raise ValueError(f"group_counts has {ref.shape[0]} entries; expected {k_all} (one per class)")
    if int(ref[measured].max()) != int(ref[measured].min()):
        position = torch.cumsum(measured.to(torch.int64), 0) - 1  # index among measured classes
        _group_metrics(out, s, measured, position, ref, group_thresholds, centred, variances, cdnv_exponent,
                       tile_size, trace_with_pinv)
        _minority_collapse(out, measured, position, ref, group_thresholds, minority, centred, W, tile_size)
    return out


def _scale_name(scale: str) -> str:
    """``scale`` as its current name: ``"papyan"`` is the deprecated name of ``"notebook"`` (one release)."""
    if scale == "papyan":
        warnings.warn('scale="papyan" is deprecated, use scale="notebook" (the reference notebook\'s NC1 without '
                      "/K; Papyan et al. 2020 Fig. 6 plots the per-class form, the default)", FutureWarning, stacklevel=3)
        return "notebook"
    if scale not in SCALES:
        raise ValueError(f"scale == {scale!r}, must be one of {SCALES}")
    return scale


def _nc5(means: torch.Tensor, ood_mean: torch.Tensor, centre: torch.Tensor | None) -> float:
    """NC5 (Ammar et al. 2024, eq. 5): mean over k of |cos(μ_k − c, μ_ood − c)|, c = 0 (``ood_centering="none"``)
    or μ_G (``"global_mean"``). Our reading of eq. 5: it takes the cosine of the class mean and the OOD mean as
    they are, with no global mean subtracted, as the peer library's example (rhubarbwu/neural-collapse) does; so
    the default is uncentred."""
    if centre is not None:
        means, ood_mean = means - centre, ood_mean - centre
    cos = (means @ ood_mean) / (means.norm(dim=1) * ood_mean.norm())
    return float(cos.abs().mean())


def _check_ncc_classifier(ncc: NCCCounts, W, b) -> None:
    """Refuse an NCC pass scored against another classifier than the (W, b) given to ``measure``."""
    if W is not None and ncc.classifier != classifier_fingerprint(W, b):
        raise ValueError("ncc was scored against a different classifier (W, b) than the one given to measure "
                         "(or none); build NCCCounts.from_stats(stats, W=W, b=b) with the same W and b")


def _ncc_metrics(out: dict, ncc: NCCCounts) -> None:
    """NC4 from an NCC pass: NCC accuracy and, with the classifier, agreement / mismatch (Papyan et al. 2020)."""
    hits = ncc.finalize()
    seen = int(hits["counts"].sum())
    out["ncc_accuracy"] = int(hits["ncc_correct"].sum()) / seen
    if ncc.W is not None:
        out["ncc_agreement"] = int(hits["agree"].sum()) / seen
        out["ncc_mismatch"] = 1.0 - out["ncc_agreement"]
        out["classifier_accuracy"] = int(hits["net_correct"].sum()) / seen


def _within_scatter(s: FinalStats, measured: torch.Tensor, below: torch.Tensor):
    """(scatter, N, K) behind Σ_W: the measured classes' within-class scatter. Classes below ``min_count`` are
    subtracted with their per-class scatter or their kept samples; without either, ones with spread stay in
    (with a warning)."""
    n_all = s.counts.to(torch.float64)
    if not bool(below.any()):
        return s.scatter, float(n_all[measured].sum()), int(measured.sum())
    if s.class_scatter is not None:
        return s.scatter - s.class_scatter[below].sum(0), float(n_all[measured].sum()), int(measured.sum())
    rare = s.rare_scatter(below)
    if rare is not None:
        return s.scatter - rare, float(n_all[measured].sum()), int(measured.sum())
    if bool((s.sq_dev[below] > 0).any()):
        warnings.warn("Σ_W keeps the within-class scatter of the classes below min_count (build ClassStats with "
                      "rare_below >= min_count, or per_class_cov=True, to remove it)", stacklevel=3)
        present = s.counts > 0
        return s.scatter, float(n_all[present].sum()), int(present.sum())
    return s.scatter, float(n_all[measured].sum()), int(measured.sum())


def _classifier_metrics(out: dict, w: torch.Tensor, centred: torch.Tensor, tile_size: int) -> None:
    """NC2 of the classifier rows, NC3 duality (Papyan et al. 2020; Zhu et al. 2021), per-class duality
    cos(w_k, μ_k − μ_G), UNC3 = std(ddof=1)/mean of ⟨w_k, μ_k − μ_G⟩ (Wu & Papyan 2024, uniform duality).
    Each is invariant to the scales of W and of the means, so both are brought to unit scale first."""
    w, centred = unit_scale(w), unit_scale(centred)
    out["equinorm_weights"] = _cov(w.norm(dim=1))
    geo = vector_pairs(w, tile_size, orth=True)
    out["equiangularity_weights"], out["max_angle_weights"] = geo["cos_std"], geo["max_angle"]
    out["etf_error_weights"], out["orth_error_weights"] = geo["etf_error"], geo["orth_error"]
    out["self_duality"] = duality_pass(w, centred, tile_size)
    out["duality_papyan"] = float(
        (w / torch.linalg.matrix_norm(w) - centred / torch.linalg.matrix_norm(centred)).square().sum())
    similarity = (w * centred).sum(1)
    duality_cos = similarity / (w.norm(dim=1) * centred.norm(dim=1))
    out["duality_cos_mean"] = float(duality_cos.mean())
    out["duality_cos_per_class"] = duality_cos.numpy()
    mean = float(similarity.mean())
    out["unc3"] = float(similarity.std(correction=1)) / mean if mean != 0 else float("nan")


def _group_metrics(out, s, measured, position, ref, thresholds, centred, variances, cdnv_exponent, tile_size,
                   trace_with_pinv) -> None:
    """Per-group cdnv, nc1_quotient and (with per-class scatter) nc1 over the classes of each group."""
    out["group_classes"] = {}
    for name, classes in class_groups(ref.tolist(), thresholds).items():
        classes = [c for c in classes if bool(measured[c])]
        out["group_classes"][name] = classes
        if not classes:
            continue
        idx = position[torch.tensor(classes)]
        n_g = float(s.counts[classes].sum())
        out[f"cdnv_{name}"] = (vector_pairs(centred[idx], tile_size, variances=variances[idx],
                                            cdnv_exponent=cdnv_exponent, frobenius=False)["cdnv"]
                               if len(classes) > 1 else float("nan"))
        tr_b = out["trace_sigma_b"]
        out[f"nc1_quotient_{name}"] = float(s.sq_dev[classes].sum()) / n_g / tr_b if tr_b > 0 else float("nan")
        if s.class_scatter is not None:
            out[f"nc1_{name}"] = trace_with_pinv(s.class_scatter[classes].sum(0) / n_g)


def _minority_collapse(out, measured, position, ref, thresholds, minority, centred, W, tile_size) -> None:
    """Fang et al. 2021, §4: cosines among minority classifiers / class means; collapse shows as cos → 1."""
    if minority is None:
        minority = class_groups(ref.tolist(), thresholds)["tail"]
    minority = [c for c in minority if bool(measured[c])]
    out["minority_classes"] = minority
    if len(minority) < 2:
        return
    geo = vector_pairs(centred[position[torch.tensor(minority)]], tile_size, frobenius=False)
    out["minority_cos_means_mean"], out["minority_cos_means_std"] = geo["cos_mean"], geo["cos_std"]
    if W is not None:
        geo = vector_pairs(W[torch.tensor(minority)], tile_size, frobenius=False)
        out["minority_cos_weights_mean"], out["minority_cos_weights_std"] = geo["cos_mean"], geo["cos_std"]


def stream_stats(batches, num_classes: int, dim: int, **kwargs) -> ClassStats:
    """``ClassStats(num_classes, dim, **kwargs)`` over an iterable of (features, labels) blocks; labels ``None``
    put every sample in class 0 (out-of-distribution features for ``measure(..., ood=)``)."""
    stats = ClassStats(num_classes, dim, **kwargs)
    for x, y in batches:
        stats.update(x, torch.zeros(len(x), dtype=torch.int64) if y is None else y)
    return stats


def measure_stream(batches, num_classes: int, dim: int, W=None, b=None, progress: bool = False,
                   num_samples: int | None = None, max_count: int | None = None, **kwargs) -> dict:
    """``measure`` over data read twice from ``batches()``, a callable returning an iterable of (features,
    labels) blocks (e.g. ``data.features.open_features(path).batches``, for files larger than memory): one pass
    for the statistics, one for NC4 (NCC). With ``min_count`` the statistics keep the rare classes' samples, so
    Σ_W leaves those classes out exactly. ``progress`` shows a tqdm bar per pass on stderr (in samples, out of
    ``num_samples`` when given). ``max_count``, the largest class count when known beforehand, caps the kept
    samples at it (a ``min_count`` above every class count keeps each class whole, not min_count − 1 slots)."""
    if not callable(batches):
        raise TypeError(f"batches must be a callable returning an iterable of (features, labels) blocks (it is called "
                        f"once per pass); got {type(batches).__name__}")
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False; got {type(progress).__name__} {progress!r}")
    if num_samples is not None:
        num_samples = check_size(num_samples, "num_samples", low=0)
    min_count = check_size(kwargs.get("min_count", 1), "min_count")
    W, b = check_classifier(W, b)
    rare_below = min_count
    if max_count is not None:
        rare_below = min(min_count, check_size(max_count, "max_count", low=0) + 1)
    stats = stream_stats(_counted(batches(), progress, num_samples, "NC pass 1/2: statistics"), num_classes, dim,
                         rare_below=rare_below)
    ncc = NCCCounts.from_stats(stats, W=W, b=b)
    for x, y in _counted(batches(), progress, num_samples, "NC pass 2/2: nearest class centre"):
        ncc.update(x, y)
    _same_passes(stats.counts, ncc.counts)
    return measure(stats, W=W, b=b, ncc=ncc, **kwargs)


def _same_passes(first: torch.Tensor, second: torch.Tensor) -> None:
    """Refuse a second pass that saw other counts per class than the first (``batches()`` changed between calls)."""
    if torch.equal(first.cpu(), second.cpu()):
        return
    k = int(torch.nonzero(first.cpu() != second.cpu())[0])
    raise ValueError(f"batches() gave different data on its two passes: class {k} had {int(first[k])} samples in the "
                     f"first and {int(second[k])} in the second; make batches() return the same blocks on every call "
                     "(e.g. no shuffling, or a fixed seed)")


def _counted(blocks, progress: bool, total: int | None, desc: str):
    """``blocks`` as they come, advancing a tqdm bar on stderr by each block's rows when ``progress``."""
    with tqdm(total=total, desc=desc, unit="sample", unit_scale=True, file=sys.stderr, disable=not progress,
              leave=False, dynamic_ncols=True) as bar:
        for x, y in blocks:
            yield x, y
            bar.update(len(x))


def measure_features(features, labels, W=None, b=None, num_classes: int | None = None, batch_size: int = 8192,
                     **kwargs) -> dict:
    """``measure_stream`` over in-memory features in blocks of ``batch_size`` rows."""
    x, y = check_features_labels(features, labels, num_classes)
    k = int(y.max()) + 1 if num_classes is None else check_size(num_classes, "num_classes")
    W, b = check_classifier(W, b, dim=x.shape[1])
    if W is not None:
        k = max(k, W.shape[0])
    batch_size = check_size(batch_size, "batch_size")
    blocks = lambda: ((x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(y), batch_size))  # noqa: E731
    return measure_stream(blocks, k, x.shape[1], W=W, b=b, max_count=int(torch.bincount(y).max()) if len(y) else 0,
                          **kwargs)


def measure_ncmc(stats) -> dict:
    """NCMC metrics (Yan et al. 2024, §4.3): mean and population std (ddof 0) of ‖ĥ − w̄^(k)/‖w̄^(k)‖‖² and mean
    of 1 − ĥ·ŵ_k."""
    if not isinstance(stats, NCMCStats):
        raise TypeError(f"measure_ncmc needs an NCMCStats; got {type(stats).__name__}")
    final = stats.finalize()
    return {"ncmc_collapse_mean": final["mean"], "ncmc_collapse_std": final["std"],
            "ncmc_variability": final["variability"]}

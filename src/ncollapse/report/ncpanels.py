"""Which NC metric goes in which panel group, what its y axis measures, and which panels carry no information.

Groups follow Papyan et al. (2020): NC1 within-class variability collapse, NC2 convergence of class means and
classifiers to a simplex ETF, NC3 self-duality, NC4 the classifier deciding like the nearest class centre;
everything else (ranks, traces, minority collapse, NC5, NCMC) goes under "other".
"""

from __future__ import annotations

import math

import numpy as np

from .runs import Run

__all__ = ["GROUPS", "HEADLINE", "group_of", "y_label", "title", "grouped", "uninformative", "flat_runs"]

GROUPS = {  # group: (heading, what the group's panels show: the line under the heading)
    "NC1": ("within-class variability collapse",
            "features of each class shrink to their class mean (Σ_W → 0 relative to Σ_B)"),
    "NC2": ("convergence to a simplex ETF",
            "centred class means and classifier rows reach equal norms and equal, maximal angles"),
    "NC3": ("self-duality", "the classifier rows align with the centred class means (W ∝ M_cᵀ)"),
    "NC4": ("nearest-class-centre decisions",
            "the classifier decides like the nearest class mean (NCC) on the training features"),
    "other": ("further quantities", "spectrum rank and traces, generalised NC2, minority collapse, NC5, NCMC"),
}
# The report's headline row, {metric name: short title}: one metric per NC property (Papyan et al. 2020 NC1–NC4;
# Galanti et al. 2021 CDNV).
HEADLINE = {"nc1": "Within-class variability", "cdnv": "Class-distance variance",
            "etf_error_means": "Distance to simplex ETF", "self_duality": "Self-duality error",
            "ncc_mismatch": "NCC disagreement"}
_PREFIXES = (  # (metric-name prefix, group, y label); the first match wins
    ("nc1_quotient", "NC1", "tr Σ_W / tr Σ_B"),
    ("nc1", "NC1", "tr(Σ_W Σ_B⁺) / K"),
    ("cdnv", "NC1", "mean (V_k+V_l) / 2‖μ_k−μ_l‖²"),
    ("trace_sigma_w", "other", "tr Σ_W"),
    ("trace_sigma_b", "other", "tr Σ_B"),
    ("etf_error", "NC2", "‖G/‖G‖_F − ETF‖_F"),
    ("orth_error", "NC2", "‖G/‖G‖_F − I/√K‖_F"),
    ("equinorm", "NC2", "CoV of norms"),
    ("equiangularity", "NC2", "std of cosines"),
    ("max_angle", "NC2", "mean |cos + 1/(K−1)|"),
    ("self_duality", "NC3", "ETF error of W M_cᵀ"),
    ("duality_papyan", "NC3", "‖W/‖W‖ − M_c/‖M_c‖‖²"),
    ("duality_cos", "NC3", "cos(w_k, μ_k − μ_G)"),
    ("unc3", "NC3", "UNC3 (unit-norm duality)"),
    ("ncc_mismatch", "NC4", "fraction NCC ≠ classifier"),
    ("ncc_agreement", "NC4", "fraction NCC = classifier"),
    ("ncc_accuracy", "NC4", "NCC accuracy"),
    ("classifier_accuracy", "NC4", "classifier accuracy"),
    ("rank", "other", "eigenvalues of Σ_B kept"),
    ("minority_cos", "other", "cosine"),
    ("gnc2", "other", "GNC2 energy"),
    ("collapse", "other", "‖ĥ − ŵ‖² (NCMC)"),
    ("variability", "other", "1 − ĥ·ŵ_k (NCMC)"),
)
_TITLES = (  # (metric-name prefix, human panel title); the first match wins, qualifiers from the name's suffix
    ("nc1_quotient", "Trace ratio Σ_W / Σ_B"),
    ("nc1", "Within-class variability (NC1)"),
    ("cdnv", "Class-distance variance"),
    ("trace_sigma_w", "Within-class scatter"),
    ("trace_sigma_b", "Between-class scatter"),
    ("etf_error", "Distance to a simplex ETF"),
    ("orth_error", "Orthogonal-frame distance"),
    ("equinorm", "Spread of norms"),
    ("equiangularity", "Spread of angles"),
    ("max_angle", "Gap to the maximal angle"),
    ("self_duality", "Self-duality error (NC3)"),
    ("duality_papyan", "Classifier–mean distance"),
    ("duality_cos", "Classifier–mean cosine"),
    ("unc3", "Unit-norm self-duality"),
    ("ncc_mismatch", "NCC disagreement (NC4)"),
    ("ncc_agreement", "NCC agreement"),
    ("ncc_accuracy", "Nearest-centre accuracy"),
    ("classifier_accuracy", "Classifier accuracy"),
    ("rank", "Rank of Σ_B"),
    ("minority_cos", "Minority-class cosine"),
    ("gnc2_log", "GNC2 log energy"),
    ("gnc2_riesz", "GNC2 Riesz energy"),
    ("collapse", "NCMC collapse"),
    ("variability", "NCMC variability"),
)
_QUALIFIERS = (("_means", "class means"), ("_weights", "classifier"), ("_head", "head classes"),
               ("_medium", "medium classes"), ("_tail", "tail classes"), ("_mean", "mean"), ("_std", "std"),
               ("_var", "variance"))
ZERO = 1e-10  # a series whose largest magnitude stays below this is numerical noise (a fixed head's weight metrics)


def _match(name: str):
    return next(((group, label) for prefix, group, label in _PREFIXES if name.startswith(prefix)), ("other", name))


def group_of(name: str) -> str:
    """NC1 / NC2 / NC3 / NC4 / other for a metric name without its ``nc/`` prefix."""
    return _match(name)[0]


def y_label(name: str) -> str:
    """The quantity on the y axis of a metric's panel."""
    return _match(name)[1]


def title(name: str) -> str:
    """A human panel title for a metric name without its prefix: ``etf_error_means`` → "Distance to a simplex ETF,
    class means"; a name with no entry is returned as it is."""
    base = next(((prefix, text) for prefix, text in _TITLES if name.startswith(prefix)), None)
    if base is None:
        return name
    rest, quals = name[len(base[0]):], []
    for suffix, text in _QUALIFIERS:
        if suffix in rest:
            quals.append(text)
            rest = rest.replace(suffix, "", 1)
    return ", ".join([base[1], *quals])


def grouped(keys: list[str], prefix: str) -> dict[str, list[str]]:
    """``keys`` split into the GROUPS (in GROUPS order; empty groups left out), order kept within a group."""
    out = {name: [k for k in keys if group_of(k[len(prefix):]) == name] for name in GROUPS}
    return {name: members for name, members in out.items() if members}


def _tail_size(run: Run) -> int | None:
    groups = run.groups()
    return len(groups.get("tail", [])) if groups else None


def uninformative(runs: list[Run], keys: list[str], prefix: str) -> dict[str, str]:
    """{key: why} for panels that would show nothing in every run: no finite value, classifier-weight metrics
    numerically zero (below 1e-10: a fixed head), a constant over ≥ 3 NC passes (a flat rank), or a std over
    ≤ 2 minority classes. One NC pass (a short run) is a value, not a flat line, and stays."""
    out = {}
    for key in keys:
        name, reasons = key[len(prefix):], []
        for run in runs:
            values = run.series(key)[1]
            finite = values[np.isfinite(values)]
            tail = _tail_size(run)
            if not finite.size:
                reasons.append("no finite value")
            elif "weights" in name and np.abs(finite).max() < ZERO and (finite != 0).any():
                reasons.append(f"numerically zero (|value| ≤ {np.abs(finite).max():.0e}, e.g. a fixed classifier)")
            elif "_std" in name and name.startswith("minority") and tail is not None and tail <= 2:
                reasons.append(f"a std over {tail} minority classes")
            elif finite.size >= 3 and finite.max() - finite.min() <= 1e-12 * max(1.0, np.abs(finite).max()):
                reasons.append(f"constant at {_short(float(finite[0]))}")
            else:
                break
        else:
            out[key] = reasons[0] if len(set(reasons)) == 1 else "; ".join(dict.fromkeys(reasons))
    return out


def flat_runs(runs: list[Run], key: str) -> dict[str, float]:
    """{run label: last value} of the runs whose ``key`` would stretch a shared axis and flatten the others' curves:
    numerically zero (|value| < 1e-10, a fixed classifier's weight metrics at 1e-16), or constant over ≥ 2 NC passes
    (a fixed frame measures the same value each pass) and more than a decade outside the positive values of the runs
    whose curve varies. Empty when no run varies (``uninformative`` then decides for the whole panel)."""
    flat, varying = {}, []
    for run in runs:
        values = run.series(key)[1]
        finite = values[np.isfinite(values)]
        if not finite.size:
            continue
        peak = float(np.abs(finite).max())
        tiny = peak < ZERO and bool((finite != 0).any())
        if tiny or (finite.size >= 2 and finite.max() - finite.min() <= 1e-12 * max(1.0, peak)):
            flat[run.label] = (float(finite[-1]), tiny)
        else:
            varying.append(finite)
    if not varying:
        return {}
    pool = np.concatenate(varying)
    lo, hi = (float(pool.min()), float(pool.max())) if (pool > 0).all() else (math.nan, math.nan)
    return {label: value for label, (value, tiny) in flat.items()
            if tiny or (value > 0 and (value < lo / 10 or value > 10 * hi))}


def _short(value: float) -> str:
    return str(int(value)) if math.isclose(value, round(value)) else f"{value:.3g}"

"""Scale sweep (issue 18, part 2): every scale-invariant metric is unchanged when the features or W are scaled
by 10^±150 in float64 and 10^±30 in float32, the scale-covariant ones scale as they should, and features whose
second moments the statistics cannot hold are refused with a message that says to rescale."""

import numpy as np
import pytest
import torch

from ncollapse import ClassStats, measure_features
from ncollapse.pairwise import duality_pass, unit_scale, vector_pairs
from ncollapse.validation import underflow_limit

from conftest import make_features

FEATURE_KEYS = ["nc1", "nc1_quotient", "cdnv", "equinorm_means", "equiangularity_means", "max_angle_means",
                "etf_error_means", "orth_error_means", "gnc2_log_mean", "gnc2_log_var", "gnc2_riesz_mean",
                "nc5_ood", "cdnv_head", "cdnv_medium", "cdnv_tail", "nc1_quotient_head", "nc1_quotient_medium",
                "nc1_quotient_tail", "minority_cos_means_mean", "minority_cos_means_std", "ncc_accuracy"]
WEIGHT_KEYS = ["equinorm_weights", "equiangularity_weights", "max_angle_weights", "etf_error_weights",
               "orth_error_weights", "minority_cos_weights_mean", "minority_cos_weights_std"]
DUALITY_KEYS = ["self_duality", "duality_papyan", "duality_cos_mean", "duality_cos_per_class", "unc3",
                "ncc_agreement", "ncc_mismatch", "classifier_accuracy"]
INVARIANT = FEATURE_KEYS + WEIGHT_KEYS + DUALITY_KEYS
SQUARED = ["trace_sigma_w", "trace_sigma_b", "sigma_b_spectrum"]  # ∝ s² under features × s

SHAPES = {"k_below_d": ([110, 104, 40, 15, 10, 8], 9), "k_above_d": ([105, 102, 30, 22, 12, 10, 8, 6, 5], 4)}
F64_SCALES = [1e-150, 1e-100, 1e-50, 1e50, 1e100, 1e150]
F32_MEASURED = [1e-10, 1e-5, 1e5, 1e10]
F32_REFUSED = [1e-30, 1e-20, 1e20, 1e30]


def _problem(shape):
    counts, dim = SHAPES[shape]
    x, y, _ = make_features(counts, dim=dim, seed=7, spread=0.4)
    rng = np.random.default_rng(8)
    k = len(counts)
    return x, y, rng.normal(size=(k, dim)), rng.normal(size=k), rng.normal(size=(25, dim)) + 0.3


def _run(x, y, W, b, ood, dtype, **kwargs):
    return measure_features(x.astype(dtype), y, W=W, b=b, ood=ood.astype(dtype), **kwargs)


def _assert_invariant(got, want, keys, rel):
    for key in keys:
        assert key in want, key
        np.testing.assert_allclose(got[key], want[key], rtol=rel, atol=0, err_msg=key)


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("scale", F64_SCALES)
def test_float64_features_scaled(shape, scale):
    x, y, W, b, ood = _problem(shape)
    want = _run(x, y, W, b, ood, np.float64)
    got = _run(x * scale, y, W, b * scale, ood * scale, np.float64)  # argmax(W sx + s b): the same classes
    _assert_invariant(got, want, INVARIANT, 1e-9)
    rank = want["rank"]
    assert got["rank"] == rank
    for key in SQUARED:
        np.testing.assert_allclose(np.atleast_1d(got[key])[:rank], np.atleast_1d(want[key])[:rank] * scale ** 2,
                                   rtol=1e-9, atol=0, err_msg=key)


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("scale", F64_SCALES + [1e-300, 1e160, 1e300])
def test_float64_classifier_scaled(shape, scale):
    """W alone (b with it): only the classifier terms could move, and none does, up to W × 1e±300."""
    x, y, W, b, ood = _problem(shape)
    want = _run(x, y, W, b, ood, np.float64)
    got = _run(x, y, W * scale, b * scale, ood, np.float64)
    _assert_invariant(got, want, INVARIANT + SQUARED, 1e-9)


@pytest.mark.parametrize("scales", [(1e150, 1e150), (1e-150, 1e-150), (1e150, 1e-150), (1e-150, 1e150)])
def test_float64_features_and_classifier_scaled_together(scales):
    """⟨w_k, μ_k − μ_G⟩ reaches 1e±300 here: UNC3 and the duality terms still come from unit-scale vectors."""
    feature_scale, weight_scale = scales
    x, y, W, b, ood = _problem("k_below_d")
    want = _run(x, y, W, b, ood, np.float64)
    got = _run(x * feature_scale, y, W * weight_scale, b * feature_scale * weight_scale, ood * feature_scale,
               np.float64)
    _assert_invariant(got, want, INVARIANT, 1e-9)


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("scale", F32_MEASURED)
def test_float32_features_scaled(shape, scale):
    x, y, W, b, ood = _problem(shape)
    want = _run(x, y, W, b, ood, np.float32)
    got = _run(x * scale, y, W, b * scale, ood * scale, np.float32)
    _assert_invariant(got, want, INVARIANT, 1e-5)
    for key in ("trace_sigma_w", "trace_sigma_b"):
        assert got[key] == pytest.approx(want[key] * scale ** 2, rel=1e-5), key


@pytest.mark.parametrize("scale", [1e-30, 1e-20, 1e-10, 1e10, 1e20, 1e30])
def test_float32_classifier_scaled(scale):
    x, y, W, b, ood = _problem("k_above_d")
    want = _run(x, y, W, b, ood, np.float32)
    got = _run(x, y, (W * scale).astype(np.float32), (b * scale).astype(np.float32), ood, np.float32)
    _assert_invariant(got, want, INVARIANT, 1e-5)


@pytest.mark.parametrize("scale", F32_REFUSED)
def test_float32_features_out_of_range_are_refused(scale):
    """The float32 GEMMs cannot hold these second moments: a clear refusal instead of NC1 = 0 or a negative CDNV."""
    x, y, W, b, ood = _problem("k_below_d")
    word = "underflow" if scale < 1 else "overflow"
    with pytest.raises(ValueError, match=f"squares {word} float32.*rescale the features"):
        _run(x * scale, y, W, b, ood, np.float32)


def test_float64_features_into_a_float32_state_are_refused():
    """float64 features at 1e-25 fit a float64 GEMM but not the float32 one a float32 state runs."""
    x, y, _, _, _ = _problem("k_below_d")
    stats = ClassStats(6, 9, dtype=torch.float32)
    with pytest.raises(ValueError, match="squares underflow float32.*rescale"):
        stats.update(torch.from_numpy(x * 1e-25), torch.from_numpy(y))
    stats.update(torch.from_numpy(x * 1e-10), torch.from_numpy(y))  # well inside float32's range
    assert int(stats.counts.sum()) == len(y)


def test_underflow_limit_is_where_squares_leave_the_normal_range():
    """2^10·sqrt(tiny): 0.1 % of the limit, squared, is the smallest normal number of the dtype."""
    for dtype in (torch.float32, torch.float64):
        tiny = torch.finfo(dtype).tiny
        assert (underflow_limit(dtype) * 2.0 ** -10) ** 2 == pytest.approx(tiny, rel=1e-12)
    zeros = np.zeros((6, 9), dtype=np.float32)  # exactly representable: zero is never refused
    stats = ClassStats(6, 9)
    stats.update(torch.from_numpy(zeros), torch.arange(6))
    assert int(stats.counts.sum()) == 6


def test_power_of_two_scales_give_bit_identical_pairwise_results():
    """unit_scale only changes exponents: at 2^±400 (variances at 2^±800) every pairwise result is the unscaled one."""
    rng = np.random.default_rng(3)
    rows, w = torch.from_numpy(rng.normal(size=(30, 12))), torch.from_numpy(rng.normal(size=(30, 12)))
    variances, offset = torch.from_numpy(rng.uniform(0.1, 1.0, size=30)), torch.from_numpy(rng.normal(size=12))
    want = vector_pairs(rows, 7, variances=variances, offset=offset, orth=True, gnc2=True)
    want_duality = duality_pass(w, rows, 7)
    for e in (-400, 400):
        s = 2.0 ** e
        got = vector_pairs(rows * s, 7, variances=variances * s * s, offset=offset * s, orth=True, gnc2=True)
        assert got == want
        assert duality_pass(w * s, rows, 7) == want_duality
        assert duality_pass(w, rows * s, 7) == want_duality
    assert float(unit_scale(rows).abs().max()) == pytest.approx(0.75, abs=0.25)


def test_cdnv_with_another_exponent_scales_as_s_to_the_two_minus_p():
    """(V_k + V_l)/(2‖μ_k − μ_l‖^p) is ∝ s^(2 − p): p = 1.5 gives a factor s^0.5, also across 1e±150."""
    x, y, _, _, _ = _problem("k_above_d")
    want = measure_features(x, y, cdnv_exponent=1.5)["cdnv"]
    for scale in (1e-150, 1e150):
        got = measure_features(x * scale, y, cdnv_exponent=1.5)["cdnv"]
        assert got == pytest.approx(want * scale ** 0.5, rel=1e-9)

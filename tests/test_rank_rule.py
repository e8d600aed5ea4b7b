"""The Σ_B rank rule of NC1 (ncollapse.rank, docs/measurement.md): near-coinciding and identical class means
against numpy's float64 pinv, the cut-off's closed form, rank-deficit reporting and the recorded feature dtype."""

import math
import warnings

import numpy as np
import pytest
import torch

from ncollapse import ClassStats, measure, measure_features
from ncollapse.rank import closest_pairs, eigenvalue_cutoff, factorisation_noise, unit_roundoff


def _near_pair(dtype=np.float64, k=10, d=64, n=100, seed=0):
    """K = 10 class means N(0, I_64), class 1 placed 1e-4 from class 0; noise 0.5 with each class's sample mean
    removed, so the two sample means are exactly 1e-4 apart."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(k, d))
    step = rng.normal(size=d)
    means[1] = means[0] + 1e-4 * step / np.linalg.norm(step)
    noise = 0.5 * rng.normal(size=(k, n, d))
    noise -= noise.mean(1, keepdims=True)
    y = np.repeat(np.arange(k), n)
    order = rng.permutation(len(y))
    return (means[:, None, :] + noise).reshape(-1, d)[order].astype(dtype), y[order]


def _numpy_nc1(x, y, via="pinv"):
    """float64 numpy NC1 = tr(Σ_W Σ_B^†)/K with numpy's default pinv cut-off; ``via="svd"`` builds Σ_B^† from the
    SVD of M_c (K pinv(M_c) pinv(M_c)ᵀ), which does not square the small singular values."""
    x = x.astype(np.float64)
    k = int(y.max()) + 1
    mu = np.stack([x[y == c].mean(0) for c in range(k)])
    mc = mu - mu.mean(0)
    sw = sum((x[y == c] - mu[c]).T @ (x[y == c] - mu[c]) for c in range(k)) / len(y)
    if via == "svd":
        p = np.linalg.pinv(mc)
        return np.trace(sw @ (k * p @ p.T)) / k, np.linalg.matrix_rank(mc)
    sb = mc.T @ mc / k
    return np.trace(sw @ np.linalg.pinv(sb)) / k, np.linalg.matrix_rank(sb)


def test_means_1e4_apart_give_the_pinv_answer():
    x, y = _near_pair()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # full rank: no rank warning
        out = measure_features(x, y)
    want, rank = _numpy_nc1(x, y)
    exact, _ = _numpy_nc1(x, y, via="svd")
    assert rank == 9 and out["rank"] == 9 and out["sigma_b_rank_deficit"] == 0
    assert out["nc1"] == pytest.approx(exact, rel=1e-9)
    assert out["nc1"] == pytest.approx(want, rel=1e-6)  # numpy squares M_c into Σ_B first: 3e-8 here
    assert 5e7 < out["nc1"] < 6e7 and out["cdnv"] > 3e7  # the CDNV agrees the two classes merged
    with pytest.warns(UserWarning, match=r"rank 8, 1 below min\(K − 1, d\) = 9.*0–1"):
        old = measure_features(x, y, rtol=1e-10)  # the former fixed cut-off, still available as an override
    assert old["rank"] == 8 and old["nc1"] < 1 and old["sigma_b_closest_pairs"] == [[0, 1]]


def test_means_1e4_apart_in_float32_keep_rank_9():
    x, y = _near_pair(np.float32)
    out = measure_features(x, y)
    want, _ = _numpy_nc1(x, y, via="svd")
    assert out["rank"] == 9
    assert out["nc1"] == pytest.approx(want, rel=1e-3)  # Σ_W accumulated by float32 GEMMs


def _identical(k=5, d=8, n=30, shared=(2, 3, 4), seed=1):
    """Classes ``shared`` hold the very same samples; the others their own."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(k, d)) + 0.3 * rng.normal(size=(k, n, d)).transpose(1, 0, 2)
    base = base.transpose(1, 0, 2)
    for c in shared[1:]:
        base[c] = base[shared[0]]
    y = np.repeat(np.arange(k), n)
    order = rng.permutation(len(y))
    return base.reshape(-1, d)[order], y[order]


@pytest.mark.parametrize("batch_size", [7, 64, 8192])
def test_identical_classes_match_pinv_on_every_path(batch_size):
    x, y = _identical()
    want, rank = _numpy_nc1(x, y)
    assert rank == 2
    with pytest.warns(UserWarning, match=r"Σ_B has rank 2, 2 below min\(K − 1, d\) = 4") as caught:
        out = measure_features(x, y, batch_size=batch_size)
    assert out["rank"] == 2 and out["sigma_b_rank_deficit"] == 2
    assert out["nc1"] == pytest.approx(want, rel=1e-10)
    pairs = out["sigma_b_closest_pairs"]
    assert len(pairs) == 2 and all(p in ([2, 3], [2, 4], [3, 4]) for p in pairs)
    assert max(out["sigma_b_closest_distances"]) < 1e-14
    assert any("closest pairs" in str(w.message) for w in caught)


def test_identical_classes_in_float32_are_dropped_too():
    x, y = _identical()
    with pytest.warns(UserWarning, match="rank 2, 2 below"):
        out = measure_features(x.astype(np.float32), y, batch_size=16)
    want, _ = _numpy_nc1(x.astype(np.float32), y)
    assert out["rank"] == 2 and out["nc1"] == pytest.approx(want, rel=1e-5)


def test_all_classes_identical_is_nan_with_one_explanation():
    x, y = _identical(k=3, shared=(0, 1, 2))
    for batch_size in (5, 8192):
        with pytest.warns(UserWarning) as caught:
            out = measure_features(x, y, batch_size=batch_size)
        assert math.isnan(out["nc1"]) and out["rank"] == 0 and out["sigma_b_rank_deficit"] == 2
        messages = [str(w.message) for w in caught]
        assert len(messages) == 1 and "coincide to within rounding" in messages[0]


def test_cutoff_closed_form():
    """Two classes, d = 2, float32 features, float64 state: ‖E‖_F² + ((√d + 1) u_64 ‖M_c‖_F)² by hand."""
    means = torch.tensor([[3.0, 4.0], [0.0, 1.0]], dtype=torch.float64)
    centred = means - means.mean(0)
    counts, sq_dev = torch.tensor([4, 9]), torch.tensor([8.0, 18.0], dtype=torch.float64)
    u32, u64 = 2.0 ** -24, 2.0 ** -53
    mu_g = math.hypot(1.5, 2.5)
    e0 = (u32 + 2 * u64) * math.sqrt(25 + 2) + 2 * u64 * (5 + mu_g)
    e1 = (u32 + 3 * u64) * math.sqrt(1 + 2) + 2 * u64 * (1 + mu_g)
    want = e0 ** 2 + e1 ** 2 + ((math.sqrt(2) + 1) * u64) ** 2 * float(centred.square().sum())
    got = eigenvalue_cutoff(means, centred, counts, sq_dev, torch.float32, torch.float64, "svd")
    assert got == pytest.approx(want, rel=1e-12)
    gram = want - ((math.sqrt(2) + 1) * u64) ** 2 * float(centred.square().sum())
    gram += (math.sqrt(2) + 1) * u64 * float(centred.square().sum())
    assert eigenvalue_cutoff(means, centred, counts, sq_dev, torch.float32, torch.float64, "gram") == pytest.approx(
        gram, rel=1e-12)
    assert unit_roundoff(torch.bfloat16) == 2.0 ** -8
    wide = torch.randn(40, 3, dtype=torch.float64)  # d < K: the Gram's (√K + 1) u_64 ‖M_c‖_F²
    c = wide - wide.mean(0)
    assert factorisation_noise(c, "gram") == pytest.approx((math.sqrt(40) + 1) * u64 * float(c.square().sum()))


def test_cutoff_follows_the_feature_precision():
    x, y = _near_pair(k=4, d=6, n=20)
    cut = {dt: measure_features(torch.from_numpy(x).to(dt), y)["sigma_b_cutoff"]
           for dt in (torch.float64, torch.float32, torch.bfloat16)}
    assert cut[torch.float64] < 1e-6 * cut[torch.float32] and cut[torch.float32] < 1e-6 * cut[torch.bfloat16]


def test_feature_dtype_is_recorded_merged_and_saved():
    x, y = _near_pair(k=3, d=4, n=5)
    a, b = ClassStats(3, 4), ClassStats(3, 4)
    assert a.feature_dtype is None
    a.update(torch.from_numpy(x), torch.from_numpy(y))
    b.update(torch.from_numpy(x).to(torch.bfloat16), torch.from_numpy(y))
    assert a.feature_dtype == torch.float64 and b.feature_dtype == torch.bfloat16
    assert a.state_dict()["feature_dtype"] == "float64"
    assert ClassStats.from_state_dict(b.state_dict()).feature_dtype == torch.bfloat16
    a.merge(b)
    assert a.feature_dtype == torch.bfloat16 and a.finalize().feature_dtype == torch.bfloat16
    legacy = {k: v for k, v in ClassStats.from_features(x, y).state_dict().items() if k != "feature_dtype"}
    assert ClassStats.from_state_dict(legacy).feature_dtype == torch.float32  # saved before it was recorded
    assert a.reset().feature_dtype is None


def test_closest_pairs_recompute_exact_distances_across_tiles():
    rng = np.random.default_rng(3)
    pts = torch.from_numpy(rng.normal(size=(9, 4)) * 100)
    pts[7] = pts[2]
    pts[5] = pts[1] + 1e-9
    for tile in (2, 4, 512):
        pairs, dists = closest_pairs(pts, 2, tile)
        assert pairs == [[2, 7], [1, 5]] and dists[0] == 0.0
        assert dists[1] == pytest.approx(2e-9, rel=1e-3)


def test_rank_deficit_reports_class_indices_of_measured_classes():
    x, y = _identical(k=6, d=8, shared=(3, 5))
    keep = y != 0  # class 0 absent: measured classes are 1..5
    with pytest.warns(UserWarning):
        out = measure_features(x[keep], y[keep], num_classes=6)
    assert out["sigma_b_rank_deficit"] == 1 and out["sigma_b_closest_pairs"] == [[3, 5]]


def test_rtol_override_is_checked():
    x, y = _near_pair(k=3, d=4, n=5)
    s = ClassStats.from_features(x, y)
    assert measure(s, rtol=0)["rank"] == 2  # never above K − 1: the centred means' rows sum to zero
    with pytest.raises(ValueError, match="rtol == 2, must be <= 1"):
        measure(s, rtol=2)


def test_well_separated_means_take_the_gram_and_agree_with_the_svd():
    """K ≤ d with every eigenvalue far above the Gram's rounding: the K × K Gram path; forcing a tiny rtol on a
    nearly coinciding pair takes the SVD path; both match the SVD reference."""
    x, y = _near_pair(k=6, d=16, n=20)
    x[y == 1] += 1.0  # pull class 1 away from class 0: well conditioned
    out = measure_features(x, y)
    want, _ = _numpy_nc1(x, y, via="svd")
    assert out["rank"] == 5 and out["nc1"] == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("scale", [1e-150, 1e-40, 1e40, 1e150])
def test_rank_rule_and_nc1_do_not_depend_on_the_feature_scale(scale):
    """The spectrum is taken of M_c divided by a power of two, so neither a square nor the cut-off leaves float64."""
    x, y = _near_pair(k=6, d=16, n=20)
    base = measure_features(x, y)
    out = measure_features(x * scale, y)
    assert out["rank"] == base["rank"] == 5 and out["nc1"] == pytest.approx(base["nc1"], rel=1e-9)
    xi, yi = _identical()
    with pytest.warns(UserWarning, match="rank 2, 2 below"):
        same = measure_features(xi * scale, yi)
    assert same["rank"] == 2 and max(same["sigma_b_closest_distances"]) < 1e-14 * scale

import warnings

import numpy as np
import pytest
import torch

from ncollapse import ClassStats, NCCCounts, measure, measure_features, simplex_etf
from ncollapse.metrics import class_groups
from ncollapse.serialize import to_jsonable

from conftest import make_features
from nc_reference import reference

KEYS = ["nc1", "nc1_quotient", "cdnv", "equinorm_means", "equiangularity_means", "max_angle_means",
        "etf_error_means", "equinorm_weights", "equiangularity_weights", "max_angle_weights",
        "etf_error_weights", "self_duality", "duality_papyan", "ncc_mismatch", "ncc_accuracy",
        "orth_error_means", "orth_error_weights", "gnc2_log_mean", "gnc2_log_var", "gnc2_riesz_mean", "unc3",
        "duality_cos_mean", "nc5_ood"]


@pytest.mark.parametrize("fixture", ["balanced", "longtailed"])
@pytest.mark.parametrize("global_mean", ["uniform", "weighted"])
@pytest.mark.parametrize("ddof", [0, 1])
def test_agrees_with_float64_reference(request, fixture, global_mean, ddof):
    x, y, _ = request.getfixturevalue(fixture)
    rng = np.random.default_rng(5)
    W, b = rng.normal(size=(6, x.shape[1])), rng.normal(size=6)
    ood = rng.normal(size=(20, x.shape[1]))
    got = measure_features(x, y, W=W, b=b, global_mean=global_mean, ddof=ddof, ood=ood)
    want = reference(x, y, W=W, b=b, global_mean=global_mean, ddof=ddof, ood=ood)
    for key in KEYS:
        assert got[key] == pytest.approx(want[key], rel=1e-10, abs=1e-12), key
    np.testing.assert_allclose(got["duality_cos_per_class"], want["duality_cos_per_class"], rtol=1e-12)


def test_tiled_equals_direct_and_reference_at_larger_k():
    """K = 240 > d = 16 (the d × d spectrum path), tiles of 37 classes vs one block and the numpy reference."""
    counts = [3 + i % 5 for i in range(240)]
    x, y, _ = make_features(counts, dim=16, seed=9, spread=0.3)
    rng = np.random.default_rng(2)
    W, ood = rng.normal(size=(240, 16)), rng.normal(size=(15, 16))
    s = ClassStats.from_features(x, y, per_class_cov=False)
    tiled = measure(s, W=W, ood=ood, tile_size=37, cdnv_exponent=1.5)
    direct = measure(s, W=W, ood=ood, tile_size=240, cdnv_exponent=1.5)
    want = reference(x, y, W=W, ood=ood, cdnv_exponent=1.5)
    for key in KEYS:
        if key.startswith("ncc"):
            continue
        assert tiled[key] == pytest.approx(direct[key], rel=1e-10, abs=1e-13), key
        assert tiled[key] == pytest.approx(want[key], rel=1e-10, abs=1e-13), key
    assert tiled["rank"] == 16 and len(tiled["sigma_b_spectrum"]) == 16


def test_min_count_leaves_out_rare_classes():
    x, y, _ = make_features([40, 30, 20, 3, 1], dim=6, seed=4)
    keep = y < 3
    W = np.random.default_rng(0).normal(size=(5, 6))
    s = ClassStats.from_features(x, y, per_class_cov=True)
    with pytest.warns(UserWarning, match="2 classes have fewer than min_count=5"):
        out = measure(s, W=W, min_count=5)
    assert out["num_classes_below_min_count"] == 2 and out["num_measured_classes"] == 3
    want = reference(x[keep], y[keep], W=W)
    for key in ("nc1", "nc1_quotient", "cdnv", "etf_error_means", "self_duality", "unc3", "gnc2_log_mean"):
        assert out[key] == pytest.approx(want[key], rel=1e-10), key
    without = ClassStats.from_features(x, y)
    with pytest.warns(UserWarning) as caught:
        assert measure(without, min_count=5)["cdnv"] == pytest.approx(want["cdnv"], rel=1e-10)
    assert any("keeps the within-class scatter" in str(w.message) for w in caught)
    with pytest.raises(ValueError, match="at least two classes with samples; got 1 with at least min_count=35"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            measure(s, min_count=35)


@pytest.mark.parametrize("batch", [1, 4, 1000])
def test_rare_below_removes_left_out_classes_exactly(batch):
    """Kept samples of the classes below min_count make Σ_W exact without per-class scatters, streamed in
    any batch size, through merges of shards and with fewer classes below than slots."""
    x, y, _ = make_features([40, 30, 20, 4, 2, 1], dim=6, seed=9)
    keep = y < 3
    want = reference(x[keep], y[keep])

    def stream(rows):
        s = ClassStats(6, 6, rare_below=5)
        for i in range(0, len(rows), batch):
            part = rows[i:i + batch]
            s.update(torch.from_numpy(x[part]), torch.from_numpy(y[part]))
        return s

    rows = np.arange(len(y))
    whole, merged = stream(rows), stream(rows[::2]).merge(stream(rows[1::2]))
    for s in (whole, merged):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = measure(s, min_count=5)
        assert not [w for w in caught if "keeps the within-class scatter" in str(w.message)]
        assert out["num_classes_below_min_count"] == 3
        for key in ("nc1", "nc1_quotient", "cdnv"):
            assert out[key] == pytest.approx(want[key], rel=1e-10), key
    final = whole.finalize()
    assert torch.equal(final.rare_samples[5, :1], torch.from_numpy(x[y == 5]))
    assert torch.equal(final.rare_samples[3], torch.from_numpy(x[y == 3]))  # the 4 samples of class 3, in order
    assert measure(whole, min_count=6)["nc1"] == pytest.approx(want["nc1"], rel=1e-10)  # 4 samples fit 4 slots
    with pytest.warns(UserWarning, match="rare_below >= min_count"):
        measure(whole, min_count=25)  # the class of 20 samples did not fit: its scatter stays in Σ_W
    small = ClassStats.from_features(x, y, rare_below=2)
    with pytest.warns(UserWarning, match="keeps the within-class scatter"):
        measure(small, min_count=5)


def test_ood_statistics_equal_ood_features(balanced):
    x, y, _ = balanced
    ood = np.random.default_rng(3).normal(size=(50, x.shape[1])) + 2.0
    s = ClassStats.from_features(x, y)
    from_stats = ClassStats.from_features(ood, np.zeros(50, dtype=int), num_classes=1)
    assert measure(s, ood=from_stats)["nc5_ood"] == pytest.approx(measure(s, ood=ood)["nc5_ood"], rel=1e-12)
    with pytest.raises(ValueError, match="ood features have dim 3"):
        measure(s, ood=np.zeros((4, 3)))


def test_exact_etf_features_are_fully_collapsed():
    k = 7
    M = 4.0 * simplex_etf(k, 12, seed=3)
    y = torch.arange(k).repeat(5)
    got = measure_features(M[y], y, W=0.5 * M, b=torch.zeros(k))
    for key in ["nc1", "nc1_quotient", "cdnv", "etf_error_means", "etf_error_weights", "self_duality",
                "duality_papyan", "ncc_mismatch", "equinorm_means", "equiangularity_means", "max_angle_means"]:
        assert abs(got[key]) < 1e-12, key
    assert got["rank"] == k - 1
    assert got["ncc_accuracy"] == 1.0 and got["classifier_accuracy"] == 1.0


def test_papyan_scale_is_k_times_default(longtailed):
    x, y, _ = longtailed
    s = ClassStats.from_features(x, y)
    assert measure(s, scale="papyan")["nc1"] == pytest.approx(6 * measure(s)["nc1"], rel=1e-14)


def test_ddof_relations(longtailed):
    x, y, _ = longtailed
    s = ClassStats.from_features(x, y)
    m0, m1 = measure(s, ddof=0), measure(s, ddof=1)
    n, k = len(y), 6
    assert m1["nc1"] == pytest.approx(m0["nc1"] * n / (n - k), rel=1e-12)
    assert m1["cdnv"] > m0["cdnv"]
    counts = np.bincount(y)
    # two classes only: CDNV scales per class by n_k/(n_k - 1)
    two = ClassStats.from_features(x[y < 2], y[y < 2])
    a, c = measure(two, ddof=0), measure(two, ddof=1)
    v = two.finalize().sq_dev.numpy()
    ratio = (v[0] / (counts[0] - 1) + v[1] / (counts[1] - 1)) / (v[0] / counts[0] + v[1] / counts[1])
    assert c["cdnv"] == pytest.approx(a["cdnv"] * ratio, rel=1e-12)


def test_global_mean_conventions(balanced, longtailed):
    x, y, _ = balanced
    s = ClassStats.from_features(x, y)
    assert measure(s, global_mean="uniform")["nc1"] == pytest.approx(measure(s, global_mean="weighted")["nc1"], rel=1e-12)
    x, y, _ = longtailed
    s = ClassStats.from_features(x, y)
    u, w = measure(s, global_mean="uniform"), measure(s, global_mean="weighted")
    assert abs(u["nc1"] - w["nc1"]) > 1e-3 * u["nc1"]
    assert abs(u["etf_error_means"] - w["etf_error_means"]) > 1e-3


def test_absent_class_is_reported_and_skipped():
    x, y, _ = make_features([20, 20, 20, 20], dim=5)
    s = ClassStats.from_features(x, y, num_classes=5)
    with pytest.warns(UserWarning, match=r"classes \[4\] have no samples"):
        out = measure(s)
    assert out["absent_classes"] == [4] and out["num_present_classes"] == 4
    assert out["nc1"] == pytest.approx(reference(x, y)["nc1"], rel=1e-10)


def test_single_class_is_an_error():
    s = ClassStats.from_features(np.ones((4, 3)), np.zeros(4, dtype=int), num_classes=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="at least two classes"):
            measure(s)


def test_wrong_w_shape():
    x, y, _ = make_features([5, 5, 5], dim=4)
    with pytest.raises(ValueError, match=r"W has shape \(3, 5\)"):
        measure(ClassStats.from_features(x, y), W=np.zeros((3, 5)))


def test_groups_and_minority_collapse():
    counts = [300, 150, 60, 15, 10, 8]
    x, y, _ = make_features(counts, dim=10, seed=4)
    rng = np.random.default_rng(1)
    W = rng.normal(size=(6, 10))
    W[3:] = W[3] + 1e-3 * rng.normal(size=(3, 10))  # minority classifiers nearly collapsed
    s = ClassStats(6, 10, per_class_cov=True)
    s.update(torch.from_numpy(x), torch.from_numpy(y))
    out = measure(s, W=W)
    assert out["group_classes"] == {"head": [0, 1], "medium": [2], "tail": [3, 4, 5]}
    assert out["minority_classes"] == [3, 4, 5]
    assert out["minority_cos_weights_mean"] > 0.999
    ref_tail = reference(x[y >= 3], y[y >= 3])
    assert out["cdnv_tail"] == pytest.approx(ref_tail["cdnv"], rel=1e-10)
    # per-group NC1 from per-class scatter sums to the pooled NC1, weighted by group sizes
    n = np.bincount(y)
    total = sum(out[f"nc1_{g}"] * n[out["group_classes"][g]].sum() for g in ("head", "medium", "tail"))
    assert total / n.sum() == pytest.approx(out["nc1"], rel=1e-10)
    assert class_groups([500, 50, 5]) == {"head": [0], "medium": [1], "tail": [2]}


def test_ncc_counts_stream_equals_reference(longtailed):
    x, y, _ = longtailed
    W = np.random.default_rng(3).normal(size=(6, x.shape[1]))
    s = ClassStats.from_features(x, y)
    ncc = NCCCounts.from_stats(s, W=W)
    for i in range(0, len(y), 13):
        ncc.update(x[i:i + 13], y[i:i + 13])
    out = measure(s, W=W, ncc=ncc)
    assert out["ncc_mismatch"] == pytest.approx(reference(x, y, W=W)["ncc_mismatch"], abs=1e-15)


def test_to_jsonable_replaces_nan():
    assert to_jsonable({"a": float("nan"), "b": np.array([1.0, np.inf])}) == {"a": None, "b": [1.0, None]}


def test_collapsed_to_one_point_gives_nan_with_warning_not_a_crash():
    """Dead features (every sample equal, e.g. all ReLUs off) make NC undefined: NaN and a warning."""
    x = np.ones((30, 4))
    y = np.repeat(np.arange(3), [20, 8, 2])
    with pytest.warns(UserWarning, match="between-class scatter is zero"):
        out = measure_features(x, y, W=np.eye(3, 4))
    for key in ("nc1", "nc1_quotient", "cdnv", "etf_error_means", "equinorm_means", "equiangularity_means",
                "max_angle_means", "self_duality", "nc1_quotient_tail", "minority_cos_means_mean"):
        value = out.get(key, float("nan"))
        assert np.isnan(value), key
    assert to_jsonable(out)["nc1"] is None

"""Every argument of the public measurement API is checked with one line that names the problem and the fix
(issue 18, part 4), and the named conventions: scale="notebook", nc5_ood's ood_centering (part 3)."""

import math
import warnings

import numpy as np
import pytest
import torch

from ncollapse import ClassStats, NCCCounts, measure, measure_features
from ncollapse.cli import main
from ncollapse.metrics import class_groups, measure_stream

from conftest import make_features


@pytest.fixture
def data():
    x, y, _ = make_features([40, 30, 20, 10], dim=6, seed=2)
    return x, y


def _one_line(exc_info):
    assert "\n" not in str(exc_info.value)


def test_update_detaches_and_the_state_never_requires_grad(data):
    x, y = data
    leaf = torch.from_numpy(x).requires_grad_()
    s = ClassStats(4, 6)
    s.update(leaf * 2, torch.from_numpy(y))
    assert not any(t.requires_grad for t in (s.means, s.scatter, s.sq_dev))
    out = measure(s, W=torch.randn(4, 6, requires_grad=True))
    assert out["nc1"] == pytest.approx(measure(ClassStats.from_features(2 * x, y))["nc1"], rel=1e-12)


@pytest.mark.parametrize("make, match", [
    (lambda x: x.to_sparse(), "sparse_coo tensor; pass features.to_dense()"),
    (lambda x: torch.empty_like(x, device="meta"), "meta device and holds no values"),
    (lambda x: x.to(torch.complex128), "must be real"),
])
def test_sparse_meta_and_complex_features_are_refused(data, make, match):
    x, y = data
    with pytest.raises((TypeError, ValueError), match=match) as exc:
        ClassStats(4, 6).update(make(torch.from_numpy(x)), torch.from_numpy(y))
    _one_line(exc)


def test_sparse_or_complex_classifier_is_refused(data):
    x, y = data
    with pytest.raises(TypeError, match="W is a sparse_coo tensor"):
        measure_features(x, y, W=torch.randn(4, 6).to_sparse())
    with pytest.raises(TypeError, match="W must be real"):
        measure_features(x, y, W=torch.randn(4, 6, dtype=torch.complex64))


def test_numpy_integer_sizes_are_accepted(data):
    x, y = data
    s = ClassStats(np.int64(4), np.int32(6), rare_below=np.int64(2))
    s.update(x, y)
    assert s.num_classes == 4 and type(s.num_classes) is int
    out = measure(s, min_count=np.int64(1), tile_size=np.int64(2), ddof=np.int64(1))
    assert out["nc1"] == pytest.approx(measure(s, ddof=1)["nc1"], rel=1e-14)
    assert measure_features(x, y, num_classes=np.int64(4), batch_size=np.int64(16))["num_classes"] == 4
    with pytest.raises(TypeError, match="num_classes must be an integer; got float 4.0"):
        ClassStats(4.0, 6)


@pytest.mark.parametrize("device, match", [
    ("bogus", "device == 'bogus' is not a device; use 'cpu'"),
    (3.5, "device must be a torch.device or a string"),
])
def test_devices_are_parsed_with_a_clear_error(device, match):
    with pytest.raises((TypeError, ValueError), match=match) as exc:
        ClassStats(3, 2, device=device)
    _one_line(exc)
    with pytest.raises((TypeError, ValueError), match=match):
        ClassStats(3, 2).to(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_missing_backend_is_named():
    with pytest.raises(ValueError, match="no CUDA device; use 'cpu'"):
        ClassStats(3, 2, device="cuda")
    with pytest.raises(ValueError, match="no CUDA device"):
        NCCCounts(torch.zeros(3, 2), device="cuda:0")


def test_constructor_options_are_typed():
    with pytest.raises(TypeError, match="dtype must be a floating torch.dtype"):
        ClassStats(3, 2, dtype="float32")
    with pytest.raises(TypeError, match="per_class_cov must be True or False"):
        ClassStats(3, 2, per_class_cov="yes")
    with pytest.raises(ValueError, match="present has shape"):
        NCCCounts(torch.zeros(3, 2), present=torch.ones(2, dtype=torch.bool))


@pytest.mark.parametrize("minority, match", [
    ([2, 2], r"lists class\(es\) \[2\] more than once"),
    ([-1, 3], r"class -1, outside \[0, 4\)"),
    ([1, 4], r"class 4, outside \[0, 4\)"),
    ([1.0, 2], "class indices must be integers"),
    ("23", "must be a list of class indices"),
])
def test_minority_indices_are_checked(data, minority, match):
    s = ClassStats.from_features(*data)
    with pytest.raises((TypeError, ValueError), match=match) as exc:
        measure(s, minority=minority)
    _one_line(exc)


def test_minority_accepts_numpy_indices(data):
    s = ClassStats.from_features(*data)
    out = measure(s, minority=np.array([2, 3]))
    assert out["minority_classes"] == [2, 3]


@pytest.mark.parametrize("thresholds, match", [
    ((20, 100), "head_min 20 is below tail_max 100"),
    ((float("nan"), 20), r"group_thresholds\[0\] is NaN"),
    ((100, float("inf")), r"group_thresholds\[1\] == inf, must be finite"),
    ((100,), r"must be \(head_min, tail_max\)"),
])
def test_group_thresholds_are_ordered_and_finite(data, thresholds, match):
    s = ClassStats.from_features(*data)
    with pytest.raises(ValueError, match=match):
        measure(s, group_thresholds=thresholds)
    with pytest.raises(ValueError, match=match):
        class_groups([5, 50, 500], thresholds)


def test_bias_without_weights_is_refused(data):
    x, y = data
    b = np.zeros(4)
    for call in (lambda: measure_features(x, y, b=b), lambda: measure(ClassStats.from_features(x, y), b=b),
                 lambda: NCCCounts(torch.zeros(4, 6), b=b)):
        with pytest.raises(ValueError, match="b was given without W; pass the classifier weights W"):
            call()


def test_ncc_scored_against_another_classifier_is_refused(data):
    x, y = data
    s = ClassStats.from_features(x, y)
    W, b = np.random.default_rng(0).normal(size=(2, 4, 6)), np.ones(4)
    ncc = NCCCounts.from_stats(s, W=W[0], b=b)
    ncc.update(x, y)
    assert "ncc_mismatch" in measure(s, W=W[0], b=b, ncc=ncc)
    assert "ncc_mismatch" in measure(s, W=torch.from_numpy(W[0]), b=list(b), ncc=ncc)  # same values, other types
    for other in ({"W": W[1], "b": b}, {"W": W[0]}, {"W": W[0], "b": 2 * b}):
        with pytest.raises(ValueError, match="ncc was scored against a different classifier"):
            measure(s, ncc=ncc, **other)
    plain = NCCCounts.from_stats(s)
    plain.update(x, y)
    with pytest.raises(ValueError, match="different classifier"):
        measure(s, W=W[0], b=b, ncc=plain)
    with pytest.raises(ValueError, match="scored against different classifiers"):
        ncc.merge(NCCCounts.from_stats(s, W=W[1], b=b))
    with pytest.raises(TypeError, match="ncc must be an NCCCounts"):
        measure(s, ncc={"counts": 1})


def test_measure_stream_checks_both_passes_saw_the_same_rows(data):
    x, y = data
    calls = []

    def batches():
        calls.append(1)
        rows = slice(None) if len(calls) == 1 else slice(1, None)  # the second pass drops a row
        return [(x[rows], y[rows])]

    with pytest.raises(ValueError, match="batches\\(\\) gave different data on its two passes: class"):
        measure_stream(batches, 4, 6)
    with pytest.raises(TypeError, match="batches must be a callable"):
        measure_stream([(x, y)], 4, 6)


@pytest.mark.parametrize("value, match", [(math.inf, "must be finite"), (math.nan, "is NaN"), (0, "must be > 0")])
def test_cdnv_exponent_must_be_finite_and_positive(data, value, match):
    with pytest.raises(ValueError, match=f"cdnv_exponent.*{match}"):
        measure(ClassStats.from_features(*data), cdnv_exponent=value)


def test_other_measure_arguments(data):
    s = ClassStats.from_features(*data)
    for kwargs, match in (({"ddof": 2}, "ddof == 2, must be <= 1"), ({"global_mean": "median"}, "global_mean"),
                          ({"scale": "per_sample"}, "scale == 'per_sample', must be one of"),
                          ({"ood_centering": "ood"}, "ood_centering == 'ood'"),
                          ({"tile_size": 0}, "tile_size == 0, must be >= 1")):
        with pytest.raises(ValueError, match=match):
            measure(s, **kwargs)
    with pytest.raises(TypeError, match="stats must be a ClassStats or FinalStats"):
        measure(data[0])


def test_scale_notebook_and_the_deprecated_name(data):
    s = ClassStats.from_features(*data)
    per_class = measure(s)["nc1"]
    notebook = measure(s, scale="notebook")
    assert notebook["nc1"] == pytest.approx(4 * per_class, rel=1e-14) and notebook["scale"] == "notebook"
    with pytest.warns(FutureWarning, match='scale="papyan" is deprecated, use scale="notebook"'):
        old = measure(s, scale="papyan")
    assert old["nc1"] == notebook["nc1"] and old["scale"] == "notebook"


def test_nc5_ood_centering_worked_example():
    """Means (2, 0), (0, 2), μ_G = (1, 1); OOD mean (1, 1) + (3, −3)/… chosen so the two conventions differ:
    uncentred |cos| = (|2·a| + |2·b|)/(2·2·‖o‖), centred against μ_G by hand."""
    x = torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0], [0.0, 2.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    ood = torch.tensor([[4.0, 1.0], [2.0, 1.0]], dtype=torch.float64)  # mean (3, 1)
    s = ClassStats.from_features(x, y)
    none = measure(s, ood=ood)
    centred = measure(s, ood=ood, ood_centering="global_mean")
    norm = math.sqrt(10)
    assert none["nc5_ood"] == pytest.approx((3 / norm + 1 / norm) / 2, rel=1e-14)  # cos((1,0),(3,1)), cos((0,1),…)
    # centred: μ_k − μ_G = (1, −1), (−1, 1); μ_ood − μ_G = (2, 0): |cos| = 1/√2 for both
    assert centred["nc5_ood"] == pytest.approx(1 / math.sqrt(2), rel=1e-14)
    assert none["ood_centering"] == "none" and centred["ood_centering"] == "global_mean"


def test_cli_ood_centering_and_notebook_scale(tmp_path, capsys):
    x, y, _ = make_features([30, 20, 10], dim=5, seed=4)
    np.savez(tmp_path / "f.npz", features=x, labels=y)
    np.savez(tmp_path / "ood.npz", features=x[:7] + 3.0)
    base = ["measure", "--features", str(tmp_path / "f.npz"), "--ood", str(tmp_path / "ood.npz"), "--json",
            "--quiet"]
    import json

    results = {}
    for centering in ("none", "global_mean"):
        assert main(base + ["--ood-centering", centering, "--scale", "notebook"]) == 0
        results[centering] = json.loads(capsys.readouterr().out)
    want = measure_features(x, y, ood=x[:7] + 3.0, ood_centering="global_mean", scale="notebook")
    assert results["global_mean"]["nc5_ood"] == pytest.approx(want["nc5_ood"], rel=1e-12)
    assert results["none"]["nc5_ood"] != pytest.approx(want["nc5_ood"], rel=1e-3)
    assert results["none"]["nc1"] == pytest.approx(want["nc1"], rel=1e-10)
    with pytest.raises(SystemExit) as exc:
        main(base + ["--ood-centering", "median"])
    assert exc.value.code == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(base + ["--scale", "papyan"]) == 0
    assert "deprecated" in capsys.readouterr().err

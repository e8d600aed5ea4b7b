"""Tiled pairwise quantities against direct float64 numpy with K x K matrices, on both sides of the
closed-form threshold (far from and close to a simplex ETF / orthogonal frame)."""

import numpy as np
import pytest
import torch

from ncollapse.geometry import simplex_etf
from ncollapse.pairwise import CLOSED_FORM_MIN, Moments, duality_pass, unit_scale, vector_pairs


def _fro_err(mat, target):
    return np.linalg.norm(mat / np.linalg.norm(mat) - target / np.linalg.norm(target))


def _rows(k, d, near, seed=0):
    rng = np.random.default_rng(seed)
    if near:
        base = 3.0 * simplex_etf(k, d, seed=seed).numpy()
        return base + 1e-4 * rng.normal(size=(k, d))
    return rng.normal(size=(k, d))


@pytest.mark.parametrize("near", [False, True])
def test_etf_orth_and_angles_match_direct(near):
    k, d = 50, 64
    v = _rows(k, d, near)
    offset = np.random.default_rng(1).normal(size=d)
    got = vector_pairs(torch.from_numpy(v), 7, offset=torch.from_numpy(offset), orth=True)
    etf = (np.eye(k) - 1 / k)
    want_etf = _fro_err(v @ v.T, etf)
    assert (want_etf ** 2 < CLOSED_FORM_MIN) == near  # both paths are exercised
    assert got["etf_error"] == pytest.approx(want_etf, rel=1e-10)
    u = v + offset
    assert got["orth_error"] == pytest.approx(_fro_err(u @ u.T, np.eye(k)), rel=1e-10)
    n = np.linalg.norm(v, axis=1)
    cos = (v @ v.T / np.outer(n, n))[np.triu_indices(k, 1)]
    assert got["cos_mean"] == pytest.approx(cos.mean(), rel=1e-10, abs=1e-15)
    assert got["cos_std"] == pytest.approx(cos.std(), rel=1e-9)
    assert got["max_angle"] == pytest.approx(np.abs(cos + 1 / (k - 1)).mean(), rel=1e-9)


def test_orthogonal_frame_near_zero_error():
    k, d = 20, 32
    q = np.linalg.qr(np.random.default_rng(2).normal(size=(d, k)))[0].T
    v = q + 1e-6 * np.random.default_rng(3).normal(size=(k, d))
    got = vector_pairs(torch.from_numpy(v), 6, orth=True)
    want = _fro_err(v @ v.T, np.eye(k))
    assert want < 1e-4
    assert got["orth_error"] == pytest.approx(want, rel=1e-8)


@pytest.mark.parametrize("near", [False, True])
def test_self_duality_matches_direct(near):
    k, d = 40, 48
    m = _rows(k, d, near=True, seed=4)
    w = (0.5 * m + 1e-5 * np.random.default_rng(5).normal(size=(k, d))) if near \
        else np.random.default_rng(6).normal(size=(k, d))
    want = _fro_err(w @ m.T, np.eye(k) - 1 / k)
    assert (want ** 2 < CLOSED_FORM_MIN) == near
    assert duality_pass(torch.from_numpy(w), torch.from_numpy(m), 9) == pytest.approx(want, rel=1e-9)


def test_moments_keep_a_tiny_spread():
    values = 1.0 + 1e-9 * torch.arange(10, dtype=torch.float64)
    acc = Moments()
    acc.add(values[:3])
    acc.add(values[3:])
    mean, std = acc.result()
    assert mean == pytest.approx(float(values.mean()), rel=1e-15)
    assert std == pytest.approx(float(values.std(correction=0)), rel=1e-6)


def test_riesz_mean_in_high_dimension_uses_log_space():
    """d = 2000: each kernel value is about 2^-999, below the plain-sum threshold; near-duplicates overflow."""
    v = np.random.default_rng(7).normal(size=(6, 2000))
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    dists = np.array([np.linalg.norm(u[i] - u[j]) for i in range(6) for j in range(i + 1, 6)])
    want = np.mean(np.exp(-(2000 - 2) * np.log(dists)))
    got = vector_pairs(torch.from_numpy(v), 4, gnc2=True)
    assert 0 < want < 1e-280 and got["gnc2_riesz_mean"] == pytest.approx(want, rel=1e-9)
    v[1] = v[0] + 1e-3
    assert vector_pairs(torch.from_numpy(v), 4, gnc2=True)["gnc2_riesz_mean"] == float("inf")


@pytest.mark.parametrize("chunk", [1, 50, 700])
def test_chunked_pairs_equal_one_chunk_and_direct(monkeypatch, chunk):
    """Per-pair work cut into chunks (1-row chunks, small gathered squares on diagonal tiles) gives the same
    sums as one chunk per tile and as direct numpy; NaN variances leave their pairs out of the CDNV."""
    import ncollapse.pairwise as pairwise

    rng = np.random.default_rng(11)
    k, d = 45, 6
    v = rng.normal(size=(k, d))
    var = rng.uniform(0.1, 1.0, size=k)
    var[[3, 17]] = np.nan
    args = dict(variances=torch.from_numpy(var), offset=torch.from_numpy(rng.normal(size=d)), orth=True, gnc2=True)
    whole = vector_pairs(torch.from_numpy(v), 16, **args)
    monkeypatch.setattr(pairwise, "CHUNK", chunk)
    got = vector_pairs(torch.from_numpy(v), 16, **args)
    for key, value in whole.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key
    iu = np.triu_indices(k, 1)
    n = np.linalg.norm(v, axis=1)
    cos = (v @ v.T / np.outer(n, n))[iu]
    dist2 = ((v[:, None, :] - v[None, :, :]) ** 2).sum(-1)[iu]
    ratio = (var[iu[0]] + var[iu[1]]) / (2 * dist2)
    assert got["cdnv"] == pytest.approx(np.nanmean(ratio), rel=1e-10)
    assert got["max_angle"] == pytest.approx(np.abs(cos + 1 / (k - 1)).mean(), rel=1e-10)
    assert got["gnc2_log_mean"] == pytest.approx(np.mean(-0.5 * np.log(2 - 2 * cos)), rel=1e-10)
    assert got["gnc2_riesz_mean"] == pytest.approx(np.mean((2 - 2 * cos) ** (-(d - 2) / 2)), rel=1e-10)


def test_unit_scale_of_subnormal_and_huge_inputs():
    """Exponents beyond ±1000 are applied in two factors (2^1029 alone is no float): still exact."""
    from ncollapse.pairwise import binary_exponent

    tiny = torch.tensor([3.0, -1.5], dtype=torch.float64) * 2.0 ** -1030  # subnormal, exactly representable
    assert binary_exponent(tiny) == -1028
    assert unit_scale(tiny).tolist() == [0.75, -0.375]
    huge = torch.tensor([3.0, -1.5], dtype=torch.float64) * 2.0 ** 1020
    assert unit_scale(huge).tolist() == [0.75, -0.375]
    assert unit_scale(torch.zeros(3, dtype=torch.float64)).tolist() == [0.0, 0.0, 0.0]

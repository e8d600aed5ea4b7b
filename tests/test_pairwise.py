"""Tiled pairwise quantities against direct float64 numpy with K x K matrices, on both sides of the
closed-form threshold (far from and close to a simplex ETF / orthogonal frame)."""

import numpy as np
import pytest
import torch

from ncollapse.geometry import simplex_etf
from ncollapse.pairwise import CLOSED_FORM_MIN, Moments, duality_pass, vector_pairs


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

"""LE-ODE / LE-SDE: simplex ETF when beta > 0 and alpha + (K-1) beta > 0, not otherwise; batched seeds."""

import json

import numpy as np
import pytest
import torch

from ncollapse.cli import main
from ncollapse.lesde import (etf_condition, le_drift, mean_path, mode_rates, separability, separability_formula,
                             simulate)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _block_matrix(k, alpha, beta):
    """The (Kp x Kp) matrix A with blocks E_kl r_k r_l^T (seed eq. 42-43), p = K."""
    r = torch.eye(k, dtype=torch.float64) - 1 / k
    e = (alpha - beta) * torch.eye(k, dtype=torch.float64) + beta
    return torch.cat([torch.cat([e[i, j] * torch.outer(r[i], r[j]) for j in range(k)], 1) for i in range(k)], 0)


def _covariance(k, seed=0):
    """A random positive definite (K^2 x K^2) noise covariance that correlates classes."""
    a = np.random.default_rng(seed).normal(size=(k * k, k * k))
    return a @ a.T / (k * k)


def test_drift_matches_the_block_matrix():
    """Reference: the (Kp x Kp) matrix A with blocks E_kl r_k r_l^T applied to the stacked means."""
    k, alpha, beta = 4, 0.7, 0.3
    a = _block_matrix(k, alpha, beta)
    means = torch.randn(3, k, k, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ref = (means.reshape(3, -1) @ a.T).reshape(3, k, k)
    assert torch.allclose(le_drift(means, alpha, beta), ref, atol=1e-14)
    eig = torch.linalg.eigvalsh((a + a.T) / 2)
    rates = mode_rates(k, alpha, beta)
    assert float(eig.max()) == pytest.approx(rates["etf_mode"]) and rates["other_modes"] == pytest.approx(0.75 * 0.4)


@pytest.mark.parametrize("k, alpha, beta", [(3, 1.0, 0.2), (5, 1.0, 0.3), (4, -0.2, 0.5)])
def test_ode_converges_to_simplex_etf_when_conditions_hold(k, alpha, beta):
    assert etf_condition(k, alpha, beta)
    result = simulate(k, alpha, beta, steps=1000, dt=0.04, seeds=4)
    assert result.etf_expected and result.final("etf_error_means").max() < 1e-3


@pytest.mark.parametrize("k, alpha, beta", [(4, 1.0, -0.2), (4, 1.0, 0.0), (6, 1.0, -0.1), (4, -1.0, 0.2)])
def test_ode_does_not_reach_etf_otherwise(k, alpha, beta):
    assert not etf_condition(k, alpha, beta)
    result = simulate(k, alpha, beta, steps=1000, dt=0.04, seeds=4)
    assert not result.etf_expected and result.final("etf_error_means").min() > 0.05


def test_three_classes_reach_an_etf_from_either_mode():
    """K = 3 is degenerate: a_k r_k with Σ a_k = 0 is an ETF after centring, so β < 0 gives one as well."""
    assert etf_condition(3, 1.0, -0.6) and not etf_condition(3, 1.0, 0.0)
    assert simulate(3, 1.0, -0.6, steps=1000, dt=0.04, seeds=3).final("etf_error_means").max() < 1e-6


def test_sde_collapses_within_class_and_seeds_are_independent():
    result = simulate(4, 1.0, 0.2, steps=1000, dt=0.02, noise=0.5, per_class=6, seeds=3, seed=1)
    nc1 = result.trajectory["nc1"]
    assert result.features.shape == (3, 4, 6, 4)
    assert max(nc1[-1]) < 1e-6 < min(nc1[0]) and result.final("etf_error_means").max() < 1e-2
    assert len(set(nc1[0])) == 3 and result.times[-1] == pytest.approx(20.0)


def test_overflow_is_a_clear_error():
    with pytest.raises(ValueError, match="overflowed by step .*smaller dt"):
        simulate(3, 5.0, 5.0, steps=3000, dt=1.0, seeds=1)


def test_lesde_cli(capsys):
    assert main(["lesde", "--classes", "3", "--alpha", "1", "--beta", "0.2", "--steps", "1000", "--dt", "0.04",
                 "--seeds", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["etf_expected"] is True and max(out["final"]["etf_error_means"]) < 1e-3
    assert main(["lesde", "--classes", "1"]) == 2
    assert "num_classes == 1" in capsys.readouterr().err


@pytest.mark.parametrize("alpha, beta", [(1.0, 0.3), (-0.5, 0.4), (0.7, -0.2)])
def test_mean_path_is_the_matrix_exponential(alpha, beta):
    """X̄(t) = exp(tA) X̄(0) (seed eq. 43), against torch's matrix exponential of the block matrix."""
    k, t = 4, 1.7
    means0 = torch.randn(k, k, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ref = (torch.linalg.matrix_exp(t * _block_matrix(k, alpha, beta)) @ means0.reshape(-1)).reshape(k, k)
    assert torch.allclose(mean_path(means0, alpha, beta, t), ref, atol=1e-12)


def test_sde_noise_has_the_given_covariance():
    """Without drift the representative tuples spread as T·Σ (seed eq. 42 with a general Σ)."""
    k, cov = 3, _covariance(3)
    result = simulate(k, 0.0, 0.0, steps=50, dt=0.02, noise=cov, per_class=6000, seeds=1, init_scale=1e-9,
                      log_points=2)
    tuples = result.features[0].permute(1, 0, 2).reshape(6000, k * k).numpy()
    assert np.abs(np.cov(tuples.T) - cov).max() < 0.08


@pytest.mark.parametrize("alpha, beta, limit, late", [(1.0, 0.2, 1.0, 50.0), (-1.0, 0.2, 0.5, 1e6)])
def test_separability_simulation_matches_the_formula(alpha, beta, limit, late):
    """8,000 paths at once: |simulated − Φ(√(Δᵀ(tS)⁻¹Δ))| within Monte-Carlo error (SE ≈ 0.006)."""
    out = separability(3, alpha, beta, _covariance(3, seed=1), [0.5, 2.0, 6.0], paths=8000, seed=2)
    assert out["max_abs_diff"] < 0.03 and out["limit"] == [limit] * 3
    assert np.array(out["formula"]).min() < 0.99  # the check is not only on saturated probabilities
    means0 = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    late = separability_formula(means0, alpha, beta, _covariance(3, 1), late)
    assert late["probability"] == pytest.approx([limit] * 3, abs=0.02)  # eq. 45: 1 with growth, else 1/2


def test_bad_noise_covariances_are_clear_errors():
    with pytest.raises(ValueError, match=r"shape \(4, 4\); expected .* \(9, 9\)"):
        simulate(3, 1.0, 0.2, noise=np.eye(4))
    with pytest.raises(ValueError, match="not positive semidefinite"):
        simulate(3, 1.0, 0.2, noise=-np.eye(9))
    with pytest.raises(ValueError, match="symmetric"):
        simulate(3, 1.0, 0.2, noise=np.triu(np.ones((9, 9))))
    with pytest.raises(ValueError, match="overflows float64 by t = 1000"):
        mean_path(torch.ones(3, 3, dtype=torch.float64), 1.0, 0.2, 1000.0)
    shared = np.kron(np.ones((3, 3)), np.eye(3))  # every class gets the same noise: X_k − X_l is deterministic
    with pytest.raises(ValueError, match=r"X_\d − X_\d has a singular covariance"):
        separability(3, 1.0, 0.2, shared, [1.0], paths=10)


def test_separability_cli(tmp_path, capsys):
    path = tmp_path / "cov.npy"
    np.save(path, _covariance(3))
    assert main(["lesde", "--classes", "3", "--alpha", "-1", "--beta", "0.2", "--noise-cov", str(path),
                 "--separability", "0.5,2", "--paths", "3000", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["simulated"]) == 2 and out["max_abs_diff"] < 0.05 and out["limit"] == [0.5] * 3
    assert main(["lesde", "--classes", "3", "--noise-cov", str(tmp_path / "missing.txt")]) == 2
    assert "--noise-cov" in (err := capsys.readouterr().err) and "no such file" in err

"""LE-ODE / LE-SDE: simplex ETF when beta > 0 and alpha + (K-1) beta > 0, not otherwise; batched seeds."""

import json

import pytest
import torch

from ncollapse.cli import main
from ncollapse.lesde import etf_condition, le_drift, mode_rates, simulate


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_drift_matches_the_block_matrix():
    """Reference: the (Kp x Kp) matrix A with blocks E_kl r_k r_l^T applied to the stacked means."""
    k, alpha, beta = 4, 0.7, 0.3
    r = torch.eye(k, dtype=torch.float64) - 1 / k
    e = (alpha - beta) * torch.eye(k, dtype=torch.float64) + beta
    a = torch.cat([torch.cat([e[i, j] * torch.outer(r[i], r[j]) for j in range(k)], 1) for i in range(k)], 0)
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

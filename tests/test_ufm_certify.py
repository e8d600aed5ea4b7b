"""ufm.certify: the convex reformulation over Z = WHᵀ against the closed forms and the solver's optima."""

import math

import numpy as np
import pytest
import torch

from ncollapse.ufm import UFMProblem, solve, theory

pytest.importorskip("cvxpy", reason="the theory extra (pip install 'ncollapse[theory]') is not installed")
from ncollapse.ufm.certify import certify  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BALANCED = {
    "ce_none": UFMProblem.balanced(4, 5, 6, loss="ce"),
    "ce_decay": UFMProblem.balanced(4, 5, 6, loss="ce", bias="decay", lambda_b=1e-2),
    "ce_free_tau": UFMProblem.balanced(3, 4, 4, loss="ce", bias="free", temperature=0.5, lambda_w=1e-2),
    "mse_none": UFMProblem.balanced(4, 5, 6, loss="mse"),
    "mse_imbalanced": UFMProblem(loss="mse", counts=(40, 10, 2, 1), dim=5, lambda_w=2e-2, lambda_h=2e-2),
}


@pytest.mark.parametrize("name", sorted(BALANCED))
def test_convex_optimum_matches_the_closed_forms(name):
    p = BALANCED[name]
    cert = certify(p)[0]
    assert cert["status"] == "optimal"
    assert cert["convex_objective"] == pytest.approx(theory.predict(p)["loss"], rel=1e-6)


@pytest.mark.parametrize("problem", [
    UFMProblem(loss="ce", counts=(30, 30, 5, 5), dim=6, lambda_w=1e-3, lambda_h=1e-3),
    UFMProblem(loss="ce", counts=(20, 6, 3), dim=3, lambda_w=2e-3, lambda_h=1e-3, bias="decay"),
    UFMProblem(loss="mse", counts=(20, 6, 3), dim=3, lambda_w=2e-3, lambda_h=1e-3, bias="decay", lambda_b=0.1),
], ids=["ce_none", "ce_decay", "mse_decay"])
def test_imbalanced_solver_optimum_is_certified(problem):
    result = solve(problem, steps=2000, record_metrics=False, certify=True)
    cert = result.certificates[0]
    assert result.converged[0] and abs(cert["relative_gap"]) <= 1e-6
    w, _ = result.classifier(0)
    gram = (w @ w.T).numpy()
    assert np.allclose(cert["classifier_gram"], gram, rtol=1e-4, atol=1e-5 * np.abs(gram).max())
    x, y = result.features(0)
    means = torch.zeros(problem.num_classes, problem.dim, dtype=x.dtype).index_add_(0, y, x)
    means = (means / torch.tensor(problem.counts, dtype=x.dtype)[:, None]).numpy()
    logits = means @ w.numpy().T + (0 if result.classifier(0)[1] is None else result.classifier(0)[1].numpy())
    assert np.allclose(cert["logits"], logits.T, atol=1e-4 * np.abs(logits).max())


def test_lower_bound_for_every_dim_and_strict_below_k():
    """d < K: the MSE optimum needs rank K (orthogonal frame), so the UFM stays strictly above the bound."""
    tight = UFMProblem.balanced(4, 5, 4, loss="mse")
    low = tight.replace(dim=3)
    res = solve([low], steps=2000, record_metrics=False, certify=True)
    assert res.certificates[0]["gap"] > 1e-3
    assert res.certificates[0]["convex_objective"] == pytest.approx(certify(tight)[0]["convex_objective"], rel=1e-9)


def test_ball_model_certificate_matches_fang_et_al_and_projected_gd():
    balanced = UFMProblem.balanced(3, 2, 4, loss="ce", constraint="ball", energy_w=1.0, energy_h=2.0)
    assert certify(balanced)[0]["convex_objective"] == pytest.approx(theory.predict(balanced)["loss"], rel=1e-6)
    p = UFMProblem(loss="ce", counts=(6, 6, 2, 2), dim=4, constraint="ball", energy_w=1.0, energy_h=2.0)
    r = solve(p, optimizer="gd", lr=0.5, steps=4000, tol=1e-8, record_metrics=False, certify=True)
    assert abs(r.certificates[0]["relative_gap"]) <= 1e-6


def test_uncovered_problems_are_refused_before_solving():
    with pytest.raises(ValueError, match="does not cover loss 'supcon'"):
        solve(UFMProblem.balanced(3, 2, 4, loss="supcon"), certify=True)
    with pytest.raises(ValueError, match="λ_W = 0 or λ_H = 0"):
        certify(UFMProblem.balanced(3, 2, 4, loss="mse", lambda_w=0.0, lambda_h=0.0))
    with pytest.raises(ValueError, match="achieved has 2 values for 1 problems"):
        certify(UFMProblem.balanced(3, 2, 4, loss="mse"), achieved=[1.0, 2.0])


def test_balanced_ce_certificate_is_exactly_zhu_et_al():
    """The balanced optimum has the closed form −log(1 − (K−1)s) + (K−1)s log(1/s − K + 1), s = √(nλ_Wλ_H)."""
    k, n, lam = 5, 3, 2e-3
    s = math.sqrt(n) * lam
    closed = -math.log(1 - (k - 1) * s) + (k - 1) * s * math.log(1 / s - k + 1)
    cert = certify(UFMProblem.balanced(k, n, k, loss="ce", lambda_w=lam, lambda_h=lam))[0]
    assert cert["convex_objective"] == pytest.approx(closed, rel=1e-7) and cert["rank"] == k - 1


def test_scs_is_the_fallback_when_clarabel_fails(monkeypatch):
    import cvxpy as cp

    from ncollapse.ufm.certify import ConvexUFM

    p = UFMProblem.balanced(3, 4, 3, loss="mse")
    program = ConvexUFM("mse", 3, "none")
    real = program.program.solve

    def flaky(solver=None, **options):
        if solver == "CLARABEL":
            raise cp.error.SolverError("Clarabel failed")
        return real(solver=solver, **options)

    monkeypatch.setattr(program.program, "solve", flaky)
    cert = program.solve(p)
    assert cert["solver"] == "SCS" and cert["convex_objective"] == pytest.approx(theory.predict(p)["loss"], rel=1e-5)

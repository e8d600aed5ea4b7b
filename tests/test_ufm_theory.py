"""The batched solver reaches every closed form of ncollapse.ufm.theory (rel. error <= 1e-4, loss and geometry)."""

import math

import pytest
import torch
from scipy.optimize import minimize_scalar

from ncollapse.ufm import UFMProblem, solve, theory


@pytest.fixture(autouse=True, scope="module")
def _one_thread():  # tiny tensors: intra-op threads only add overhead
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


CASES = {
    "ce_balanced_no_bias": UFMProblem.balanced(4, 5, 6, loss="ce"),
    "ce_balanced_free_bias": UFMProblem.balanced(4, 5, 6, loss="ce", bias="free", lambda_w=1e-2),
    "ce_balanced_decay_bias": UFMProblem.balanced(5, 3, 4, loss="ce", bias="decay", lambda_h=2e-3),
    "mse_balanced": UFMProblem.balanced(4, 5, 6, loss="mse"),
    "mse_imbalanced_minority_collapse": UFMProblem(loss="mse", counts=(40, 10, 2, 1), dim=5, lambda_w=2e-2,
                                                   lambda_h=2e-2),
    "ce_normalized_sphere": UFMProblem.balanced(4, 4, 5, loss="ce", normalize="both", temperature=0.5),
    "supcon_sphere": UFMProblem.balanced(4, 3, 4, loss="supcon", temperature=0.5),
    "ncmc_p_fixed_frame": UFMProblem(loss="ncmc_p", counts=(8, 4, 2), dim=12, centers_per_class=(1, 2, 4),
                                     lambda_h=1e-2, theta=0.3),
    "ncmc_cosine_fixed_frame": UFMProblem(loss="ncmc_cosine", counts=(6, 3, 2), dim=12, centers_per_class=(2, 2, 3),
                                          lambda_h=1e-3, lambda_norm=0.1),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_solver_reaches_closed_form(name):
    problem = CASES[name]
    pred = theory.predict(problem)
    assert pred is not None and pred["source"]
    result = solve(problem, optimizer="lbfgs", steps=400, tol=1e-8, record_metrics=False)
    gaps = theory.gaps(result, 0, pred)
    assert gaps["loss"] <= 1e-4, gaps
    assert gaps["geometry"] <= 1e-4, gaps
    assert len(gaps) >= 3  # the loss and at least one geometry check besides the maximum


def test_ce_value_matches_one_dimensional_minimisation():
    """Independent reference: minimise log(1+(K-1)e^{-pK/(K-1)}) + K s p over p numerically (float64)."""
    k, n, lw, lh = 5, 7, 3e-3, 2e-3
    s = math.sqrt(n * lw * lh)
    ref = minimize_scalar(lambda p: math.log1p((k - 1) * math.exp(-p * k / (k - 1))) + k * s * p,
                          bounds=(0, 50), method="bounded", options={"xatol": 1e-12})
    pred = theory.predict(UFMProblem.balanced(k, n, k, loss="ce", lambda_w=lw, lambda_h=lh))
    assert pred["loss"] == pytest.approx(ref.fun, rel=1e-10)
    assert pred["own_logit"] == pytest.approx(ref.x, rel=1e-6)


def test_ce_formula_of_the_issue_and_zero_branch():
    k, n, lw, lh = 4, 10, 1e-2, 1e-2
    s = math.sqrt(n * lw * lh)
    issue = -math.log(1 - (k - 1) * s) + (k - 1) * s * math.log(1 / s - k + 1)
    pred = theory.predict(UFMProblem.balanced(k, n, k, loss="ce", lambda_w=lw, lambda_h=lh))
    assert pred["loss"] == pytest.approx(issue)
    big = theory.predict(UFMProblem.balanced(k, n, k, loss="ce", lambda_w=0.2, lambda_h=0.2))
    assert big["geometry"] == "zero" and big["loss"] == pytest.approx(math.log(k))


def test_mse_balanced_formula_and_imbalanced_threshold():
    k, n, lam = 4, 6, 4e-3
    s = math.sqrt(n * lam * lam)
    pred = theory.predict(UFMProblem.balanced(k, n, k, loss="mse", lambda_w=lam, lambda_h=lam))
    assert pred["loss"] == pytest.approx(k * s - k * k * s * s / 2)
    assert pred["own_logits"] == pytest.approx([1 - k * s] * k)
    counts = (100, 30, 3, 1)
    lw = lh = 2e-3
    pred = theory.predict(UFMProblem(loss="mse", counts=counts, dim=4, lambda_w=lw, lambda_h=lh))
    total = sum(counts)
    assert pred["own_logits"] == pytest.approx([max(0.0, 1 - total * math.sqrt(lw * lh / nk)) for nk in counts])
    assert pred["collapsed_classes"] == [k for k, nk in enumerate(counts) if nk <= total ** 2 * lw * lh]


def test_ncmc_feature_norm_is_corollary_3_7():
    f, theta, lam = (1, 3, 5), 0.2, 1e-2
    p = UFMProblem(loss="ncmc_p", counts=(5, 4, 3), dim=12, centers_per_class=f, theta=theta, lambda_h=lam)
    s = sum(fk * nk for fk, nk in zip(f, p.counts))
    for fk, t in zip(f, theory.predict(p)["feature_norms"]):
        cos_a = math.sqrt((math.cos(theta) ** 2 + fk * math.sin(theta) ** 2) / fk)
        assert t == pytest.approx(fk * cos_a / (fk * cos_a ** 2 + lam * s))


def test_no_theory_where_none_applies():
    assert theory.predict(UFMProblem.balanced(3, 4, 4, loss="mse", extra_layers=("linear",))) is None
    assert theory.predict(UFMProblem(loss="ce", counts=(5, 2, 2), dim=4)) is None
    assert theory.predict(UFMProblem.balanced(3, 4, 4, loss="mse", lambda_w=0.0, lambda_h=0.0)) is None


def test_minority_case_really_collapses_a_class():
    pred = theory.predict(CASES["mse_imbalanced_minority_collapse"])
    assert pred["collapsed_classes"] == [3] and pred["geometry"] == "orthogonal_frame_with_collapsed_classes"


def test_ncmc_learned_frame_matches_theorem_3_3_and_a_direct_solve():
    """Thm 3.3/3.4 with V, W_0 learned: optimise the frame norms and H of Loss P directly (torch L-BFGS, float64)."""
    from ncollapse.geometry import orthonormal_basis

    counts, f, theta, lw, lh = (6, 4, 2), (2, 2, 3), 0.3, 1e-2, 1e-3
    pred = theory.ncmc_learned_frame(counts, f, theta, lw, lh)
    k, n, d = 3, 5, 12
    c = math.sqrt((math.cos(theta) ** 2 + f[0] * math.sin(theta) ** 2) / f[0])  # Thm 3.3, balanced, f_k = f
    balanced = theory.ncmc_learned_frame((n,) * k, (f[0],) * k, theta, lw, lh)["classifier_sq_norms"][0]
    assert balanced == pytest.approx((-k * lw + math.sqrt(lw / (n * lh)) * c) / ((lw / (n * lh)) * c * c))
    q = orthonormal_basis(d, sum(f) + k, seed=3).T
    owner = torch.repeat_interleave(torch.arange(k), torch.tensor(f))
    labels = torch.repeat_interleave(torch.arange(k), torch.tensor(counts))
    target = (owner[None, :] == labels[:, None]).double()
    s = sum(a * b for a, b in zip(f, counts))
    rho = torch.ones(k, dtype=torch.float64, requires_grad=True)
    h = torch.randn(sum(counts), d, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_()
    opt = torch.optim.LBFGS([rho, h], max_iter=500, tolerance_grad=1e-12, tolerance_change=0, history_size=50,
                            line_search_fn="strong_wolfe")

    def objective():
        centers = rho[owner, None] * (math.cos(theta) * q[k:] + math.sin(theta) * q[:k][owner])
        return ((h @ centers.T - target).square().sum() / (2 * s) + lw / 2 * rho.square().sum()
                + lh / 2 * h.square().sum())

    def closure():
        opt.zero_grad()
        value = objective()
        value.backward()
        return value

    opt.step(closure)
    assert float(objective().detach()) == pytest.approx(pred["loss"], rel=1e-8)
    assert (rho.detach() ** 2).tolist() == pytest.approx(pred["classifier_sq_norms"], rel=1e-5)
    norms = torch.stack([h.detach()[labels == j].norm(dim=1).mean() for j in range(k)])
    assert norms.tolist() == pytest.approx(pred["feature_norms"], rel=1e-5)
    assert (lw * rho.detach() ** 2).tolist() == pytest.approx((torch.tensor(counts) * lh * norms ** 2).tolist(), rel=1e-5)


def test_ball_constrained_model_reaches_the_simplex_etf_of_fang_et_al():
    """Fang et al. 2021, Thm 3: balanced CE under the energy constraints; projected GD keeps them feasible."""
    p = UFMProblem.balanced(3, 2, 4, loss="ce", constraint="ball", energy_w=1.0, energy_h=2.0)
    r = solve(p, optimizer="gd", lr=2.0, steps=2000, tol=1e-8, record_metrics=False)
    pred = theory.predict(p)
    assert pred["loss"] == pytest.approx(math.log1p(2 * math.exp(-3 * math.sqrt(2.0) / 2)), rel=1e-15)
    gaps = theory.gaps(r, 0)
    assert r.converged[0] and gaps["loss"] < 1e-9 and gaps["geometry"] < 1e-5
    x, _ = r.features(0)
    w, _ = r.classifier(0)
    assert float(w.square().sum(1).mean()) <= 1.0 + 1e-12 and float(x.square().sum(1).mean()) <= 2.0 + 1e-12


def test_ball_projection_is_the_euclidean_projection():
    """Imbalanced counts weight the feature constraint per class (Fang et al. 2021, eq. 3): the projection
    h_i/(1 + μc_i) lands on the boundary and satisfies the KKT condition of min ‖h − h0‖² s.t. Σ c_i‖h_i‖² ≤ E_H."""
    from ncollapse.ufm.stack import Stack

    p = UFMProblem(loss="mse", counts=(5, 2, 1), dim=3, constraint="ball", energy_h=0.05, init_scale=3.0, seed=2)
    stack = Stack([p], "cpu", torch.float64)
    h0 = torch.randn(1, 8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3
    shrink = stack._feature_shrink(h0)[0]
    c = 1.0 / (3 * torch.tensor([5.0, 5, 5, 5, 5, 2, 2, 1], dtype=torch.float64))
    h = h0[0] * shrink[:, None]
    assert float((c * h.square().sum(1)).sum()) == pytest.approx(0.05, rel=1e-12)
    mu = (1 / shrink - 1) / c  # one multiplier for every row
    assert torch.allclose(mu, mu[0].expand_as(mu), rtol=1e-12) and float(mu[0]) > 0


def test_learned_ncmc_frame_reaches_theorem_3_4_with_the_expected_variability():
    """ncmc_frame='learned' (Yan et al. 2024, Thm 3.4) and the variability 1 − cos ρ*_k beside the achieved one."""
    p = UFMProblem(loss="ncmc_p", counts=(6, 4, 2), dim=14, centers_per_class=(2, 2, 3), theta=0.3, lambda_w=1e-2,
                   lambda_h=1e-3, ncmc_frame="learned")
    r = solve(p, steps=2000, record_metrics=False)
    pred = theory.predict(p)
    assert pred["loss"] == theory.ncmc_learned_frame(p.counts, p.centers_per_class, 0.3, 1e-2, 1e-3)["loss"]
    gaps = theory.gaps(r, 0)
    assert r.converged[0] and gaps["loss"] < 1e-10 and gaps["geometry"] < 1e-5
    rho = r.params["rho"][0].abs()
    assert (rho ** 2).tolist() == pytest.approx(pred["classifier_sq_norms"], rel=1e-6)
    cos_rho = math.sin(0.3) / torch.tensor(pred["cos_alpha"], dtype=torch.float64)
    expected = float((torch.tensor([6.0, 4, 2], dtype=torch.float64) * (1 - cos_rho)).sum() / 12)
    assert pred["variability"] == pytest.approx(expected, rel=1e-12)
    assert gaps["variability_achieved"] == pytest.approx(gaps["variability_expected"], abs=1e-6)


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_temperature_enters_the_closed_forms_as_lambda_w_tau_squared(loss):
    """Logits (W/τ)h: the problem with (λ_W, τ) is the one with (λ_W τ², 1) for the effective W/τ."""
    p = UFMProblem.balanced(3, 4, 4, loss=loss, temperature=0.5, lambda_w=1e-2)
    same = UFMProblem.balanced(3, 4, 4, loss=loss, lambda_w=1e-2 * 0.25)
    assert theory.predict(p)["loss"] == pytest.approx(theory.predict(same)["loss"], rel=1e-14)
    r = solve(p, steps=2000, record_metrics=False)
    assert r.converged[0] and theory.gaps(r, 0)["loss"] < 1e-9 and theory.gaps(r, 0)["geometry"] < 1e-5

"""Batched UFM solver: stacking equals separate solves, optimizers, padding, trajectories, divergence."""

import math

import numpy as np
import pytest
import torch

from ncollapse.ufm import UFMDivergenceError, UFMProblem, group_problems, solve, theory
from ncollapse.ufm.stack import Stack


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _mse(counts, seed=0, **kw):
    return UFMProblem(loss="mse", counts=counts, dim=5, seed=seed, **kw)


@pytest.mark.parametrize("optimizer", ["gd", "adam", "flow"])
def test_stacked_solve_equals_separate_solves(optimizer):
    problems = [_mse((4, 4, 4, 4), 0), _mse((9, 5, 2, 1), 1, lambda_w=1e-2), _mse((3, 3, 3, 3), 2, init_scale=0.1)]
    stacked = solve(problems, optimizer=optimizer, steps=30, record_metrics=False)
    for i, p in enumerate(problems):
        alone = solve(p, optimizer=optimizer, steps=30, record_metrics=False)
        assert stacked.objective[i] == pytest.approx(alone.objective[0], rel=1e-12, abs=1e-15)
        x_s, y_s = stacked.features(i)
        x_a, y_a = alone.features(0)
        assert torch.equal(y_s, y_a) and torch.allclose(x_s, x_a, rtol=1e-10, atol=1e-13)


def test_objective_matches_float64_reference_with_padding():
    """The stacked objective equals a direct per-instance formula; padding rows contribute nothing."""
    problems = [UFMProblem(loss="ce", counts=(3, 2), dim=3, bias="decay", seed=4),
                UFMProblem(loss="ce", counts=(6, 5), dim=3, bias="decay", seed=5, lambda_b=0.1)]
    stack = Stack(problems, "cpu", torch.float64)
    tensors = stack.init_params()
    params = dict(zip(stack.names, tensors))
    obj, _ = stack.objective(params)
    for i, p in enumerate(problems):
        n = p.num_samples
        h, w, b = params["H"][i, :n], params["W"][i], params["b"][i] + 0.0
        z = h @ w.T + b
        y = p.labels()
        ce = torch.nn.functional.cross_entropy(z, y, reduction="mean")
        penalty = p.lambda_w * w.square().sum() + p.lambda_h * h.square().sum() + p.lambda_b * b.square().sum()
        ref = ce + penalty / 2
        assert float(obj[i]) == pytest.approx(float(ref), rel=1e-14)


def test_optimizers_reach_the_mse_optimum():
    p = _mse((5, 5, 5, 5))
    target = theory.predict(p)["loss"]
    for optimizer, lr, steps in (("gd", 2.0, 4000), ("adam", 1e-2, 3000), ("flow", 1.0, 800)):
        r = solve(p, optimizer=optimizer, lr=lr, steps=steps, record_metrics=False)
        assert abs(r.objective[0] - target) / target < 1e-3, optimizer


def test_lbfgs_converges_and_reports_gradient_norm():
    r = solve(_mse((5, 5, 5, 5)), optimizer="lbfgs", steps=500, tol=1e-8, record_metrics=False)
    assert r.converged[0] and r.grad_norm[0] <= 1e-8 and 0 < r.steps < 500


def test_trajectory_is_log_spaced_with_metrics():
    r = solve([_mse((4, 4, 4, 4)), _mse((4, 4, 4, 4), 1)], optimizer="gd", steps=100, log_points=6, tol=0.0)
    steps = [e["step"] for e in r.trajectory]
    assert steps[0] == 0 and steps[-1] == 100 and steps == sorted(set(steps))
    gaps = np.diff(steps)
    assert gaps[-1] > gaps[0]  # log spacing
    first, last = r.trajectory[0]["metrics"][0], r.trajectory[-1]["metrics"][0]
    assert last["nc1"] < first["nc1"] and "self_duality" in last
    assert r.trajectory[-1]["objective"][0] == pytest.approx(r.objective[0])


def test_divergence_names_the_step_and_suggests_smaller_lr():
    with pytest.raises(UFMDivergenceError, match=r"diverged at step \d+.*smaller lr than 1000"):
        solve(_mse((3, 3, 3, 3)), optimizer="gd", lr=1000.0, steps=200)


def test_incompatible_problems_and_grouping():
    a, b = _mse((3, 3, 3, 3)), UFMProblem.balanced(4, 3, 5, loss="ce")
    with pytest.raises(ValueError, match="differs from problems\\[0\\] in loss"):
        solve([a, b])
    assert group_problems([a, b, _mse((2, 2, 2, 2), 3)]) == [[0, 2], [1]]
    with pytest.raises(ValueError, match="optimizer == 'sgd'"):
        solve(a, optimizer="sgd")


def test_batchnorm_and_extra_layers():
    p = UFMProblem.balanced(3, 4, 4, loss="mse", normalize="batchnorm", extra_layers=("linear", "relu"))
    r = solve(p, optimizer="adam", steps=20, record_metrics=False)
    x, _ = r.features(0)
    assert torch.allclose(x.mean(0), torch.zeros(4, dtype=x.dtype), atol=1e-12)
    assert torch.allclose(x.var(0, correction=0), torch.ones(4, dtype=x.dtype), atol=1e-6)
    assert bool((r.features(0, layer=2)[0] >= 0).all())  # ReLU output
    assert set(r.params) == {"H", "layer0", "W"}


def test_fixed_classifier_stays_fixed_and_is_stacked_per_seed():
    problems = [UFMProblem.balanced(4, 3, 3, loss="ce", fixed_classifier=kind, lambda_h=1e-3, seed=s)
                for kind, s in (("etf", 0), ("cube", 1), ("orthoplex", 2))]
    r = solve(problems, optimizer="lbfgs", steps=50, record_metrics=False)
    for i, p in enumerate(problems):
        assert torch.allclose(r.classifier(i)[0], p.fixed_weights())
    w = r.classifier(0)[0]
    assert torch.allclose(w @ w.T, (torch.eye(4) * 4 / 3 - 1 / 3).double(), atol=1e-12)


def test_init_scale_sets_row_norms():
    r = solve(UFMProblem.balanced(3, 200, 50, loss="mse", init_scale=0.01), optimizer="gd", steps=0)
    x, _ = r.features(0)
    assert float(x.norm(dim=1).mean()) == pytest.approx(0.01, rel=0.05)
    assert math.isfinite(r.objective[0])


@pytest.mark.parametrize("optimizer", ["gd", "adam"])
def test_torch_optim_steps_equal_the_hand_written_updates(optimizer):
    """solve's torch.optim SGD / Adam take the textbook steps: θ ← θ − lr g, and Kingma & Ba 2015, Alg. 1."""
    problems = [_mse((4, 3, 2), 0, bias="decay"), _mse((2, 3, 4), 1, bias="decay")]
    steps, lr = 40, (0.3 if optimizer == "gd" else 0.05)
    result = solve(problems, optimizer=optimizer, lr=lr, steps=steps, tol=0.0, record_metrics=False)
    stack = Stack(problems, "cpu", torch.float64)
    tensors = stack.init_params()
    m = [torch.zeros_like(t) for t in tensors]
    v = [torch.zeros_like(t) for t in tensors]
    for step in range(1, steps + 1):
        grads = stack.value_and_grad(tensors)[2]
        for i, g in enumerate(grads):
            if optimizer == "gd":
                tensors[i] = tensors[i] - lr * g
                continue
            m[i] = 0.9 * m[i] + 0.1 * g
            v[i] = 0.999 * v[i] + 0.001 * g * g
            m_hat, v_hat = m[i] / (1 - 0.9 ** step), v[i] / (1 - 0.999 ** step)
            tensors[i] = tensors[i] - lr * m_hat / (torch.sqrt(v_hat) + 1e-8)
    for name, t in zip(stack.names, tensors):
        assert torch.allclose(result.params[name], t, rtol=1e-12, atol=1e-14), name

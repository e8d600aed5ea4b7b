"""Minority-collapse threshold R0 and the (R, λ) phase diagram on certified optima."""

import json
import math

import numpy as np
import pytest

pytest.importorskip("cvxpy", reason="the theory extra (pip install 'ncollapse[theory]') is not installed")
from ncollapse.cli import main  # noqa: E402
from ncollapse.ufm.phase import closed_form_threshold, collapse_threshold, minority_cosine, phase_diagram  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_minority_cosine_counts_vanished_classifiers_as_collapsed():
    w = np.array([[1.0, 0, 0], [0, 1.0, 0], [1.0, 1.0, 0], [1.0, 1.0, 1e-9]])
    assert minority_cosine(w @ w.T, [0, 1]) == pytest.approx(0.0)
    assert minority_cosine(w @ w.T, [2, 3]) == pytest.approx(1.0)
    v = np.array([[2.0, 0], [1e-5, 0], [0, 1e-5]])  # two vanished classes: w_k − w_k' → 0 (Fang et al., Thm 5)
    assert minority_cosine(v @ v.T, [1, 2]) == 1.0


def test_mse_threshold_matches_the_closed_form():
    """MSE: class k vanishes iff √n_k ≤ Nλ (theory's SVT); R0 from the smaller root of K_Bλx² − x + K_Aλn_A = 0."""
    out = collapse_threshold(2, 2, 2e-2, loss="mse", n_majority=20, rtol=1e-4)
    x = math.sqrt(20 / out["analytic_R0"])
    assert x == pytest.approx(2e-2 * (2 * 20 + 2 * x * x), rel=1e-12)
    assert out["bracket"][0] <= out["analytic_R0"] * (1 + 1e-6) and out["R0"] >= out["analytic_R0"] * (1 - 1e-6)
    assert out["R0"] / out["bracket"][0] <= 1 + 1e-4
    assert closed_form_threshold(2, 2, 1.0, 20) is None  # every class vanishes already


def test_ce_threshold_bisects_a_monotone_cosine_to_the_closed_form():
    out = collapse_threshold(2, 2, 2e-2, loss="ce", n_majority=20, eps=1e-4)
    cos = np.asarray(out["minority_cosine"])
    assert out["R0"] == pytest.approx(out["analytic_R0"], rel=2e-3)  # the same √n_B = λN as MSE (docs/ufm.md §5)
    assert np.all(np.diff(cos) >= -1e-6) and cos[0] == pytest.approx(-1 / 3, abs=1e-4)
    ratios = np.asarray(out["ratios"])
    assert cos[ratios == out["R0"]][0] > 1 - 1e-4 and cos[ratios == out["bracket"][0]][0] <= 1 - 1e-4


def test_phase_diagram_cells_are_solved_and_certified(tmp_path, capsys):
    argv = ["ufm", "sweep", "--ratios", "1,6", "--lambdas", "1e-3,1e-2", "--majority", "2", "--minority", "2",
            "--dim", "4", "--n-majority", "12", "--out", str(tmp_path), "--json", "--quiet"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert (tmp_path / "phase.png").stat().st_size > 0 and json.loads((tmp_path / "phase.json").read_text())
    assert np.asarray(data["converged"]).all() and np.abs(data["relative_gap"]).max() <= 1e-6
    assert np.allclose(data["minority_cosine"], data["certified_minority_cosine"], atol=1e-4)
    assert data["minority_cosine"][0][0] == pytest.approx(-1 / 3, abs=1e-6)
    assert data["achieved_ratios"] == [1.0, 6.0]


def test_threshold_cli_writes_figure_and_phase_needs_axes(tmp_path, capsys):
    assert main(["ufm", "threshold", "--majority", "2", "--minority", "2", "--lambda", "2e-2", "--loss", "mse",
                 "--n-majority", "20", "--out", str(tmp_path)]) == 0
    assert "R0 = 29.2" in capsys.readouterr().out and (tmp_path / "threshold.png").exists()
    assert main(["ufm", "sweep", "--ratios", "1,2", "--out", str(tmp_path)]) == 2
    assert "needs --ratios, --lambdas and --out" in capsys.readouterr().err
    with pytest.raises(ValueError, match="k_minority == 1"):
        phase_diagram(2, 1, 4, [1.0], [1e-3])


@pytest.mark.parametrize("loss, bias", [("ce", "decay"), ("mse", "free")])
def test_minority_logits_merge_exactly_at_the_closed_form(loss, bias):
    """√n_B = τλN (docs/ufm.md §5): the minority classes' logit columns differ 1 % below R0 and coincide above."""
    from ncollapse.ufm import UFMProblem
    from ncollapse.ufm.certify import ConvexUFM

    ka, kb, lam, na = 3, 3, 3e-3, 50
    r0 = closed_form_threshold(ka, kb, lam, na)
    p = UFMProblem(loss=loss, counts=(na,) * 6, dim=6, lambda_w=lam, lambda_h=lam, bias=bias)
    program = ConvexUFM(loss, 6, bias)
    spread = []
    for factor in (0.99, 1.01):
        logits = program.solve(p, [na] * ka + [na / (factor * r0)] * kb)["logits"]
        minority = logits[:, ka:]
        spread.append(np.abs(minority - minority.mean(1, keepdims=True)).max() / np.abs(logits).max())
    assert spread[0] > 1e-3 and spread[1] < 1e-4  # the conic solver leaves ~1e-5

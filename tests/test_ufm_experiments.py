"""The five UFM experiments (tiny sizes): files written, and the effect each one is about."""

import importlib.util
import json

import pytest

from ncollapse.cli import main
from ncollapse.ufm.experiments import EXPERIMENTS, run_experiment


pytestmark = pytest.mark.usefixtures("one_torch_thread")


NAMES = [name for name in EXPERIMENTS if name != "max_margin" or importlib.util.find_spec("cvxpy")]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ufm")
    return out, {name: run_experiment(name, out, size="tiny") for name in NAMES}


def test_every_experiment_writes_json_and_png(results):
    out, data = results
    for name in NAMES:
        assert json.loads((out / f"{name}.json").read_text()) == data[name]
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_nc_dynamics_collapses_over_steps(results):
    for run in results[1]["nc_dynamics"]["runs"].values():
        assert run["nc1"][-1] < 0.1 * run["nc1"][0] and run["objective"][-1] < run["objective"][0]


def test_minority_collapse_grows_with_ratio(results):
    data = results[1]["minority_collapse"]
    cos = data["minority_cos_weights_mean"]
    assert cos[0] == pytest.approx(-1 / 3, abs=1e-4)  # balanced: simplex ETF of K = 4
    assert cos[-1] > cos[0] + 0.5
    if importlib.util.find_spec("cvxpy"):  # the L-BFGS solves are the certified global optima (d ≥ K)
        assert len(data["relative_gap"]) == len(cos) and max(abs(g) for g in data["relative_gap"]) < 1e-6
    else:
        assert data["certificate"].startswith("not run")


def test_small_init_and_extended_and_fixed(results):
    data = results[1]
    small = data["small_init"]  # σ = 1e-2 reaches strong neural collapse (Mixon et al.), σ = 1 does not
    assert small["nc1"][0] < small["nc1"][-1]
    assert small["snc_gram"][0] < 1e-3 and small["snc_gram"][-1] > 0.1
    assert small["snc_feature"][0] < 0.05 < 0.5 < small["snc_feature"][-1]
    linear = data["extended"]["runs"]["linear"]
    assert linear["nc1_H"] < 1e-6 and linear["nc1_last"] < 1e-6
    geo = data["fixed_classifiers"]["geometries"]
    assert geo["etf"]["min_margin"] > geo["cube"]["min_margin"] and geo["etf"]["accuracy"] == 1.0


def test_gradient_descent_turns_towards_the_max_margin_solution(results):
    """Ji et al. 2022: the direction of unregularised CE GD tends to the max-margin one (slowly, like 1/log t)."""
    if "max_margin" not in results[1]:
        pytest.skip("the theory extra (cvxpy) is not installed")
    for run in results[1]["max_margin"]["runs"].values():
        for key in ("cos_logits", "cos_params", "margin_ratio"):
            assert all(a < b for a, b in zip(run[key], run[key][1:])), (key, run[key])
        assert run["cos_logits"][-1] > 0.97 and run["cos_params"][-1] > 0.9 and run["margin_ratio"][-1] <= 1


def test_experiment_cli(tmp_path, capsys):
    assert main(["ufm", "experiment", "fixed_classifiers", "--out", str(tmp_path), "--size", "tiny", "--quiet"]) == 0
    assert (tmp_path / "fixed_classifiers.png").exists()

"""`ncollapse ufm` and `ncollapse ufm sweep`: JSON contract, theory gap, bad input exits 2 with one line."""

import json
from pathlib import Path

import pytest

from ncollapse.cli import main
from ncollapse.geometry import class_aware_centers

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "ufm"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _json(capsys, argv):
    assert main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    return json.loads(out[0])


def test_ufm_json_has_the_contract_keys(capsys):
    out = _json(capsys, ["ufm", "--loss", "ce", "--classes", "4", "--per-class", "5", "--dim", "6", "--json",
                         "--quiet"])
    assert {"loss", "steps", "converged", "metrics", "theory", "theory_gap"} <= set(out)
    assert out["converged"] is True and out["theory"]["geometry"] == "simplex_etf"
    assert out["theory_gap"] < 1e-6 and out["loss"] == pytest.approx(out["theory"]["loss"], rel=1e-6)
    assert out["metrics"]["etf_error_weights"] < 1e-4 and out["metrics"]["ncc_mismatch"] == 0.0


def test_ufm_certify_json_matches_closed_form_and_imbalanced_solver(capsys):
    pytest.importorskip("cvxpy", reason="the theory extra is not installed")
    out = _json(capsys, ["ufm", "--loss", "mse", "--classes", "4", "--per-class", "5", "--dim", "6", "--certify",
                         "--json", "--quiet"])
    assert out["certificate"]["convex_objective"] == pytest.approx(out["theory"]["loss"], rel=1e-6)
    out = _json(capsys, ["ufm", "--loss", "ce", "--counts", "30,30,5,5", "--dim", "4", "--lambda-w", "1e-3",
                         "--lambda-h", "1e-3", "--certify", "--json", "--quiet"])
    assert out["theory"] is None and abs(out["certificate"]["relative_gap"]) <= 1e-6
    assert out["certificate"]["gap"] == pytest.approx(out["loss"] - out["certificate"]["convex_objective"])


def test_ufm_ball_and_learned_frame_options(capsys):
    out = _json(capsys, ["ufm", "--loss", "ce", "--classes", "3", "--per-class", "2", "--dim", "4", "--constraint",
                         "ball", "--energy-h", "2", "--optimizer", "gd", "--lr", "2", "--json", "--quiet"])
    assert out["converged"] and out["theory_gap"] < 1e-9 and out["problem"]["constraint"] == "ball"
    out = _json(capsys, ["ufm", "--loss", "ncmc_p", "--counts", "6,4,2", "--dim", "14", "--centers-per-class",
                         "2,2,3", "--ncmc-frame", "learned", "--lambda-w", "1e-2", "--lambda-h", "1e-3", "--json",
                         "--quiet"])
    gaps = out["theory_gaps"]
    assert out["theory_gap"] < 1e-9 and gaps["variability_achieved"] == pytest.approx(gaps["variability_expected"],
                                                                                       abs=1e-6)


def test_ufm_imbalanced_mse_and_ncmc(capsys):
    out = _json(capsys, ["ufm", "--loss", "mse", "--counts", "30,10,1", "--dim", "3", "--lambda-w", "3e-2",
                         "--lambda-h", "3e-2", "--json"])
    assert out["theory"]["collapsed_classes"] == [2] and out["theory_gap"] < 1e-6
    out = _json(capsys, ["ufm", "--loss", "ncmc_p", "--counts", "6,3,2", "--dim", "12", "--centers", "3",
                         "--lambda-h", "1e-2", "--json"])
    assert out["problem"]["centers_per_class"] == class_aware_centers((6, 3, 2), 3)
    assert out["theory_gaps"]["geometry"] < 1e-4


def test_no_theory_gives_null(capsys):
    out = _json(capsys, ["ufm", "--loss", "mse", "--classes", "4", "--extra-layers", "linear,relu", "--steps", "20",
                         "--json"])
    assert out["theory"] is None and out["theory_gap"] is None


@pytest.mark.parametrize("argv, message", [
    (["ufm", "--counts", "5,0,3"], "counts[1] == 0"),
    (["ufm", "--classes", "4", "--lambda-h", "-1"], "lambda_h == -1.0, must be >= 0"),
    (["ufm", "--classes", "6", "--dim", "3"], "dim == 3 is below K - 1 = 5"),
    (["ufm", "--classes", "4", "--optimizer", "gd", "--lr", "1000", "--steps", "300"], "diverged at step"),
])
def test_bad_input_exits_2_with_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


@pytest.mark.parametrize("argv, message", [
    (["ufm", "--loss", "hinge"], "invalid choice: 'hinge'"),
    (["ufm", "--optimizer", "newton"], "invalid choice: 'newton'"),
    (["ufm", "experiment", "nope", "--out", "x"], "invalid choice: 'nope'"),
])
def test_unknown_names_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_divergence_never_writes_nan_json(capsys):
    assert main(["ufm", "--classes", "4", "--optimizer", "gd", "--lr", "1000", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "smaller lr" in captured.err


def test_sweep_runs_stacked_and_writes_json(tmp_path, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text('[problem]\nloss = "mse"\nclasses = 3\nper_class = 4\ndim = 3\n'
                    '[grid]\nlambda_h = [1e-3, 1e-2]\nseed = [0, 1]\n[solver]\nsteps = 300\n')
    out = _json(capsys, ["ufm", "sweep", "--grid", str(grid), "--out", str(tmp_path / "s.json"), "--json"])
    assert out["num_instances"] == 4 and out["num_groups"] == 1
    assert all(inst["theory_gap"] < 1e-6 for inst in out["instances"])
    assert json.loads((tmp_path / "s.json").read_text())["instances"][3]["point"] == {"lambda_h": 1e-2, "seed": 1}


def test_sweep_groups_incompatible_points(tmp_path, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text('[problem]\nclasses = 3\nper_class = 3\ndim = 3\n[grid]\nloss = ["ce", "mse"]\n'
                    '[solver]\nsteps = 200\n')
    out = _json(capsys, ["ufm", "sweep", "--grid", str(grid), "--json"])
    assert out["num_groups"] == 2 and [i["theory"]["geometry"] for i in out["instances"]] == ["simplex_etf",
                                                                                                "orthogonal_frame"]


@pytest.mark.parametrize("text, message", [
    ('[grid]\nlamda_h = [1e-3]\n', "[grid] has unknown key 'lamda_h'"),
    ('[problem]\nloss = "mse"\n[extra]\nx = 1\n', "unknown table 'extra'"),
    ('[problem]\nloss = "mse"\nclasses = 3\nper_class = 2\ndim = 3\n[solver]\noptimizer = "sgd"\n',
     "optimizer == 'sgd'"),
    ('[problem\n', "not valid TOML"),
])
def test_bad_grid_exits_2(tmp_path, capsys, text, message):
    grid = tmp_path / "bad.toml"
    grid.write_text(text)
    assert main(["ufm", "sweep", "--grid", str(grid)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "bad.toml" in err[0]


def test_shipped_grids_are_valid():
    from ncollapse.ufm.experiments import _problem_from, load_grid

    for path in sorted(CONFIGS.glob("*.toml")):
        config = load_grid(path)
        _problem_from({**config["problem"], **{k: v[0] for k, v in config["grid"].items()}}, str(path))

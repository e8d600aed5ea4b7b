"""LE-ODE fit: (α, β) recovered from exact ODE trajectories, and the lesde-fit experiment end to end on digits."""

import json

import numpy as np
import pytest
import torch

from ncollapse.cli import main
from ncollapse.experiments import lesde_fit
from ncollapse.experiments.lesde_fit import class_mean_logits
from ncollapse.lesde import fit_le_ode, mean_path
from ncollapse.train import config_from_dict

TINY = {"data": {"name": "digits", "augment": []}, "model": {"name": "mlp", "options": {"widths": [32, 32]}},
        "optim": {"lr": 0.1}, "schedule": {"name": "constant", "warmup_epochs": 0},
        "train": {"epochs": 4, "batch_size": 64, "threads": 1}, "eval": {"nc_every": 2}}


@pytest.mark.parametrize("alpha, beta", [(1.0, 0.3), (0.5, -0.2), (-0.3, 0.4)])
def test_fit_recovers_alpha_and_beta_of_an_exact_trajectory(alpha, beta):
    """Trajectories of the exact LE-ODE (K = 5, Δt = 0.05): the trapezoidal fit is off by O(Δt²), residual ~ 0."""
    means0 = torch.randn(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    times = np.arange(61) * 0.05
    traj = torch.stack([mean_path(means0, alpha, beta, float(t)) for t in times]) + 7.0  # a shift along 1 is ignored
    fit = fit_le_ode(times, traj)
    assert fit["alpha"] == pytest.approx(alpha, abs=1e-3) and fit["beta"] == pytest.approx(beta, abs=1e-3)
    assert fit["residual"] < 1e-10 and fit["etf_condition"] == (beta > 0)


def test_fit_with_noise_stays_close_and_reports_the_residual():
    means0 = torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    times = np.arange(41) * 0.05
    traj = torch.stack([mean_path(means0, 1.0, 0.3, float(t)) for t in times])
    noisy = traj + 1e-3 * torch.randn(traj.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    fit = fit_le_ode(times, noisy)
    assert fit["alpha"] == pytest.approx(1.0, abs=0.02) and fit["beta"] == pytest.approx(0.3, abs=0.02)
    assert 1e-4 < fit["residual"] < 0.2


def test_fit_rejects_bad_trajectories():
    with pytest.raises(ValueError, match=r"expected \(T, K, K\)"):
        fit_le_ode([0, 1, 2], np.zeros((3, 4, 5)))
    with pytest.raises(ValueError, match="at least 2 points"):
        fit_le_ode([0], np.zeros((1, 3, 3)))
    with pytest.raises(ValueError, match="strictly increasing"):
        fit_le_ode([0, 1, 1], np.zeros((3, 3, 3)))


def test_class_mean_logits_by_hand():
    class Logits(torch.nn.Module):
        def forward(self, x):
            return x, 2 * x

    x = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0]])
    y = torch.tensor([0, 0, 1])
    assert torch.equal(class_mean_logits(Logits(), [(x, y)], 2), torch.tensor([[4.0, 2.0], [0.0, 10.0]]).double())


def test_lesde_fit_experiment_on_digits(tmp_path):
    result = lesde_fit(config_from_dict(TINY), tmp_path / "fit", {"record_every": 1})
    saved = json.loads((tmp_path / "fit" / "results.json").read_text())
    assert saved["fit"] == json.loads(json.dumps(result["fit"])) and saved["fit"]["points"] == 4
    means = np.array(saved["class_mean_logits"])
    assert means.shape == (4, 10, 10) and len(saved["local_fits"]) == 3
    refit = fit_le_ode([1, 2, 3, 4], means)
    assert refit["alpha"] == pytest.approx(saved["fit"]["alpha"]) and 0 <= saved["fit"]["residual"] <= 1
    metrics = [json.loads(line) for line in (tmp_path / "fit" / "metrics.jsonl").read_text().splitlines()]
    assert sum("lesde/mean_logit_norm" in m for m in metrics) == 4
    assert (tmp_path / "fit" / "lesde_fit.png").exists() and "LE-ODE" in (tmp_path / "fit" / "report.html").read_text()


def test_lesde_fit_needs_three_records(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text('[data]\nname = "digits"\naugment = []\n[model]\nname = "mlp"\noptions = {widths = [16]}\n'
                      '[schedule]\nwarmup_epochs = 0\n[train]\nepochs = 4\nthreads = 1\n'
                      '[experiment]\nrecord_every = 3\n')
    assert main(["experiment", "lesde-fit", "--config", str(config), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "needs at least 3 recorded epochs; got 2" in capsys.readouterr().err
    assert not (tmp_path / "o" / "checkpoint.pt").exists()  # refused before training

import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import RidgeClassifier

from ncollapse.experiments import transfer
from ncollapse.experiments.fewshot import _sample, few_shot_episodes, ncc_scores, ridge_scores
from ncollapse.train import config_from_dict

TINY = {"data": {"name": "digits", "augment": []}, "model": {"name": "mlp", "options": {"widths": [32, 32]}},
        "optim": {"lr": 0.1}, "schedule": {"name": "constant", "warmup_epochs": 0},
        "train": {"epochs": 2, "batch_size": 64, "threads": 1}, "eval": {"nc_every": 1}}


def test_ridge_scores_match_sklearn_ridge_classifier():
    gen = torch.Generator().manual_seed(0)
    support = torch.randn(2, 15, 40, generator=gen, dtype=torch.float64)
    labels = torch.arange(3).repeat_interleave(5)
    pool = torch.randn(30, 40, generator=gen, dtype=torch.float64)
    scores = ridge_scores(support, labels, pool, 3, lam=0.7)
    for e in range(2):
        ref = RidgeClassifier(alpha=0.7).fit(support[e].numpy(), labels.numpy())
        np.testing.assert_allclose(scores[e].numpy(), ref.decision_function(pool.numpy()), atol=1e-9)


def test_ncc_scores_pick_the_nearest_support_mean():
    gen = torch.Generator().manual_seed(1)
    support = torch.randn(4, 6, 5, generator=gen, dtype=torch.float64)  # 3 classes x 2 shots
    pool = torch.randn(20, 5, generator=gen, dtype=torch.float64)
    means = support.view(4, 3, 2, 5).mean(2)
    nearest = torch.cdist(pool[None].expand(4, -1, -1), means).argmin(2)
    assert torch.equal(ncc_scores(support, 2, pool).argmax(2), nearest)


def test_sample_draws_distinct_indices_of_each_class():
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 2, 2, 2, 0])
    idx = _sample(labels, 3, 3, episodes=50, gen=torch.Generator().manual_seed(0))
    assert idx.shape == (50, 3, 3)
    assert torch.equal(labels[idx], torch.arange(3)[None, :, None].expand(50, 3, 3))
    assert all(len(set(row.tolist())) == 3 for row in idx.reshape(-1, 3))
    with pytest.raises(ValueError, match="class 1 has 3 samples; 4 per episode"):
        _sample(labels, 3, 4, episodes=2, gen=torch.Generator())


def test_few_shot_is_exact_on_separated_classes_and_chance_free():
    centers = 10.0 * torch.eye(4, 8, dtype=torch.float64)
    y = torch.arange(4).repeat_interleave(20)
    gen = torch.Generator().manual_seed(0)
    x = centers[y] + 0.1 * torch.randn(80, 8, generator=gen, dtype=torch.float64)
    acc = few_shot_episodes(x, y, x, y, 4, shots=1, episodes=30, queries=5, lam=1.0)
    assert acc["ncc"].shape == (30,) and torch.all(acc["ncc"] == 1.0) and torch.all(acc["ridge"] == 1.0)


def test_transfer_experiment_on_digits(tmp_path):
    cfg = config_from_dict(TINY)
    out = tmp_path / "tr"
    result = transfer(cfg, out, {"shots": [1, 5], "episodes": 40, "queries": 10, "probe_every": 1})
    assert result["source_classes"] == ["0", "1", "2", "3", "4"]
    traj = result["trajectory"]
    assert [t["epoch"] for t in traj] == [1, 2]
    for n in (1, 5):
        for method in ("ncc", "ridge"):
            assert 0.3 < result["final"][f"{method}_{n}shot"] <= 1.0  # 5-way: chance is 0.2
    assert result["final"]["ridge_5shot"] > result["final"]["ridge_1shot"]
    run = json.loads((out / "run.json").read_text())
    assert run["num_classes"] == 5 and run["class_names"] == ["0", "1", "2", "3", "4"]
    assert (out / "report.html").read_text().count("<img") >= 3 and (out / "transfer.png").is_file()
    with pytest.raises(ValueError, match="must be disjoint"):
        transfer(cfg, tmp_path / "bad", {"source_classes": [0, 1], "target_classes": [1, 2]})

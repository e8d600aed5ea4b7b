import json

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from ncollapse.experiments import cdnv_gap, train_test_collapse
from ncollapse.experiments.cdnv import spearman
from ncollapse.experiments.split_collapse import collapse_on_splits
from ncollapse.metrics import measure_features
from ncollapse.train import config_from_dict

TINY = {"data": {"name": "digits", "augment": []}, "model": {"name": "mlp", "options": {"widths": [32, 32]}},
        "optim": {"lr": 0.1}, "schedule": {"name": "constant", "warmup_epochs": 0},
        "train": {"epochs": 2, "batch_size": 64, "threads": 1}, "eval": {"nc_every": 1}}


class _Identity(torch.nn.Module):
    """features = inputs, logits = W h + b: a model whose features the test chooses."""

    def __init__(self, W, b):
        super().__init__()
        self.head = torch.nn.Linear(W.shape[1], W.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(W)
            self.head.bias.copy_(b)

    def forward(self, x):
        return x, self.head(x)


def test_collapse_on_splits_against_direct_measurement():
    gen = torch.Generator().manual_seed(0)
    means = 3.0 * torch.randn(4, 6, generator=gen)
    y_tr, y_te = torch.arange(4).repeat(25), torch.arange(4).repeat(10)
    x_tr = means[y_tr] + 0.05 * torch.randn(100, 6, generator=gen)
    x_te = means[y_te] + 1.5 * torch.randn(40, 6, generator=gen)
    W, b = torch.randn(4, 6, generator=gen), torch.randn(4, generator=gen)
    model = _Identity(W, b)
    out = collapse_on_splits(model, [(x_tr, y_tr)], [(x_te, y_te)], 4)
    pred = (x_te @ W.T + b).argmax(1)
    ref_strong = measure_features(x_te.double(), y_te, num_classes=4)
    ref_weak = measure_features(x_te.double(), pred, num_classes=4)
    ref_train = measure_features(x_tr.double(), y_tr, num_classes=4)
    assert out["train/nc1"] == pytest.approx(ref_train["nc1"], rel=1e-9)
    assert out["test/nc1"] == pytest.approx(ref_strong["nc1"], rel=1e-9)
    assert out["test_weak/nc1"] == pytest.approx(ref_weak["nc1"], rel=1e-9)
    assert out["test/cdnv"] == pytest.approx(ref_strong["cdnv"], rel=1e-9)
    assert out["train/nc1"] < 1e-2 < out["test/nc1"]  # tight train clusters, noisy test clusters
    train_means = torch.stack([x_tr[y_tr == k].mean(0) for k in range(4)])
    ncc = torch.cdist(x_te, train_means).argmin(1)
    assert out["test/ncc_acc"] == pytest.approx(float((ncc == y_te).double().mean()))
    assert out["test/acc"] == pytest.approx(float((pred == y_te).double().mean()))
    assert out["gap"] == pytest.approx(out["train/acc"] - out["test/acc"])


def test_spearman_matches_scipy():
    x, y = [0.3, 0.1, 0.2, 0.9, 0.5], [1.0, 3.0, 2.0, 0.5, 0.5]
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_test_collapse_and_cdnv_gap_on_digits(tmp_path):
    cfg = config_from_dict({**TINY, "train": {**TINY["train"], "epochs": 8}})
    result = train_test_collapse(cfg, tmp_path / "tc", {"probe_every": 3})
    traj = result["trajectory"]
    assert [t["epoch"] for t in traj] == [3, 6, 8]
    assert traj[-1]["train/nc1"] < traj[0]["train/nc1"]
    final = result["final"]
    assert final["train/nc1"] < final["test/nc1"]  # the review's §4.1: test collapse lags train collapse
    assert result["nc1_test_over_train"] == pytest.approx(final["test/nc1"] / final["train/nc1"])
    metrics = [json.loads(line) for line in (tmp_path / "tc" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["test/nc1"] == pytest.approx(final["test/nc1"]) and "nc/nc1" in metrics[-1]
    assert (tmp_path / "tc" / "report.html").read_text().count("<img") >= 5

    gap = cdnv_gap(cfg, tmp_path / "cg", {"probe_every": 2})
    assert [t["epoch"] for t in gap["trajectory"]] == [2, 4, 6, 8]
    last = gap["trajectory"][-1]
    assert gap["final"]["gap"] == pytest.approx(last["train/acc"] - last["test/acc"])
    assert gap["test_over_train_cdnv"] > 1.0
    assert -1.0 <= gap["spearman_test_cdnv_gap"] <= 1.0

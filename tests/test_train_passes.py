"""Evaluation passes: confusion counts, progress bars, and NC of test features that never change a training run."""

import json

import torch

from ncollapse.train import load_config, train
from ncollapse.train.dist import DistContext
from ncollapse.train.evaluate import run_pass
from test_train_evaluate import _batches, _Identity

BASE = ["data.name=\"digits\"", "data.imbalance=0.1", "data.pad=1", "model.name=\"mlp\"",
        "model.options={widths=[32, 32]}", "train.epochs=3", "train.batch_size=32", "data.augment=[]", "train.threads=1",
        "schedule.warmup_epochs=1", "optim.lr=0.05", "eval.group_thresholds=[60, 15]"]
CPU = DistContext(0, 1, torch.device("cpu"))


def test_confusion_counts_worked_by_hand(capsys):
    W = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    result = run_pass(_Identity(W, torch.zeros(3)), _batches(), 3, CPU, confusion=True)
    # every sample right except the last (true 2, predicted 0)
    assert result.confusion.tolist() == [[2, 0, 0], [0, 2, 0], [1, 0, 1]]
    assert capsys.readouterr().err == ""  # no bar unless asked


def test_progress_bar_goes_to_stderr(capsys):
    W = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    run_pass(_Identity(W, torch.zeros(3)), _batches(), 3, CPU, progress=True, desc="test pass")
    captured = capsys.readouterr()
    assert "test pass" in captured.err and captured.out == ""


def _lines(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def test_nc_passes_on_train_and_test_features_leave_training_unchanged(tmp_path):
    train(load_config(None, [*BASE, "eval.nc_every=1"]), tmp_path / "every", device="cpu")
    train(load_config(None, [*BASE, "eval.nc_every=0"]), tmp_path / "last", device="cpu")
    every, last = _lines(tmp_path / "every"), _lines(tmp_path / "last")
    for key in ("train_loss", "train_acc", "test_acc", "test_acc_per_class", "lr"):
        assert [m[key] for m in every] == [m[key] for m in last]
    assert all("nc_test/nc1" in m and "nc/nc1" in m for m in every)
    assert "nc_test/nc1" not in last[0] and "nc_test/nc1" in last[-1]
    assert last[-1]["nc_test/nc1"] != last[-1]["nc/nc1"]  # measured on other features
    state = torch.load(tmp_path / "last" / "nc_state.pt", weights_only=True)
    confusion = state["test_confusion"]
    per_class = confusion.diagonal().double() / confusion.sum(1).double()
    assert torch.allclose(per_class, torch.tensor(last[-1]["test_acc_per_class"], dtype=torch.float64))

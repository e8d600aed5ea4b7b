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


def test_smallest_class_gram_is_logged_and_changes_nothing_else(tmp_path):
    """eval.gram_samples logs the cosine Gram of the smallest class's first training features (Yan et al. Fig. 7)
    at every NC pass, equal to one computed from the model's features; every other logged value is unchanged."""
    from ncollapse.data.loader import TensorLoader
    from ncollapse.train import build_data, build_model_for, load_checkpoint

    train(load_config(None, [*BASE, "eval.nc_every=1"]), tmp_path / "plain", device="cpu")
    cfg = load_config(None, [*BASE, "eval.nc_every=1", "eval.gram_samples=6"])
    train(cfg, tmp_path / "gram", device="cpu")
    plain, gram = _lines(tmp_path / "plain"), _lines(tmp_path / "gram")
    for a, b in zip(plain, gram):
        assert {k: v for k, v in a.items() if k != "time_s"} == {
            k: v for k, v in b.items() if k not in ("nc/smallest_class_gram", "time_s")}
    run = json.loads((tmp_path / "gram" / "run.json").read_text())
    k = min(range(len(run["class_counts"])), key=lambda c: run["class_counts"][c])
    train_set, _ = build_data(cfg)
    model = build_model_for(cfg, train_set)
    model.load_state_dict(load_checkpoint(tmp_path / "gram" / "checkpoint.pt")["model"])
    mask = train_set.labels == k
    loader = TensorLoader(train_set.images[mask], train_set.labels[mask], len(train_set), shuffle=False, augment=(),
                          mean=train_set.mean, std=train_set.std)
    features, _ = model.eval()(next(iter(loader))[0][:6])
    features = features.double()
    unit = torch.nn.functional.normalize(features, dim=1)
    logged = torch.tensor(gram[-1]["nc/smallest_class_gram"], dtype=torch.float64)
    assert logged.shape == (6, 6)
    torch.testing.assert_close(logged, unit @ unit.T, atol=1e-5, rtol=0)  # float32 pass vs this float64 forward
    from ncollapse.report.runs import load_nc_state  # the report reads the state with its kept samples

    assert load_nc_state(tmp_path / "gram" / "nc_state.pt")["stats"].rare_below == 7

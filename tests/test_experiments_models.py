
import pytest
import torch

from ncollapse.cli import main
from ncollapse.data import load_dataset
from ncollapse.experiments import fixed_classifiers, layerwise_depth, load_experiment_config, random_labels
from ncollapse.experiments._common import class_subset, shuffled_labels
from ncollapse.experiments.fixed_heads import native_dim
from ncollapse.train import config_from_dict

TINY = {"data": {"name": "digits", "augment": []}, "model": {"name": "mlp", "options": {"widths": [32, 32, 32]}},
        "optim": {"lr": 0.1}, "schedule": {"name": "constant", "warmup_epochs": 0},
        "train": {"epochs": 2, "batch_size": 64, "threads": 1}, "eval": {"nc_every": 1}}


def test_layerwise_probe_and_effective_depth(tmp_path):
    result = layerwise_depth(config_from_dict(TINY), tmp_path / "lw", {"epsilons": [0.5, 0.0]})
    rows = result["layers"]
    assert [r["layer"] for r in rows] == ["backbone.layer1", "backbone.layer2", "backbone.layer3"]
    assert all(0.0 <= r["ncc_train_acc"] <= 1.0 and r["nc1"] > 0 for r in rows)
    first = next((r["depth"] for r in rows if r["ncc_train_acc"] >= 0.5), None)
    assert result["effective_depth"]["0.5"] == first == 1  # digits are NCC-separable to 50 % at block 1
    full = next((r["depth"] for r in rows if r["ncc_train_acc"] >= 1.0), None)
    assert result["effective_depth"]["0.0"] == full
    assert (tmp_path / "lw" / "layerwise_ncc.png").is_file()


def test_shuffled_labels_keep_class_sizes_and_class_subset_relabels():
    ds = load_dataset("digits")
    noisy = shuffled_labels(ds.labels, seed=3)
    assert torch.equal(torch.bincount(noisy), torch.bincount(ds.labels))
    assert 0.05 < float((noisy == ds.labels).double().mean()) < 0.2  # ~1/K agree by chance
    sub = class_subset(ds, [7, 2])
    assert sub.classes == ["7", "2"] and set(sub.labels.tolist()) == {0, 1}
    assert len(sub) == ds.class_counts()[7] + ds.class_counts()[2]
    with pytest.raises(ValueError, match="two distinct class ids"):
        class_subset(ds, [1, 1])


def test_random_labels_memorise_without_generalising(tmp_path):
    cfg = config_from_dict({**TINY, "model": {"name": "mlp", "options": {"widths": [256, 256]}},
                            "data": {"name": "digits", "augment": [], "n_max": 20},
                            "train": {**TINY["train"], "epochs": 25, "batch_size": 50},
                            "eval": {"nc_every": 25}})
    result = random_labels(cfg, tmp_path / "rl")
    true, rand = result["final"]["true labels"], result["final"]["random labels"]
    assert rand["test_acc"] < 0.3 < 0.7 < true["test_acc"]  # random labels: chance level on the test set
    assert rand["train_acc"] > 0.5  # 200 images are being memorised
    assert true["nc/nc1"] < rand["nc/nc1"]
    html = (tmp_path / "rl" / "report.html").read_text()
    assert "random labels" in html and html.count("<img") >= 4


def test_fixed_classifier_geometry(tmp_path):
    assert native_dim("etf", 10) == 9 and native_dim("cube", 10) == 4 and native_dim("orthoplex", 10) == 5
    assert native_dim("normed", 10) is None
    cfg = config_from_dict({**TINY, "model": {"name": "mlp", "options": {"widths": [32]}},
                            "loss": {"name": "ldam", "options": {"max_m": 0.0, "s": 16.0, "drw_epoch": 99}}})
    result = fixed_classifiers(cfg, tmp_path / "fx", {"heads": ["etf", "cube", "orthoplex"]})
    heads = result["heads"]
    assert heads["etf"]["feature_dim"] == 9 and heads["cube"]["feature_dim"] == 4
    assert heads["etf"]["max_classifier_cos"] == pytest.approx(-1 / 9, abs=1e-6)  # simplex: −1/(K−1)
    assert heads["cube"]["max_classifier_cos"] == pytest.approx(0.5, abs=1e-6)  # one bit of 4 differs: (m−2)/m
    assert heads["orthoplex"]["max_classifier_cos"] == pytest.approx(0.0, abs=1e-6)
    assert all(h["test_acc"] > 0.3 for h in heads.values())
    with pytest.raises(ValueError, match="give heads among"):
        fixed_classifiers(cfg, tmp_path / "bad", {"heads": ["simplex"]})


def test_experiment_config_and_cli_errors(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text('[experiment]\nshots = [1, 5]\n\n[data]\nname = "digits"\n')
    cfg, params = load_experiment_config(path, ["experiment.episodes=7", "train.epochs=30"],
                                         {"shots": [1], "episodes": 100, "ridge": 1.0})
    assert params == {"shots": [1, 5], "episodes": 7, "ridge": 1.0} and cfg.train.epochs == 30
    with pytest.raises(ValueError, match="unknown key experiment.shot; did you mean 'shots'"):
        load_experiment_config(path, ["experiment.shot=3"], {"shots": [1]})
    with pytest.raises(TypeError, match="experiment.episodes must be an integer"):
        load_experiment_config(path, ["experiment.episodes=1.5"], {"shots": [1], "episodes": 100})
    assert main(["experiment", "transfer", "--config", str(path), "--set", "experiment.shot=3",
                 "--out", str(tmp_path / "x")]) == 2
    assert "did you mean 'shots'" in capsys.readouterr().err
    assert main(["experiment", "nope", "--out", str(tmp_path / "y")]) == 2
    assert "unknown experiment 'nope'; choose one of test-collapse" in capsys.readouterr().err


def test_probe_layers_rows_follow_the_feature_layers():
    """layerwise.probe_layers: one row per block of model.feature_layers(), NCC accuracies in [0, 1]."""
    from ncollapse.experiments.layerwise import probe_layers
    from ncollapse.nn import build_model

    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 1, 4, 4, generator=g)
    y = torch.arange(60) % 3
    x += 3 * y[:, None, None, None].float()  # separable classes
    loader = [(x[i:i + 20], y[i:i + 20]) for i in range(0, 60, 20)]
    model = build_model("mlp", 3, in_channels=1, image_size=4, widths=(16, 8))
    rows = probe_layers(model, loader, loader, num_classes=3)
    assert [r["layer"] for r in rows] == [name for name, _ in model.feature_layers()]
    assert [r["depth"] for r in rows] == list(range(1, len(rows) + 1))
    assert all(0.9 <= r["ncc_train_acc"] <= 1.0 for r in rows)

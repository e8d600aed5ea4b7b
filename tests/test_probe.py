import pytest
import torch
from torch import nn

from ncollapse import ClassStats, measure
from ncollapse.probe import collect_stats, effective_depth, layerwise_ncc, pool_features


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 4 * 4, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def make_loader(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 4, 4, generator=g)
    y = torch.arange(n) % 3
    return [(x[i:i + 16], y[i:i + 16]) for i in range(0, n, 16)], x, y


def test_collect_stats_matches_direct_features():
    model = Tiny()
    loader, x, y = make_loader()
    stats = collect_stats(model, loader, ["conv", "fc"], num_classes=3, precision="float64")
    with torch.no_grad():
        direct = model.conv(x)
    ref = ClassStats(3, 48, precision="float64")
    ref.update(direct.flatten(1), y)
    torch.testing.assert_close(stats["conv"].scatter, ref.scatter)
    gap = collect_stats(model, loader, ["conv"], num_classes=3, pool="gap")["conv"]
    assert gap.dim == 3
    torch.testing.assert_close(gap.means, ref.means.reshape(3, 3, 16).mean(2))
    assert measure(stats["fc"])["num_samples"] == 60


def test_model_mode_restored_and_no_grad():
    model = Tiny().train()
    loader, _, _ = make_loader()
    collect_stats(model, loader, "fc", num_classes=3)
    assert model.training
    assert all(p.grad is None for p in model.parameters())


def test_layerwise_ncc_and_effective_depth():
    model = nn.Sequential(nn.Identity(), nn.Linear(2, 2))
    x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    y = torch.tensor([0, 0, 1, 1])
    loader = [(x, y)]
    stats = collect_stats(model, loader, ["0", "1"], num_classes=2)
    acc = layerwise_ncc(model, loader, stats)
    assert acc["0"] == 1.0
    assert effective_depth({"a": 0.5, "b": 0.995, "c": 1.0}, epsilon=0.01) == 2
    assert effective_depth({"a": 0.5}, epsilon=0.01) is None


def test_bad_layer_name():
    with pytest.raises(ValueError, match="no module named 'nope'"):
        collect_stats(Tiny(), make_loader()[0], ["nope"], num_classes=3)
    with pytest.raises(ValueError, match="pool"):
        pool_features(torch.zeros(2, 3, 4, 4), "max")


def test_layers_as_label_module_pairs():
    model = Tiny()
    loader, _, _ = make_loader()
    by_pair = collect_stats(model, loader, [("first conv", model.conv)], num_classes=3)
    by_name = collect_stats(model, loader, ["conv"], num_classes=3)
    torch.testing.assert_close(by_pair["first conv"].scatter, by_name["conv"].scatter)
    with pytest.raises(ValueError, match="not a submodule"):
        collect_stats(model, loader, [("other", nn.Linear(2, 2))], num_classes=3)
    with pytest.raises(TypeError, match="module names or"):
        collect_stats(model, loader, [3], num_classes=3)

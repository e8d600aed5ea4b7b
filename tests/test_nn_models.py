"""Backbones and build_model: shapes, parameter counts against the papers, seeds, widening, errors."""

import pytest
import torch
from torch import nn

from ncollapse.nn import MODELS, build_model


def n_params(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name,channels,size,dim", [
    ("mlp", 1, 28, 512), ("lenet", 1, 28, 84), ("lenet", 3, 32, 84), ("vgg11", 3, 32, 512), ("vgg11", 1, 28, 512),
    ("resnet8", 1, 28, 64), ("resnet8", 3, 32, 64), ("resnet20", 3, 32, 64), ("resnet32", 3, 16, 64), ("resnet56", 3, 16, 64), ("resnet18", 3, 16, 512),
    ("resnet50", 3, 16, 2048), ("densenet", 3, 16, 510),
])
def test_forward_shapes(name, channels, size, dim):
    model = build_model(name, 7, in_channels=channels, image_size=size)
    with torch.no_grad():
        features, logits = model(torch.randn(2, channels, size, size))
    assert features.shape == (2, dim) and logits.shape == (2, 7)
    assert torch.allclose(logits, features @ model.head.weight.T + model.head.bias, atol=1e-5)


def test_every_registered_model_is_covered():
    assert set(MODELS) == {"mlp", "lenet", "vgg11", "resnet8", "resnet20", "resnet32", "resnet56", "resnet18", "resnet50",
                           "densenet"}


@pytest.mark.parametrize("name,count", [("resnet20", 269_722), ("resnet32", 464_154), ("resnet56", 853_018)])
def test_cifar_resnet_parameter_counts_match_he_et_al(name, count):
    # He et al. 2016, Table 6: 0.27M, 0.46M, 0.85M (option A, 10-class linear layer included)
    assert n_params(build_model(name, 10)) == count


def test_lenet_batch_norm_replaces_biases_by_bn_parameters():
    plain, bn = build_model("lenet", 10, in_channels=1, image_size=28), build_model(
        "lenet", 10, in_channels=1, image_size=28, batch_norm=True)
    widths = 6 + 16 + 120 + 84  # conv1, conv2, fc1, fc2: bias out, BN weight and bias in
    assert n_params(bn) == n_params(plain) - widths + 2 * widths
    assert sum(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in bn.backbone.modules()) == 4
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in plain.backbone.modules())


def test_resnet8_width_scales_every_stage():
    # stem 3·w·9 + BN, one basic block per stage (w → w, w → 2w, 2w → 4w), 10-class linear layer on 4w
    def count(w):
        stem = 3 * w * 9 + 2 * w
        stages = sum(cin * cout * 9 + cout * cout * 9 + 4 * cout for cin, cout in ((w, w), (w, 2 * w), (2 * w, 4 * w)))
        return stem + stages + 4 * w * 10 + 10
    assert n_params(build_model("resnet8", 10)) == count(16) == 75_290
    narrow = build_model("resnet8", 10, width=8)
    assert n_params(narrow) == count(8) and narrow.backbone.out_dim == 32


def test_option_b_adds_projection_parameters():
    a, b = build_model("resnet20", 10), build_model("resnet20", 10, shortcut="B")
    # two 1x1 conv + BN projections: 16->32 and 32->64
    assert n_params(b) - n_params(a) == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


def test_imagenet_style_resnets_and_densenet_sizes():
    assert round(n_params(build_model("resnet18", 10)) / 1e6, 2) == 11.17
    assert round(n_params(build_model("resnet50", 100)) / 1e6, 1) == 23.7
    dense = build_model("densenet", 10).backbone  # DenseNet-BC-150, k=12, as in NCMC / SETF
    assert dense.layers_per_block == 24 and dense.out_dim == 510
    # depth 40, k 32: n = 6; 64 + 192 = 256 -> 128; 128 + 192 = 320 -> 160; 160 + 192 = 352
    assert build_model("densenet", 10, depth=40, growth_rate=32).backbone.out_dim == 352
    # Huang et al. 2017, Table 2: DenseNet-BC (L=100, k=12) has 0.8M parameters
    assert round(n_params(build_model("densenet", 10, depth=100)) / 1e6, 1) == 0.8


def test_feature_dim_widens_with_linear_layer():
    model = build_model("lenet", 5, in_channels=1, image_size=28, feature_dim=300)
    assert isinstance(model.expand, nn.Linear) and model.expand.in_features == 84
    features, logits = model(torch.randn(3, 1, 28, 28))
    assert features.shape == (3, 300) and model.head.weight.shape == (5, 300)
    assert [name for name, _ in model.feature_layers()] == [
        "backbone.conv1", "backbone.conv2", "backbone.fc1", "backbone.fc2", "expand"]


def test_feature_layers_are_ordered_blocks_of_the_network():
    model = build_model("resnet20", 4, image_size=8, head="etf")
    names = [n for n, _ in model.feature_layers()]
    assert names == ["backbone.stem", "backbone.stage1", "backbone.stage2", "backbone.stage3", "backbone.pool",
                     "head.bn"]
    shapes = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape))) for _, m in model.feature_layers()]
    model(torch.randn(2, 3, 8, 8))
    for h in hooks:
        h.remove()
    assert shapes == [(2, 16, 8, 8), (2, 16, 8, 8), (2, 32, 4, 4), (2, 64, 2, 2), (2, 64), (2, 64)]


def test_seed_fixes_weights_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = build_model("lenet", 3, seed=1), build_model("lenet", 3, seed=1)
    c = build_model("lenet", 3, seed=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.backbone.conv1[0].weight, c.backbone.conv1[0].weight)


def test_normalize_features_feeds_unit_vectors_to_the_head():
    model = build_model("mlp", 3, in_channels=1, image_size=4, widths=(32,), normalize_features=True, bias=False)
    features, logits = model(torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(0)))
    assert torch.allclose(features.norm(dim=1), torch.ones(5), atol=1e-6)
    assert model.head.bias is None


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="resnet99"), "unknown model"),
    (dict(name="lenet", head="simplex"), "unknown head"),
    (dict(name="lenet", color="red"), "unknown option"),
    (dict(name="mlp", widths=()), "widths is empty"),
    (dict(name="lenet", image_size=8), "image_size >= 12"),
    (dict(name="lenet", head="multicenter"), "needs centers_per_class"),
    (dict(name="lenet", head="multicenter", centers_per_class=20), r"feature_dim=210"),
    (dict(name="lenet", head="multicenter", centers_per_class=0, feature_dim=500), "centers_per_class == 0"),
    (dict(name="lenet", head="multicenter", centers_per_class=[1, 0] + [1] * 8, feature_dim=50),
     r"centers_per_class\[1\]"),
    (dict(name="lenet", head="multicenter", centers_per_class=[1, 2], feature_dim=50), "expected 10"),
    (dict(name="lenet", head="multicenter", centers_per_class=2, theta=2.0), r"pi/2"),
    (dict(name="lenet", head="multicenter", centers_per_class=2, theta=-0.1), r"pi/2"),
    (dict(name="resnet20", num_classes=1), "num_classes"),
])
def test_bad_input_is_a_clear_error(kwargs, match):
    kwargs = {"num_classes": 10, **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        build_model(kwargs.pop("name"), kwargs.pop("num_classes"), **kwargs)


def test_feature_layers_name_stem_stages_and_pool():
    """StagedBackbone.feature_layers: stem, one entry per stage (ResNet "stage", DenseNet "block"), pool."""
    from ncollapse.nn.densenet import DenseNet
    from ncollapse.nn.resnet import ResNetCifar
    from ncollapse.nn.stages import StagedBackbone
    from ncollapse.nn.vgg import VGG

    resnet, densenet = ResNetCifar(3, depth=20), DenseNet(3, depth=40, growth_rate=4)
    assert isinstance(resnet, StagedBackbone) and isinstance(densenet, StagedBackbone)
    assert [n for n, _ in resnet.feature_layers()] == ["stem", "stage1", "stage2", "stage3", "pool"]
    assert [n for n, _ in densenet.feature_layers()] == ["stem", "block1", "block2", "block3", "pool"]
    x = torch.randn(2, 3, 16, 16)
    assert resnet(x).shape == (2, 64) and densenet(x).shape == (2, densenet.out_dim)
    vgg_names = [n for n, _ in VGG(3).feature_layers()]
    assert vgg_names[0] == "stage1" and vgg_names[-1] == "pool"

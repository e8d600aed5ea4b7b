"""Heads: fixed classifiers are untrained and have the geometry they claim; NCMC head and its decision rules."""

import math

import pytest
import torch
import torch.nn.functional as F

from ncollapse.geometry import class_aware_centers
from ncollapse.nn import build_model, gcr_scores, ncmc_centers
from ncollapse.nn.heads import MultiCenterHead

K = 6


def gram(w):
    return (w @ w.T).double()


def fixed(head, dim=16):
    return build_model("mlp", K, in_channels=1, image_size=4, widths=(dim,), head=head)


@pytest.mark.parametrize("head", ["etf", "orthogonal", "cube", "orthoplex", "multicenter"])
def test_fixed_heads_have_no_trainable_classifier(head):
    model = build_model("mlp", K, in_channels=1, image_size=4, widths=(16,), head=head, centers_per_class=1)
    names = {n for n, _ in model.head.named_parameters()}
    assert names == {"bn.weight", "bn.bias"}
    assert not model.head.weight.requires_grad and model.head.bias is None
    features, logits = model(torch.randn(5, 1, 4, 4))
    logits.sum().backward()
    assert model.head.weight.grad is None and model.head.bn.weight.grad is not None
    # the classifier is saved with the model
    assert "head.weight" in model.state_dict()


def test_etf_orthogonal_cube_orthoplex_geometry():
    eye = torch.eye(K, dtype=torch.float64)
    etf = fixed("etf").head.weight
    assert torch.allclose(gram(etf), eye * (1 + 1 / (K - 1)) - 1 / (K - 1), atol=1e-6)
    assert torch.allclose(gram(fixed("orthogonal").head.weight), eye, atol=1e-6)
    cube = gram(fixed("cube").head.weight)  # m = 3 bits: cos = 1 - 2 * hamming / 3
    bits = (torch.arange(K)[:, None] >> torch.arange(3)) & 1
    hamming = (bits[:, None, :] != bits[None, :, :]).sum(-1).double()
    assert torch.allclose(cube, 1 - 2 * hamming / 3, atol=1e-6)
    plex = gram(fixed("orthoplex").head.weight)  # classes 2i, 2i+1 are antipodal
    expected = torch.zeros(K, K, dtype=torch.float64)
    for i in range(0, K, 2):
        expected[i:i + 2, i:i + 2] = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    assert torch.allclose(plex, expected, atol=1e-6)


def test_fixed_head_features_are_bn_output_and_logits_are_cosines():
    model = fixed("etf")
    model.train()
    features, logits = model(torch.randn(32, 1, 4, 4))
    assert torch.allclose(features.mean(0), torch.zeros(16), atol=1e-5)  # batch statistics, affine at init
    assert torch.allclose(logits, F.normalize(features, dim=1) @ model.head.weight.T, atol=1e-6)
    assert float(logits.detach().abs().max()) <= 1 + 1e-6


def test_normed_head_is_cosine_classifier():
    model = build_model("mlp", K, in_channels=1, image_size=4, widths=(16,), head="normed")
    features, logits = model(torch.randn(4, 1, 4, 4))
    expected = F.cosine_similarity(features[:, None, :], model.head.weight[None, :, :], dim=2)
    assert torch.allclose(logits, expected, atol=1e-6) and model.head.bias is None


def test_multicenter_head_frame_geometry():
    theta, f = 0.3, [1, 2, 3, 4]
    head = MultiCenterHead.build(20, f, theta, seed=3)
    frame = head.frame
    w0, centers, owner = frame.classifier, frame.centers, frame.owner
    assert torch.allclose(gram(w0), torch.eye(4, dtype=torch.float64), atol=1e-6)
    g = gram(centers)
    same = owner[:, None] == owner[None, :]
    eye = torch.eye(len(owner), dtype=torch.bool)
    assert torch.allclose(g[eye], torch.ones(10, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(g[same & ~eye], torch.full_like(g[same & ~eye], math.sin(theta) ** 2), atol=1e-6)
    assert torch.allclose(g[~same], torch.zeros_like(g[~same]), atol=1e-6)
    cross = (centers @ w0.T)  # <w_j^(k), w_k'> = sin(theta) [k = k']
    assert torch.allclose(cross, math.sin(theta) * F.one_hot(owner, 4).double(), atol=1e-6)
    assert frame.centers_per_class == tuple(f) and frame.theta == theta


def test_multicenter_head_survives_state_dict_round_trip():
    a = build_model("lenet", 3, in_channels=1, image_size=28, head="multicenter", centers_per_class=[1, 2, 3],
                    feature_dim=12, seed=0)
    b = build_model("lenet", 3, in_channels=1, image_size=28, head="multicenter", centers_per_class=[1, 2, 3],
                    feature_dim=12, seed=5)
    assert not torch.equal(a.head.centers, b.head.centers)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.head.frame.centers, b.head.frame.centers)


def test_rcr_and_gcr_decision_rules_against_a_loop():
    model = build_model("mlp", 4, in_channels=1, image_size=4, widths=(16,), head="multicenter",
                        centers_per_class=[1, 2, 3, 5], feature_dim=20, theta=0.2)
    gen = torch.Generator().manual_seed(0)
    features, logits = model(torch.randn(64, 1, 4, 4, generator=gen))
    head = model.head
    assert torch.equal(head.predict(features, "rcr"), logits.argmax(1))
    unit = F.normalize(features, dim=1)
    expected = []
    for z in unit:  # reference: max over each class's centers, one sample at a time
        best = [max(float(c @ z.detach()) for c, o in zip(head.centers, head.owner) if o == k) for k in range(4)]
        expected.append(max(range(4), key=lambda k: best[k]))
    assert head.predict(features, "gcr").tolist() == expected
    with pytest.raises(ValueError, match="rule"):
        head.predict(features, "nearest")


def test_gcr_scores_closed_form():
    centers = torch.eye(3)
    owner = torch.tensor([0, 1, 1])
    z = torch.tensor([[0.1, 0.5, 0.7], [0.9, -0.2, 0.1]])
    assert torch.allclose(gcr_scores(z, centers, owner, 2), torch.tensor([[0.1, 0.7], [0.9, 0.1]]))


def test_ncmc_centers_al_and_cal():
    counts = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]  # CIFAR-10-LT, tau 0.01
    assert ncmc_centers(counts, 20) == [2, 3, 4, 5, 7, 11, 17, 28, 46, 77]  # ncmc.md §3
    assert ncmc_centers(counts, 20, "al") == [20] * 10
    shuffled = [counts[i] for i in (9, 0, 5)]
    assert ncmc_centers(shuffled, 3) == class_aware_centers(shuffled, 3, order="sorted")
    with pytest.raises(ValueError, match="strategy"):
        ncmc_centers(counts, 20, "xal")
    with pytest.raises(ValueError, match=r"class_counts\[1\] == 0"):
        ncmc_centers([3, 0], 2)
    with pytest.raises(ValueError, match="f == 0"):
        ncmc_centers([3, 1], 0)

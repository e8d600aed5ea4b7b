"""Evaluation pass on a hand-built model: accuracy, groups and post-hoc logit adjustment, worked by hand."""

import math

import pytest
import torch

from ncollapse.losses import posthoc_logit_adjust
from ncollapse.nn.heads import LinearHead
from ncollapse.train.dist import DistContext
from ncollapse.train.evaluate import accuracy_report, classifier_of, run_pass


class _Identity(torch.nn.Module):
    def __init__(self, W, b):
        super().__init__()
        self.head = LinearHead(2, 3)
        with torch.no_grad():
            self.head.weight.copy_(W)
            self.head.bias.copy_(b)

    def forward(self, x):
        return self.head(x)


def _batches():
    x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.2, 0.9], [-1.0, -1.0], [0.1, 0.05]])
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    return [(x[:4], y[:4]), (x[4:], y[4:])]


def test_accuracy_groups_and_posthoc_adjustment():
    W = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    model = _Identity(W, torch.zeros(3))
    ctx = DistContext(0, 1, torch.device("cpu"))
    # logits of the last sample (0.1, 0.05): (0.1, 0.05, -0.15) → class 0, wrong; all others right
    result = run_pass(model, _batches(), 3, ctx)
    assert result.correct.tolist() == [2, 2, 1] and result.counts.tolist() == [2, 2, 2]
    groups = {"head": [0], "medium": [1], "tail": [2]}
    report = accuracy_report(result, groups)
    assert report["test_acc"] == pytest.approx(5 / 6) and report["test_acc_tail"] == pytest.approx(0.5)
    assert report["test_acc_per_class"] == [1.0, 1.0, 0.5] and report["test_acc_medium"] == 1.0
    # Menon et al. 2021, eq. 9 with counts (100, 10, 1): z_k − log π_k, worked by hand for the last sample
    counts = [100, 10, 1]
    shift = [-math.log(c / 111) for c in counts]
    z = [0.1 + shift[0], 0.05 + shift[1], -0.15 + shift[2]]
    assert max(range(3), key=z.__getitem__) == 2
    adjusted = run_pass(model, _batches(), 3, ctx, scores=lambda f, l: posthoc_logit_adjust(l, counts, 1.0))
    assert adjusted.correct[2] == 2
    assert accuracy_report(adjusted, {"head": [0, 1], "medium": [], "tail": [2]})["test_acc_medium"] is None


def test_classifier_of_linear_head():
    model = _Identity(torch.tensor([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]]), torch.tensor([1.0, 2.0, 3.0]))
    W, b = classifier_of(model)
    assert W.dtype == torch.float64 and b.tolist() == [1.0, 2.0, 3.0] and W[0].tolist() == [3.0, 4.0]


def test_gcr_decision_matches_the_head_rule():
    """eval.decision = "gcr": the evaluation argmax is max_j <w_j^(k), ĥ> (Yan et al. 2024, §3.1)."""
    from ncollapse.nn import build_model
    from ncollapse.train.config import config_from_dict
    from ncollapse.train.build import decision_scores

    model = build_model("mlp", 3, in_channels=1, image_size=2, widths=(16,), head="multicenter",
                        centers_per_class=[1, 2, 3], feature_dim=12, theta=0.4).eval()
    cfg = config_from_dict({"model": {"head": "multicenter"}, "eval": {"decision": "gcr"}})
    scores = decision_scores(cfg, model, [30, 20, 10])
    features = torch.randn(64, 12, generator=torch.Generator().manual_seed(0))
    logits = torch.zeros(64, 3)
    assert torch.equal(scores(features, logits).argmax(1), model.head.predict(features, rule="gcr"))
    rcr = config_from_dict({"model": {"head": "multicenter"}})
    assert decision_scores(rcr, model, [30, 20, 10]) is None

"""nn.modes.eval_mode: eval mode and no_grad inside the block, the previous mode restored after it, on error too."""

import pytest
import torch
from torch import nn

from ncollapse.nn.modes import eval_mode


@pytest.mark.parametrize("training", [True, False])
def test_mode_restored_and_no_grad_inside(training):
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)).train(training)
    with eval_mode(model) as inside:
        assert inside is model and not model.training
        assert not model(torch.randn(4, 3)).requires_grad
    assert model.training is training


def test_mode_restored_on_error():
    model = nn.Linear(3, 2).train()
    with pytest.raises(RuntimeError, match="boom"):
        with eval_mode(model):
            raise RuntimeError("boom")
    assert model.training

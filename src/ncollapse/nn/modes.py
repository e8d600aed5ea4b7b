"""The one eval-mode block of every forward loop that only reads a model (evaluation, probes, feature passes)."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

__all__ = ["eval_mode"]


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """``model`` in eval mode under ``torch.no_grad`` for the block; its mode is restored afterwards, on error too."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)

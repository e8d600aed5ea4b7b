"""The stem → stages → pool layout shared by the ResNet and DenseNet backbones."""

from __future__ import annotations

import torch
from torch import nn


class StagedBackbone(nn.Module):
    """A backbone with ``stem``, ``stages`` (ModuleList) and ``pool``; subclasses build the three."""

    stage_prefix = "stage"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.pool(x)

    def feature_layers(self) -> list[tuple[str, nn.Module]]:
        """(name, module) of stem, each stage and the pooled output, for layer-wise probes."""
        stages = [(f"{self.stage_prefix}{i + 1}", s) for i, s in enumerate(self.stages)]
        return [("stem", self.stem), *stages, ("pool", self.pool)]

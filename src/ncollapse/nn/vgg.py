"""VGG-11 with batch normalisation (Simonyan & Zisserman 2015, configuration A), CIFAR-style 512-d feature."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["VGG"]

CONFIGS = {"vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512))}


class VGG(nn.Module):
    """Five conv stages (3×3 conv → BN → ReLU, then 2×2 max-pool with ceil mode) → global average pool.

    Ceil-mode pooling lets 28×28 inputs reach 1×1 like 32×32 ones; the feature is the 512-d pooled map
    (the CIFAR variant with one linear classifier, as in the NCMC and SETF code bases).
    """

    def __init__(self, in_channels: int, config: str = "vgg11"):
        super().__init__()
        if config not in CONFIGS:
            raise ValueError(f"unknown VGG config {config!r}; choose one of {sorted(CONFIGS)}")
        stages = []
        width_in = in_channels
        for widths in CONFIGS[config]:
            block = []
            for w in widths:
                block += [nn.Conv2d(width_in, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                width_in = w
            block.append(nn.MaxPool2d(2, ceil_mode=True))
            stages.append(nn.Sequential(*block))
        self.stages = nn.ModuleList(stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_dim = width_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return self.pool(x)

    def feature_layers(self) -> list[tuple[str, nn.Module]]:
        return [(f"stage{i + 1}", s) for i, s in enumerate(self.stages)] + [("pool", self.pool)]

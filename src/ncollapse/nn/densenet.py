"""DenseNet-BC for CIFAR-sized inputs (Huang et al. 2017, §3 "DenseNet-BC" and the CIFAR set-up of §4.2).

3×3 conv to 2k channels, three dense blocks of n bottleneck layers (BN-ReLU-Conv1×1 to 4k, BN-ReLU-Conv3×3 to
k, concatenated), transitions BN-ReLU-Conv1×1 to floor(reduction·c) channels + 2×2 average pool, and a final
BN-ReLU + global average pool. n = floor((depth − 4)/6) with bottlenecks (floor((depth − 4)/3) without), the
rounding of the common CIFAR implementations: DenseNet-150 with growth 12 (NCMC, SETF) has n = 24 and a
510-d feature.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch
from torch import nn

from ..validation import check_scalar
from .stages import StagedBackbone

__all__ = ["DenseNet"]


def _bn_relu_conv(width_in: int, width_out: int, kernel: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(width_in), nn.ReLU(inplace=True),
            nn.Conv2d(width_in, width_out, kernel, padding=kernel // 2, bias=False)]


class _DenseLayer(nn.Module):
    def __init__(self, width_in: int, growth: int, bottleneck: bool):
        super().__init__()
        layers = _bn_relu_conv(width_in, 4 * growth, 1) + _bn_relu_conv(4 * growth, growth, 3) if bottleneck \
            else _bn_relu_conv(width_in, growth, 3)
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], 1)


class DenseNet(StagedBackbone):
    """DenseNet(-BC) with ``depth``, ``growth_rate`` k and transition ``reduction`` (0.5 for -BC)."""

    stage_prefix = "block"

    def __init__(self, in_channels: int, depth: int = 100, growth_rate: int = 12, reduction: float = 0.5,
                 bottleneck: bool = True):
        super().__init__()
        check_scalar(growth_rate, "densenet growth_rate", Integral, low=1)
        check_scalar(reduction, "densenet reduction", Real, low=0, high=1, low_open=True)
        check_scalar(depth, "densenet depth", Integral, low=10 if bottleneck else 7)
        n = (depth - 4) // (6 if bottleneck else 3)
        width = 2 * growth_rate if bottleneck else 16
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        stages = []
        for b in range(3):
            layers = []
            for _ in range(n):
                layers.append(_DenseLayer(width, growth_rate, bottleneck))
                width += growth_rate
            if b < 2:
                out = int(math.floor(width * reduction))
                layers += [nn.Sequential(*_bn_relu_conv(width, out, 1), nn.AvgPool2d(2))]
                width = out
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.pool = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_dim = width
        self.layers_per_block = n
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


"""Residual networks (He et al. 2016): CIFAR ResNet-6n+2 and ResNet-18/50 with a CIFAR stem.

* ``ResNetCifar`` (He et al. 2016, §4.2): a 3×3 conv with 16 filters, three stages of n basic blocks with
  16/32/64 filters (stride 1/2/2), global average pool; depth 6n+2 (ResNet-20/32/56: n = 3/5/9), a 64-d
  feature; ResNet-8 (n = 1) is the narrow BN backbone of the CPU protocol. ``base_width`` sets the stage
  widths to base × 1/2/4. Default ``shortcut="A"``: identity shortcuts, zero-padded channels and stride-2
  subsampling where the shape changes (parameter-free; the variant of the paper's CIFAR table and of LDAM-DRW / SETF, 0.27M
  parameters for ResNet-20 and 0.46M for ResNet-32). ``shortcut="B"`` uses 1×1 conv + BN projections there.
* ``ResNet`` (He et al. 2016, Table 1) ResNet-18 (basic blocks 2-2-2-2) and ResNet-50 (bottlenecks 3-4-6-3)
  with the CIFAR stem: one 3×3 conv, stride 1, no max-pool; projection shortcuts (option B); features of
  width 512 and 2048.
Initialisation: Kaiming-normal (fan_out) convolutions, BatchNorm weight 1 and bias 0.
"""

from __future__ import annotations

from numbers import Integral

import torch
import torch.nn.functional as F
from torch import nn

from ..validation import check_scalar
from .stages import StagedBackbone

__all__ = ["ResNetCifar", "ResNet", "BasicBlock", "Bottleneck"]


def _conv_bn(width_in: int, width_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(width_in, width_out, kernel, stride, padding=kernel // 2, bias=False), nn.BatchNorm2d(width_out)]


class _PadShortcut(nn.Module):
    """Option A shortcut: subsample by ``stride`` and append zero channels up to ``width_out``."""

    def __init__(self, width_in: int, width_out: int, stride: int):
        super().__init__()
        self.extra, self.stride = width_out - width_in, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.extra))


def _shortcut(width_in: int, width_out: int, stride: int, kind: str) -> nn.Module:
    if stride == 1 and width_in == width_out:
        return nn.Identity()
    if kind == "A":
        return _PadShortcut(width_in, width_out, stride)
    return nn.Sequential(*_conv_bn(width_in, width_out, 1, stride))


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with a shortcut, ReLU after the sum (He et al. 2016, Fig. 2 left)."""

    expansion = 1

    def __init__(self, width_in: int, width: int, stride: int = 1, shortcut: str = "B"):
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(width_in, width, 3, stride), nn.ReLU(inplace=True),
                                  *_conv_bn(width, width, 3))
        self.shortcut = _shortcut(width_in, width, stride, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1×1 → 3×3 (stride) → 1×1 conv-BN with 4× expansion and a shortcut (He et al. 2016, Fig. 5 right)."""

    expansion = 4

    def __init__(self, width_in: int, width: int, stride: int = 1, shortcut: str = "B"):
        super().__init__()
        out = width * self.expansion
        self.body = nn.Sequential(
            *_conv_bn(width_in, width, 1), nn.ReLU(inplace=True),
            *_conv_bn(width, width, 3, stride), nn.ReLU(inplace=True),
            *_conv_bn(width, out, 1),
        )
        self.shortcut = _shortcut(width_in, out, stride, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class _Stages(StagedBackbone):
    """stem → stages → global average pool, shared by both families."""

    def _build(self, stem: nn.Module, block, width_in: int, widths, blocks, strides, shortcut: str) -> None:
        self.stem = stem
        stages = []
        for width, n, stride in zip(widths, blocks, strides):
            layers = []
            for i in range(n):
                layers.append(block(width_in, width, stride if i == 0 else 1, shortcut))
                width_in = width * block.expansion
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_dim = width_in
        _init(self)



class ResNetCifar(_Stages):
    """CIFAR ResNet of depth 6n+2 (He et al. 2016, §4.2); see the module docstring for the shortcut options."""

    def __init__(self, in_channels: int, depth: int = 32, shortcut: str = "A", base_width: int = 16):
        super().__init__()
        check_scalar(depth, "resnet depth", Integral, low=8)
        check_scalar(base_width, "resnet width", Integral, low=1)
        if (depth - 2) % 6:
            raise ValueError(f"resnet depth == {depth}, must be 6n+2 (20, 32, 44, 56, 110)")
        if shortcut not in ("A", "B"):
            raise ValueError(f"resnet shortcut == {shortcut!r}, must be 'A' (zero padding) or 'B' (projection)")
        n = (depth - 2) // 6
        stem = nn.Sequential(*_conv_bn(in_channels, base_width, 3), nn.ReLU(inplace=True))
        widths = (base_width, 2 * base_width, 4 * base_width)
        self._build(stem, BasicBlock, base_width, widths, (n, n, n), (1, 2, 2), shortcut)


class ResNet(_Stages):
    """ResNet-18 / ResNet-50 (He et al. 2016, Table 1) with the CIFAR stem (3×3 conv, stride 1, no max-pool)."""

    LAYOUTS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)), 50: (Bottleneck, (3, 4, 6, 3))}

    def __init__(self, in_channels: int, depth: int = 18):
        super().__init__()
        if depth not in self.LAYOUTS:
            raise ValueError(f"resnet depth == {depth}; the CIFAR-stem ResNet supports {sorted(self.LAYOUTS)}")
        block, blocks = self.LAYOUTS[depth]
        stem = nn.Sequential(*_conv_bn(in_channels, 64, 3), nn.ReLU(inplace=True))
        self._build(stem, block, 64, (64, 128, 256, 512), blocks, (1, 2, 2, 2), "B")

"""Multi-layer perceptron and LeNet-5 backbones (small models for MNIST-scale runs)."""

from __future__ import annotations

from numbers import Integral

import torch
from torch import nn

from ..validation import check_scalar

__all__ = ["MLP", "LeNet"]


class MLP(nn.Module):
    """Flatten → [Linear → BatchNorm1d (optional) → ReLU] × len(widths); the feature is the last hidden layer."""

    def __init__(self, in_channels: int, image_size: int, widths=(512, 512, 512), batch_norm: bool = True):
        super().__init__()
        widths = tuple(widths)
        if not widths:
            raise ValueError("mlp widths is empty; give at least one hidden width, e.g. widths=(512, 512)")
        for i, w in enumerate(widths):
            check_scalar(w, f"mlp widths[{i}]", Integral, low=1)
        layers = []
        width_in = in_channels * image_size * image_size
        for w in widths:
            block = [nn.Linear(width_in, w, bias=not batch_norm)]
            if batch_norm:
                block.append(nn.BatchNorm1d(w))
            block.append(nn.ReLU(inplace=True))
            layers.append(nn.Sequential(*block))
            width_in = w
        self.layers = nn.ModuleList(layers)
        self.out_dim = width_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.layers:
            x = layer(x)
        return x

    def feature_layers(self) -> list[tuple[str, nn.Module]]:
        return [(f"layer{i + 1}", layer) for i, layer in enumerate(self.layers)]


class LeNet(nn.Module):
    """LeNet-5 (LeCun et al. 1998): conv 6@5×5 (pad 2) → pool → conv 16@5×5 → pool → 120 → 84 (the feature).

    The first convolution is padded by 2 so that 28×28 (MNIST) and 32×32 (CIFAR) inputs both work.
    ``batch_norm=True`` puts a BatchNorm (Ioffe & Szegedy 2015) between every conv / linear layer and its ReLU
    (the layers then have no bias): the small BN CNN of the NCMC CPU protocol.
    """

    def __init__(self, in_channels: int, image_size: int, batch_norm: bool = False):
        super().__init__()
        side = (image_size // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"lenet needs image_size >= 12; got image_size={image_size}")

        def block(layer, norm):
            return [layer, norm, nn.ReLU(inplace=True)] if batch_norm else [layer, nn.ReLU(inplace=True)]

        bias = not batch_norm
        self.conv1 = nn.Sequential(*block(nn.Conv2d(in_channels, 6, 5, padding=2, bias=bias), nn.BatchNorm2d(6)),
                                   nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(*block(nn.Conv2d(6, 16, 5, bias=bias), nn.BatchNorm2d(16)), nn.MaxPool2d(2))
        self.fc1 = nn.Sequential(nn.Flatten(), *block(nn.Linear(16 * side * side, 120, bias=bias), nn.BatchNorm1d(120)))
        self.fc2 = nn.Sequential(*block(nn.Linear(120, 84, bias=bias), nn.BatchNorm1d(84)))
        self.out_dim = 84

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(self.conv2(self.conv1(x))))

    def feature_layers(self) -> list[tuple[str, nn.Module]]:
        return [("conv1", self.conv1), ("conv2", self.conv2), ("fc1", self.fc1), ("fc2", self.fc2)]

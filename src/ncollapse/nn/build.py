"""``build_model``: backbone → optional widening Linear → optional L2 normalisation → head.

The model returns ``(features, logits)`` where ``features`` is exactly the tensor the head classifies
(for fixed and multi-center heads the BatchNorm output before L2 normalisation). Weight initialisation runs
under ``torch.random.fork_rng`` seeded with ``seed``, so the same seed gives the same weights and the global
RNG is left untouched; the same seed also fixes the frame of a fixed head.
"""

from __future__ import annotations

import inspect
from numbers import Integral

import torch
import torch.nn.functional as F
from torch import nn

from ..geometry import FIXED_FRAMES, check_theta
from ..resources import check_memory
from ..validation import check_counts, check_scalar
from .densenet import DenseNet
from .heads import FixedHead, LinearHead, MultiCenterHead, NormedHead
from .mlp import MLP, LeNet
from .resnet import ResNet, ResNetCifar
from .vgg import VGG

__all__ = ["NCModel", "build_model", "MODELS", "HEADS"]

HEADS = ("linear", "normed", *FIXED_FRAMES, "multicenter")


def _mlp(c, s, widths=(512, 512, 512), batch_norm=True):
    return MLP(c, s, widths, batch_norm)


def _cifar_resnet(depth):
    def make(c, s, shortcut="A", width=16):
        return ResNetCifar(c, depth, shortcut, width)
    return make


def _densenet(c, s, depth=150, growth_rate=12, reduction=0.5, bottleneck=True):
    return DenseNet(c, depth, growth_rate, reduction, bottleneck)


MODELS = {
    "mlp": _mlp,
    "lenet": lambda c, s, batch_norm=False: LeNet(c, s, batch_norm),
    "vgg11": lambda c, s: VGG(c, "vgg11"),
    "resnet8": _cifar_resnet(8),
    "resnet20": _cifar_resnet(20),
    "resnet32": _cifar_resnet(32),
    "resnet56": _cifar_resnet(56),
    "resnet18": lambda c, s: ResNet(c, 18),
    "resnet50": lambda c, s: ResNet(c, 50),
    "densenet": _densenet,
}


class NCModel(nn.Module):
    """``backbone`` → ``expand`` (Linear or Identity) → (h/‖h‖ if ``normalize_features``) → ``head``."""

    def __init__(self, backbone: nn.Module, expand: nn.Module, head: nn.Module, normalize_features: bool = False):
        super().__init__()
        self.backbone, self.expand, self.head = backbone, expand, head
        self.normalize_features = normalize_features

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.expand(self.backbone(x))
        if self.normalize_features:
            h = F.normalize(h, dim=1)
        return self.head(h)

    def feature_layers(self) -> list[tuple[str, nn.Module]]:
        """Ordered (name, module) blocks for layer-wise probes; module outputs are (B, ...) tensors."""
        layers = [(f"backbone.{name}", m) for name, m in self.backbone.feature_layers()]
        if not isinstance(self.expand, nn.Identity):
            layers.append(("expand", self.expand))
        if isinstance(self.head, FixedHead):
            layers.append(("head.bn", self.head.bn))
        return layers


def _centers(centers_per_class, num_classes: int) -> list[int]:
    if centers_per_class is None:
        raise ValueError("head='multicenter' needs centers_per_class: an int f (AL) or one count per class (CAL, "
                         "from ncollapse.nn.ncmc_centers(class_counts, f, 'cal'))")
    if isinstance(centers_per_class, Integral) and not isinstance(centers_per_class, bool):
        check_scalar(centers_per_class, "centers_per_class", Integral, low=1)
        return [int(centers_per_class)] * num_classes
    f = check_counts(centers_per_class, "centers_per_class")
    if len(f) != num_classes:
        raise ValueError(f"centers_per_class has {len(f)} entries; expected {num_classes} (one per class)")
    return f


def _least_params(name: str, in_channels: int, image_size: int, options: dict) -> tuple[int, int]:
    """(least parameter count, feature width) of a backbone from its user-given widths, before building it: the
    linear layers of the MLP (exact), the 3 × 3 convolutions of the CIFAR ResNets' three stages (He et al. 2016,
    §4.2: n = (depth − 2)/6 blocks of two convolutions per stage at widths w, 2w, 4w, each stage's first one from
    the previous width: 9w²(11 + 21(2n − 1))), the 3 × 3 convolutions of
    DenseNet's layers (g input channels at least, 9·g² each: Huang et al. 2017, §3). Fixed architectures: (0, 0)."""
    if name == "mlp":
        widths = [in_channels * image_size * image_size, *options.get("widths", (512, 512, 512))]
        return sum((a + 1) * b for a, b in zip(widths, widths[1:])), widths[-1]
    if name.startswith("resnet") and name[6:] in ("8", "20", "32", "56"):
        n, w = (int(name[6:]) - 2) // 6, options.get("width", 16)
        return 9 * w * w * (11 + 21 * (2 * n - 1)), 4 * w
    if name == "densenet":
        layers, g = max(options.get("depth", 150) - 4, 0) // 3, options.get("growth_rate", 12)
        return 9 * layers * g * g, g
    return 0, 0


def _check_size(name, num_classes, in_channels, image_size, feature_dim, centers, options) -> None:
    """The memory guard for the widths, before any layer is built: the backbone's least parameter count, the
    extra layer and the head (K + F rows), at 16 bytes per parameter for training (float32 weight, gradient and
    two Adam moments)."""
    count, out_dim = _least_params(name, in_channels, image_size, options)
    dim = out_dim if feature_dim is None else feature_dim
    if feature_dim is not None:
        count += (out_dim + 1) * feature_dim
    count += (num_classes + sum(centers or ())) * (dim + 1)
    check_memory(16 * count, f"model {name!r} with at least {count:,} parameters (feature width {dim})",
                 "lower the widths (model.options, model.feature_dim)")


def build_model(name: str, num_classes: int, *, in_channels: int = 3, image_size: int = 32, feature_dim=None,
                head: str = "linear", bias: bool = True, centers_per_class=None, theta: float = 0.2,
                normalize_features: bool = False, seed: int = 0, **arch_options) -> NCModel:
    """Build a classifier returning ``(features, logits)``; see the module docstring and ``MODELS``/``HEADS``.

    ``arch_options`` go to the backbone: ``widths``/``batch_norm`` (mlp), ``batch_norm`` (lenet), ``shortcut`` "A"/"B" and ``width``
    (first-stage width, 16; the stages are width × 1/2/4) (CIFAR ResNets),
    ``depth``/``growth_rate``/``reduction``/``bottleneck`` (densenet; default DenseNet-BC-150, growth 12).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose one of {list(HEADS)}")
    check_scalar(num_classes, "num_classes", Integral, low=2)
    check_scalar(in_channels, "in_channels", Integral, low=1)
    check_scalar(image_size, "image_size", Integral, low=1)
    check_scalar(seed, "seed", Integral)
    if feature_dim is not None:
        check_scalar(feature_dim, "feature_dim", Integral, low=1)
    known = list(inspect.signature(MODELS[name]).parameters)[2:]
    unknown = sorted(set(arch_options) - set(known))
    if unknown:
        raise TypeError(f"model {name!r} got unknown option(s) {unknown}; known options: {known or 'none'}")
    f = _centers(centers_per_class, num_classes) if head == "multicenter" else None
    if head == "multicenter":
        theta = check_theta(theta)
    _check_size(name, num_classes, in_channels, image_size, feature_dim, f, arch_options)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = MODELS[name](in_channels, image_size, **arch_options)
        dim = backbone.out_dim if feature_dim is None else feature_dim
        if f is not None and dim < sum(f) + num_classes:
            need = sum(f) + num_classes
            raise ValueError(f"head='multicenter' with {sum(f)} centers for {num_classes} classes needs a feature "
                             f"width >= (f+1)K = {need}; the feature width is {dim}: pass feature_dim={need} (or more) "
                             "to add the extra linear layer")
        expand = nn.Identity() if feature_dim is None else nn.Linear(backbone.out_dim, feature_dim)
        if head == "linear":
            classifier = LinearHead(dim, num_classes, bias=bias)
        elif head == "normed":
            classifier = NormedHead(dim, num_classes)
        elif head == "multicenter":
            classifier = MultiCenterHead.build(dim, f, theta, seed)
        else:
            classifier = FixedHead.from_geometry(head, dim, num_classes, seed)
    return NCModel(backbone, expand, classifier, normalize_features)

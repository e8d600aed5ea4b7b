"""Models and heads for training towards neural collapse.

``build_model(name, num_classes, ...)`` returns an ``NCModel`` whose forward gives ``(features, logits)``;
``model.head.weight`` is the (K, d) classifier for NC metrics and ``model.feature_layers()`` lists the blocks
for layer-wise probes. Backbones: MLP, LeNet-5, VGG-11, CIFAR ResNet-20/32/56 (option-A shortcuts),
ResNet-18/50 with a CIFAR stem, DenseNet-BC. Heads: see ``ncollapse.nn.heads``.
"""

from .build import HEADS, MODELS, NCModel, build_model
from .heads import FixedHead, LinearHead, MultiCenterHead, NormedHead, gcr_scores, ncmc_centers

__all__ = ["build_model", "NCModel", "MODELS", "HEADS", "LinearHead", "NormedHead", "FixedHead",
           "MultiCenterHead", "gcr_scores", "ncmc_centers"]

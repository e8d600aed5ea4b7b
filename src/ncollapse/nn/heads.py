"""Classifier heads. Every head maps the (widened) backbone feature h to ``(features, logits)``.

* ``LinearHead``: learnable W h + b (bias optional); ``features`` = h.
* ``NormedHead``: cosine classifier ⟨h/‖h‖, w_k/‖w_k‖⟩, no bias (Cao et al. 2019, LDAM code's "NormedLinear");
  the LDAM loss applies the scale s.
* ``FixedHead``: fixed unit classifier rows from ``ncollapse.geometry`` (simplex ETF, orthogonal, d-cube,
  d-orthoplex) after BatchNorm1d; logits ⟨BN(h)/‖BN(h)‖, w_k⟩ (SETF, Yang et al. 2022); ``features`` = BN(h).
* ``MultiCenterHead``: NCMC (Yan et al. 2024, Def. 3.2 and App. F): BatchNorm1d, then the fixed multi-center
  frame; logits are the regular rule (RCR) ⟨BN(h)/‖BN(h)‖, w_k⟩ with the K classifier vectors W_0;
  ``predict(features, rule="gcr")`` gives the generalised rule argmax_k max_j ⟨w_j^(k), ĥ⟩ (§3.1).
Fixed classifiers are buffers (saved in checkpoints, never trained); the BatchNorm keeps its affine parameters.
"""

from __future__ import annotations

import math
from numbers import Integral

import torch
import torch.nn.functional as F
from torch import nn

from ..geometry import MultiCenterFrame, class_aware_centers, fixed_frame, multicenter_frame
from ..validation import check_counts, check_scalar

__all__ = ["LinearHead", "NormedHead", "FixedHead", "MultiCenterHead", "gcr_scores", "ncmc_centers"]


class LinearHead(nn.Linear):
    """Learnable linear classifier; ``weight`` (K, d), ``bias`` (K,) or None."""

    def __init__(self, dim: int, num_classes: int, bias: bool = True):
        super().__init__(dim, num_classes, bias=bias)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return h, super().forward(h)


class NormedHead(nn.Module):
    """Cosine classifier (Cao et al. 2019, LDAM-DRW CIFAR models): z_k = ⟨h/‖h‖, w_k/‖w_k‖⟩ ∈ [−1, 1]."""

    bias = None

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        w = torch.empty(num_classes, dim).uniform_(-1.0, 1.0)
        self.weight = nn.Parameter(F.normalize(w, dim=1))

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return h, F.normalize(h, dim=1) @ F.normalize(self.weight, dim=1).T


class FixedHead(nn.Module):
    """BatchNorm1d + L2 normalisation + fixed classifier rows (SETF, Yang et al. 2022, and its ETF classifier code)."""

    bias = None

    def __init__(self, vectors: torch.Tensor):
        super().__init__()
        self.bn = nn.BatchNorm1d(vectors.shape[1])
        self.register_buffer("weight", vectors.to(torch.get_default_dtype()).clone())

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.bn(h)
        return features, F.normalize(features, dim=1) @ self.weight.T

    @classmethod
    def from_geometry(cls, geometry: str, dim: int, num_classes: int, seed: int | None = 0) -> "FixedHead":
        return cls(fixed_frame(geometry, num_classes, dim, seed))


def gcr_scores(unit_features: torch.Tensor, centers: torch.Tensor, owner: torch.Tensor,
               num_classes: int) -> torch.Tensor:
    """max_j ⟨w_j^(k), ĥ⟩ per class, a (B, K) tensor (Yan et al. 2024, §3.1 GCR), one GEMM and a scatter-max."""
    scores = unit_features @ centers.T
    out = scores.new_full((scores.shape[0], num_classes), -math.inf)
    return out.scatter_reduce(1, owner.expand_as(scores), scores, reduce="amax")


def ncmc_centers(class_counts, f: int, strategy: str = "cal") -> list[int]:
    """Centers per class for NCMC (Yan et al. 2024): ``"al"`` f for every class, ``"cal"`` the class-aware
    counts of §3.5 computed on the counts sorted head to tail and mapped back to the class order."""
    n = check_counts(class_counts, "class_counts")
    check_scalar(f, "f", Integral, low=1)
    if strategy == "al":
        return [int(f)] * len(n)
    if strategy == "cal":
        return class_aware_centers(n, f, order="sorted")
    raise ValueError(f"strategy == {strategy!r}, must be 'al' (f_k = f) or 'cal' (class-aware f_k)")


class MultiCenterHead(FixedHead):
    """NCMC head (Yan et al. 2024): BN → fixed frame; ``weight`` = W_0 (K, d), ``centers`` = W (F, d).

    ``frame`` is the ``MultiCenterFrame`` the head computes with (rebuilt from its buffers, so it always
    matches a loaded checkpoint).
    """

    def __init__(self, frame: MultiCenterFrame):
        super().__init__(frame.classifier)
        dtype = torch.get_default_dtype()
        self.register_buffer("centers", frame.centers.to(dtype).clone())
        self.register_buffer("owner", frame.owner.clone())
        self.centers_per_class = tuple(frame.centers_per_class)
        self.theta = float(frame.theta)

    @classmethod
    def build(cls, dim: int, centers_per_class, theta: float = 0.2, seed: int | None = 0) -> "MultiCenterHead":
        return cls(multicenter_frame(dim, centers_per_class, theta, seed))

    @property
    def frame(self) -> MultiCenterFrame:
        return MultiCenterFrame(self.weight.detach().double(), self.centers.detach().double(), self.owner,
                                self.centers_per_class, self.theta)

    def predict(self, features: torch.Tensor, rule: str = "rcr") -> torch.Tensor:
        """Class predictions from ``features`` (the BN output): RCR (App. F) or GCR (§3.1)."""
        unit = F.normalize(features, dim=1)
        if rule == "rcr":
            return (unit @ self.weight.T).argmax(1)
        if rule == "gcr":
            return gcr_scores(unit, self.centers, self.owner, self.weight.shape[0]).argmax(1)
        raise ValueError(f"rule == {rule!r}, must be 'rcr' (regular rule) or 'gcr' (generalised rule)")

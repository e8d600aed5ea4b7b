"""``NCMCStats``: the streamed NCMC collapse statistics (Yan et al. 2024, §4.3)."""

from __future__ import annotations

import math

import torch

from ..validation import check_device, check_features_labels
from .contract import _Accumulator, _default_dtype, _dist

__all__ = ["NCMCStats"]


class NCMCStats(_Accumulator):
    """Streaming NCMC collapse statistics (Yan et al. 2024, §4.3; ncmc.md §5).

    Per sample of class k: c = ‖h/‖h‖ − w̄^(k)/‖w̄^(k)‖‖² (collapse to the mean of the class's centers) and
    v = 1 − (h/‖h‖)·(w_k/‖w_k‖) (variability against the classifier). Mean and population std of c and the
    mean of v are kept with Chan et al.'s pairwise update, so a std near zero keeps its precision. The state
    (count, mean, M2, Σ v) lives on ``device`` (default: the frame's device), as do the frame's targets.
    """

    def __init__(self, frame, device=None, dtype: torch.dtype | None = None):
        self.device = frame.classifier.device if device is None else check_device(device)
        self.dtype = _default_dtype(self.device) if dtype is None else dtype
        mean_centers = frame.mean_centers()
        self.targets = (mean_centers / mean_centers.norm(dim=1, keepdim=True)).to(self.device, self.dtype)
        self.classifier = (frame.classifier / frame.classifier.norm(dim=1, keepdim=True)).to(self.device, self.dtype)
        scalar = lambda dev: torch.zeros((), dtype=self.dtype, device=dev)  # noqa: E731
        self._declare({"num_classes": self.targets.shape[0], "dim": self.targets.shape[1]},
                      count=lambda dev: torch.zeros((), dtype=torch.int64, device=dev),
                      mean=scalar, m2=scalar, variability_sum=scalar)

    def _moved(self) -> tuple[str, ...]:
        return ("targets", "classifier")

    def update(self, features, labels) -> None:
        x, y = check_features_labels(features, labels, self.targets.shape[0])
        if x.shape[1] != self.targets.shape[1]:
            raise ValueError(f"features have dim {x.shape[1]}; the frame has dim {self.targets.shape[1]}")
        if x.shape[0] == 0:
            return
        x, y = x.to(self.device, self.dtype), y.to(self.device)
        unit = x / x.norm(dim=1, keepdim=True).clamp(min=torch.finfo(x.dtype).tiny)
        collapse = (unit - self.targets[y]).square().sum(1)
        variability = 1.0 - (unit * self.classifier[y]).sum(1)
        self._combine(torch.tensor(x.shape[0], device=self.device), collapse.mean(),
                      (collapse - collapse.mean()).square().sum(), variability.sum())

    def _combine(self, n_b, mean_b, m2_b, variability_b) -> None:
        """Chan et al. merge of (n, mean, M2, Σ v) into the state."""
        n_a, n_b_f = self.count.to(self.dtype), n_b.to(self.dtype)
        total = n_a + n_b_f
        delta = mean_b - self.mean
        self.m2 = self.m2 + m2_b + delta.square() * n_a * n_b_f / total
        self.mean = self.mean + delta * n_b_f / total
        self.variability_sum = self.variability_sum + variability_b
        self.count = self.count + n_b

    def _check_like(self, other, what: str) -> None:
        super()._check_like(other, what)
        if not torch.equal(other.targets.to(self.targets), self.targets):
            raise ValueError(f"cannot {what} NCMCStats of different frames")

    def _merge(self, other: "NCMCStats") -> None:
        if int(other.count):
            self._combine(other.count.to(self.device), other.mean.to(self.device), other.m2.to(self.device),
                          other.variability_sum.to(self.device))

    def all_reduce(self, group=None) -> "NCMCStats":
        """Exact combination over ranks: sum n, n·mean, Σ v; then the shifted M2. Sends state-device tensors."""
        dist = _dist()
        count = self.count.clone()
        dist.all_reduce(count, group=group)
        local = torch.stack([self.mean * self.count.to(self.dtype), self.variability_sum])
        dist.all_reduce(local, group=group)
        mean = local[0] / count.clamp(min=1).to(self.dtype)
        m2 = self.m2 + self.count.to(self.dtype) * (self.mean - mean).square()
        dist.all_reduce(m2, group=group)
        self.count, self.mean, self.m2, self.variability_sum = count, mean, m2, local[1]
        return self

    def finalize(self) -> dict:
        """Float64 CPU {count, mean, std (population), variability}; an error if nothing was seen."""
        count = int(self.count)
        self._require_samples(count)
        return {"count": count, "mean": float(self.mean),
                "std": math.sqrt(max(float(self.m2) / count, 0.0)),
                "variability": float(self.variability_sum) / count}

"""``NCCCounts``: the second pass for NC4, nearest-class-center hits and agreement with the classifier."""

from __future__ import annotations

import torch

from ..validation import check_classifier, check_device, check_features, check_features_labels, check_size
from ..validation import classifier_fingerprint
from .classes import ClassStats
from .contract import _Accumulator, _dist

__all__ = ["NCCCounts"]


class NCCCounts(_Accumulator):
    """Second pass for NC4: per-class counts of nearest-class-center (NCC) hits and, with a classifier,
    of NCC/classifier agreement and classifier hits (Papyan et al. 2020, §NC4).

    NCC(h) = argmin_k ‖h − μ_k‖² over classes present in the statistics, searched over tiles of
    ``tile_size`` classes and blocks of samples (at most ``SCORES`` scores at once, whatever the batch); the
    classifier decision is argmax_k (W h + b)_k, bias included when given, searched the same way. The search
    runs in float64 on the CPU and float32 on CUDA/MPS unless ``dtype`` says otherwise. ``classifier`` is a digest
    of the float64 (W, b) scored against (None without W); ``measure`` refuses a pass scored against another.
    """

    SCORES = 1 << 22  #: scores held at once by the search (32 MB in float64)

    def __init__(self, means: torch.Tensor, present: torch.Tensor | None = None, W=None, b=None, device=None,
                 tile_size: int = 4096, dtype: torch.dtype | None = None):
        self.tile_size = check_size(tile_size, "tile_size")
        means = check_features(means, "means")
        self.device = means.device if device is None else check_device(device)
        self.dtype = (torch.float64 if self.device.type == "cpu" else torch.float32) if dtype is None else dtype
        if not isinstance(self.dtype, torch.dtype) or not self.dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype such as torch.float64; got {self.dtype!r}")
        self.means = means.to(self.device, self.dtype)
        k = self.means.shape[0]
        present = torch.ones(k, dtype=torch.bool) if present is None else torch.as_tensor(present).to(torch.bool)
        if tuple(present.shape) != (k,):
            raise ValueError(f"present has shape {tuple(present.shape)}; expected ({k},), one flag per class mean")
        self.penalty = torch.where(present.to(self.device), 0.0, float("inf")).to(self.dtype)
        self.sq_norms = self.means.square().sum(1) + self.penalty
        self.W = self.b = None
        W, b = check_classifier(W, b, num_classes=k, dim=self.means.shape[1])
        self.classifier = classifier_fingerprint(W, b)  #: digest of the (W, b) scored against; None without one
        if W is not None:
            self.W = W.to(self.device, self.dtype)
            self.b = torch.zeros(k, dtype=self.dtype, device=self.device) if b is None else b.to(self.device, self.dtype)
        zeros = lambda dev: torch.zeros(k, dtype=torch.int64, device=dev)  # noqa: E731
        self._declare({"num_classes": k, "dim": self.means.shape[1], "classifier": W is not None},
                      ncc_correct=zeros, agree=zeros, net_correct=zeros, counts=zeros)

    def _moved(self) -> tuple[str, ...]:
        return ("means", "penalty", "sq_norms", "W", "b")

    @classmethod
    def from_stats(cls, stats: "ClassStats", W=None, b=None, **kwargs) -> "NCCCounts":
        return cls(stats.means, stats.counts > 0, W=W, b=b, device=stats.device, **kwargs)

    def _tiled_argmax(self, x: torch.Tensor, rows: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """argmax_k (x rowsᵀ − offset)_k over tiles of classes and blocks of samples (at most ``SCORES``
        scores at once, whatever the batch), keeping the first maximiser on ties."""
        tile = min(self.tile_size, rows.shape[0])
        block = max(1, self.SCORES // tile)
        return torch.cat([self._block_argmax(x[i:i + block], rows, offset) for i in range(0, x.shape[0], block)])

    def _block_argmax(self, x: torch.Tensor, rows: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        best = torch.full((x.shape[0],), -float("inf"), dtype=x.dtype, device=x.device)
        arg = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        for start in range(0, rows.shape[0], self.tile_size):
            # x rowsᵀ − offset in one BLAS call (beta = −1): no second pass over the scores
            scores = torch.addmm(offset[None, start:start + self.tile_size], x, rows[start:start + self.tile_size].T,
                                 beta=-1)
            value, index = scores.max(1)
            better = value > best
            best = torch.where(better, value, best)
            arg = torch.where(better, index + start, arg)
        return arg

    def predict_ncc(self, x: torch.Tensor) -> torch.Tensor:
        """argmin_k ‖x − μ_k‖² = argmax_k (x·μ_k − ‖μ_k‖²/2)."""
        return self._tiled_argmax(x, self.means, 0.5 * self.sq_norms)

    def update(self, features, labels, decisions=None) -> None:
        """Count a batch; ``decisions`` (n,) are the classifier's argmax(W h + b) when the caller has them already
        (the model's own logits), which skips that search."""
        x, y = check_features_labels(features, labels, self.means.shape[0])
        if x.shape[1] != self.means.shape[1]:
            raise ValueError(f"features have dim {x.shape[1]}; the class means have dim {self.means.shape[1]}")
        if decisions is not None and (self.W is None or tuple(decisions.shape) != (x.shape[0],)):
            raise ValueError(f"decisions have shape {tuple(decisions.shape)}; expected ({x.shape[0]},), one per sample"
                             + ("" if self.W is not None else ", and they need NCCCounts(W=...)"))
        x, y = x.to(self.device, self.dtype), y.to(self.device)
        k = self.means.shape[0]
        ncc = self.predict_ncc(x)
        self.counts += torch.bincount(y, minlength=k)
        self.ncc_correct += torch.bincount(y[ncc == y], minlength=k)
        if self.W is not None:
            net = self._tiled_argmax(x, self.W, -self.b) if decisions is None else decisions.to(self.device)
            self.agree += torch.bincount(y[ncc == net], minlength=k)
            self.net_correct += torch.bincount(y[net == y], minlength=k)

    def _check_like(self, other, what: str) -> None:
        super()._check_like(other, what)
        if not torch.equal(other.means.to(self.means), self.means):
            raise ValueError(f"cannot {what} NCCCounts measured against different class means")
        if other.classifier != self.classifier:
            raise ValueError(f"cannot {what} NCCCounts scored against different classifiers (W, b)")

    def _merge(self, other: "NCCCounts") -> None:
        for name in self._state:
            getattr(self, name).add_(getattr(other, name).to(self.device))

    def all_reduce(self, group=None) -> "NCCCounts":
        dist = _dist()
        for name in self._state:
            dist.all_reduce(getattr(self, name), group=group)
        return self

    def finalize(self) -> dict:
        """Per-class int64 CPU counts {counts, ncc_correct, agree, net_correct}; an error if nothing was seen."""
        self._require_samples(int(self.counts.sum()))
        return {name: getattr(self, name).to("cpu") for name in self._state}

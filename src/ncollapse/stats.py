"""Streaming, mergeable per-class statistics of features: the one state every NC metric reads.

``ClassStats`` keeps, per class k, the count n_k, the running mean μ_k and the squared deviation
Σ_i ‖h_i − μ_k‖², plus the pooled centred scatter Σ_k Σ_i (h_i − μ_k)(h_i − μ_k)ᵀ (d × d) and, when
asked, one scatter per class (K × d × d). Batches are folded in with the pairwise update of Chan,
Golub & LeVeque (1979): the batch is centred on its own class means (one GEMM), and the shift between
old and batch means adds n_a n_b / (n_a + n_b) δ δᵀ. No raw second moments are ever subtracted, so
near-collapsed features (within-class spread 1e-4 around means of norm 10) keep their precision.

``NCCCounts`` is the second pass: given finalized class means (and optionally W, b) it counts, per
class, nearest-class-center hits and agreement with the linear classifier (NC4, Papyan et al. 2020).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .validation import check_classifier, check_features_labels, check_scalar

__all__ = ["ClassStats", "FinalStats", "NCCCounts", "NCMCStats"]


def _default_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


@dataclass(frozen=True)
class FinalStats:
    """Float64 CPU snapshot of a ``ClassStats``: counts (K,), means (K, d), sq_dev (K,),
    scatter (d, d) pooled within-class scatter (not divided by N), class_scatter (K, d, d) or None."""

    counts: torch.Tensor
    means: torch.Tensor
    sq_dev: torch.Tensor
    scatter: torch.Tensor
    class_scatter: torch.Tensor | None

    @property
    def num_classes(self) -> int:
        return self.counts.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_samples(self) -> int:
        return int(self.counts.sum())


class ClassStats:
    """Per-class count, mean, squared deviation and centred scatter, updated batch by batch.

    Parameters
    ----------
    num_classes, dim : the label range [0, K) and feature width d.
    dtype : accumulation dtype (default float64; float32 on MPS, which has no float64).
    device : where the state lives (default CPU); batches are moved there.
    per_class_cov : also keep one d × d scatter per class (costs K·d² memory).
    check_finite : reject NaN/Inf features in ``update`` (one cheap sum per batch).

    Examples
    --------
    >>> stats = ClassStats(num_classes=3, dim=2)
    >>> stats.update(torch.tensor([[1., 0.], [0., 1.], [1., 1.]]), torch.tensor([0, 1, 2]))
    >>> stats.counts.tolist()
    [1, 1, 1]
    """

    def __init__(self, num_classes: int, dim: int, dtype: torch.dtype | None = None, device=None,
                 per_class_cov: bool = False, check_finite: bool = True):
        check_scalar(num_classes, "num_classes", int, low=1)
        check_scalar(dim, "dim", int, low=1)
        self.num_classes, self.dim = num_classes, dim
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.dtype = _default_dtype(self.device) if dtype is None else dtype
        if not self.dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating dtype; got {self.dtype}")
        self.per_class_cov = per_class_cov
        self.check_finite = check_finite
        kw = dict(dtype=self.dtype, device=self.device)
        self.counts = torch.zeros(num_classes, dtype=torch.int64, device=self.device)
        self.means = torch.zeros(num_classes, dim, **kw)
        self.sq_dev = torch.zeros(num_classes, **kw)
        self.scatter = torch.zeros(dim, dim, **kw)
        self.class_scatter = torch.zeros(num_classes, dim, dim, **kw) if per_class_cov else None

    def __repr__(self) -> str:
        return (f"ClassStats(num_classes={self.num_classes}, dim={self.dim}, num_samples={int(self.counts.sum())}, "
                f"dtype={self.dtype}, device={self.device}, per_class_cov={self.per_class_cov})")

    # -- accumulation -------------------------------------------------------------------------
    def update(self, features, labels) -> None:
        """Fold one batch (B, d) with labels (B,) into the statistics (batched tensor ops only)."""
        x, y = check_features_labels(features, labels, self.num_classes, finite=self.check_finite)
        if x.shape[1] != self.dim:
            raise ValueError(f"features have dim {x.shape[1]}; this ClassStats was built for dim={self.dim}")
        if x.shape[0] == 0:
            return
        acc = self.dtype
        x = x.to(self.device, acc)
        y = y.to(self.device)
        counts = torch.bincount(y, minlength=self.num_classes)
        sums = torch.zeros(self.num_classes, self.dim, dtype=acc, device=self.device).index_add_(0, y, x)
        present = counts > 0
        means = torch.zeros_like(sums)
        means[present] = sums[present] / counts[present, None].to(acc)
        centred = x - means[y]
        sq_dev = torch.zeros(self.num_classes, dtype=acc, device=self.device).index_add_(0, y, centred.square().sum(1))
        scatter = centred.T @ centred
        class_scatter = self._class_scatter(centred, y) if self.per_class_cov else None
        self._combine(counts, means, sq_dev, scatter, class_scatter)

    def _class_scatter(self, centred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-class scatter of a centred batch as one GEMM: (one-hot ⊗ x)ᵀ x, reshaped to (K, d, d)."""
        classes = torch.unique(labels)
        onehot = (labels[:, None] == classes[None, :]).to(centred.dtype)
        stacked = (onehot[:, :, None] * centred[:, None, :]).reshape(centred.shape[0], -1)
        out = torch.zeros(self.num_classes, self.dim, self.dim, dtype=centred.dtype, device=centred.device)
        out[classes] = (stacked.T @ centred).reshape(len(classes), self.dim, self.dim)
        return out

    def _combine(self, counts, means, sq_dev, scatter, class_scatter) -> None:
        """Chan et al. pairwise merge of another set of per-class (n, μ, M2) into this one."""
        n_a = self.counts.to(self.dtype)
        n_b = counts.to(self.dtype)
        total = n_a + n_b
        active = counts > 0
        weight = torch.where(active, n_a * n_b / total.clamp(min=1), torch.zeros_like(total))
        delta = means.to(self.dtype) - self.means
        self.scatter += scatter.to(self.dtype) + (delta * weight[:, None]).T @ delta
        self.sq_dev += sq_dev.to(self.dtype) + weight * delta.square().sum(1)
        if self.per_class_cov:
            self.class_scatter += class_scatter.to(self.dtype) + weight[:, None, None] * delta[:, :, None] * delta[:, None, :]
        ratio = torch.where(active, n_b / total.clamp(min=1), torch.zeros_like(total))
        self.means += delta * ratio[:, None]
        self.counts += counts

    def merge(self, other: "ClassStats") -> "ClassStats":
        """Fold another ``ClassStats`` (e.g. a data shard) into this one; returns self."""
        if not isinstance(other, ClassStats):
            raise TypeError(f"can only merge a ClassStats; got {type(other).__name__}")
        if (other.num_classes, other.dim) != (self.num_classes, self.dim):
            raise ValueError(f"cannot merge ClassStats of shape (K={other.num_classes}, d={other.dim}) "
                             f"into (K={self.num_classes}, d={self.dim})")
        if other.per_class_cov != self.per_class_cov:
            raise ValueError("cannot merge ClassStats with and without per_class_cov")
        cs = other.class_scatter.to(self.device) if self.per_class_cov else None
        self._combine(other.counts.to(self.device), other.means.to(self.device), other.sq_dev.to(self.device),
                      other.scatter.to(self.device), cs)
        return self

    def all_reduce(self, group=None) -> "ClassStats":
        """Combine the statistics of every rank of ``torch.distributed`` in place (exact, two reductions).

        First the counts and n_k μ_k are summed to get the global means; then every rank adds the shift of
        its own means, Σ_k n_rk (μ_rk − μ_k)(μ_rk − μ_k)ᵀ, to its scatter, and the scatters are summed.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("all_reduce needs an initialised torch.distributed process group")
        counts = self.counts.clone()
        dist.all_reduce(counts, group=group)
        weighted = self.means * self.counts[:, None].to(self.dtype)
        dist.all_reduce(weighted, group=group)
        global_means = torch.where(counts[:, None] > 0, weighted / counts.clamp(min=1)[:, None].to(self.dtype),
                                   torch.zeros_like(weighted))
        delta = self.means - global_means
        n_r = self.counts.to(self.dtype)
        scatter = self.scatter + (delta * n_r[:, None]).T @ delta
        sq_dev = self.sq_dev + n_r * delta.square().sum(1)
        dist.all_reduce(scatter, group=group)
        dist.all_reduce(sq_dev, group=group)
        if self.per_class_cov:
            class_scatter = self.class_scatter + n_r[:, None, None] * delta[:, :, None] * delta[:, None, :]
            dist.all_reduce(class_scatter, group=group)
            self.class_scatter = class_scatter
        self.counts, self.means, self.scatter, self.sq_dev = counts, global_means, scatter, sq_dev
        return self

    # -- results and persistence ----------------------------------------------------------------
    def finalize(self) -> FinalStats:
        """Return a float64 CPU snapshot for the metrics."""
        f64 = dict(dtype=torch.float64, device="cpu")
        return FinalStats(
            counts=self.counts.to("cpu"),
            means=self.means.to(**f64),
            sq_dev=self.sq_dev.to(**f64),
            scatter=self.scatter.to(**f64),
            class_scatter=None if self.class_scatter is None else self.class_scatter.to(**f64),
        )

    def state_dict(self) -> dict:
        state = {"num_classes": self.num_classes, "dim": self.dim, "per_class_cov": self.per_class_cov,
                 "counts": self.counts, "means": self.means, "sq_dev": self.sq_dev, "scatter": self.scatter}
        if self.per_class_cov:
            state["class_scatter"] = self.class_scatter
        return state

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict from ClassStats.state_dict(); got {type(state).__name__}")
        missing = {"num_classes", "dim", "per_class_cov", "counts", "means", "sq_dev", "scatter"} - set(state)
        if missing:
            raise ValueError(f"ClassStats state is missing keys: {sorted(missing)}")
        shape = (state["num_classes"], state["dim"], bool(state["per_class_cov"]))
        if shape != (self.num_classes, self.dim, self.per_class_cov):
            raise ValueError(f"ClassStats state has (K, d, per_class_cov) = {shape}; "
                             f"expected {(self.num_classes, self.dim, self.per_class_cov)}")
        kw = dict(dtype=self.dtype, device=self.device)
        self.counts = state["counts"].to(self.device, torch.int64).clone()
        self.means = state["means"].to(**kw).clone()
        self.sq_dev = state["sq_dev"].to(**kw).clone()
        self.scatter = state["scatter"].to(**kw).clone()
        if self.per_class_cov:
            self.class_scatter = state["class_scatter"].to(**kw).clone()

    @classmethod
    def from_features(cls, features, labels, num_classes: int | None = None, batch_size: int = 8192, **kwargs):
        """Build statistics from in-memory features, streamed in batches of ``batch_size``."""
        x, y = check_features_labels(features, labels, num_classes)
        k = int(y.max()) + 1 if num_classes is None else num_classes
        stats = cls(k, x.shape[1], **kwargs)
        for start in range(0, x.shape[0], batch_size):
            stats.update(x[start:start + batch_size], y[start:start + batch_size])
        return stats


class NCCCounts:
    """Second pass for NC4: per-class counts of nearest-class-center (NCC) hits and, with a classifier,
    of NCC/classifier agreement and classifier hits (Papyan et al. 2020, §NC4).

    NCC(h) = argmin_k ‖h − μ_k‖² over classes present in the statistics; the classifier decision is
    argmax_k (W h + b)_k, bias included when given.
    """

    def __init__(self, means: torch.Tensor, present: torch.Tensor | None = None, W=None, b=None, device=None):
        self.device = means.device if device is None else torch.device(device)
        dtype = _default_dtype(self.device)
        self.means = means.to(self.device, dtype)
        k = self.means.shape[0]
        self.present = torch.ones(k, dtype=torch.bool) if present is None else present.to("cpu", torch.bool)
        self.penalty = torch.where(self.present, 0.0, float("inf")).to(self.device, dtype)
        self.W = self.b = None
        if W is not None:
            W, b = check_classifier(W, b, num_classes=k, dim=self.means.shape[1])
            self.W, self.b = W.to(self.device, dtype), None if b is None else b.to(self.device, dtype)
        self.ncc_correct = torch.zeros(k, dtype=torch.int64, device=self.device)
        self.agree = torch.zeros(k, dtype=torch.int64, device=self.device)
        self.net_correct = torch.zeros(k, dtype=torch.int64, device=self.device)
        self.counts = torch.zeros(k, dtype=torch.int64, device=self.device)

    @classmethod
    def from_stats(cls, stats: "ClassStats", W=None, b=None) -> "NCCCounts":
        return cls(stats.means, stats.counts.to("cpu") > 0, W=W, b=b, device=stats.device)

    def predict_ncc(self, x: torch.Tensor) -> torch.Tensor:
        dist = (self.means.square().sum(1)[None, :] - 2.0 * x @ self.means.T) + self.penalty[None, :]
        return dist.argmin(1)

    def update(self, features, labels) -> None:
        x, y = check_features_labels(features, labels, self.means.shape[0])
        if x.shape[1] != self.means.shape[1]:
            raise ValueError(f"features have dim {x.shape[1]}; the class means have dim {self.means.shape[1]}")
        x, y = x.to(self.device, self.means.dtype), y.to(self.device)
        k = self.means.shape[0]
        ncc = self.predict_ncc(x)
        self.counts += torch.bincount(y, minlength=k)
        self.ncc_correct += torch.bincount(y[ncc == y], minlength=k)
        if self.W is not None:
            logits = x @ self.W.T + (0.0 if self.b is None else self.b[None, :])
            net = logits.argmax(1)
            self.agree += torch.bincount(y[ncc == net], minlength=k)
            self.net_correct += torch.bincount(y[net == y], minlength=k)

    def all_reduce(self, group=None) -> "NCCCounts":
        import torch.distributed as dist

        for t in (self.ncc_correct, self.agree, self.net_correct, self.counts):
            dist.all_reduce(t, group=group)
        return self


class NCMCStats:
    """Streaming NCMC collapse statistics (Yan et al. 2024, §4.3; ncmc.md §5).

    Per sample of class k: c = ‖h/‖h‖ − w̄^(k)/‖w̄^(k)‖‖² (collapse to the mean of the class's centers) and
    v = 1 − (h/‖h‖)·(w_k/‖w_k‖) (variability against the classifier). Mean and population std of c and the
    mean of v are kept with Chan et al.'s pairwise update, so a std near zero keeps its precision.
    """

    def __init__(self, frame):
        self.device = frame.classifier.device
        dtype = _default_dtype(self.device)
        mean_centers = frame.mean_centers()
        self.targets = (mean_centers / mean_centers.norm(dim=1, keepdim=True)).to(dtype)
        self.classifier = (frame.classifier / frame.classifier.norm(dim=1, keepdim=True)).to(dtype)
        self.count = 0
        self.mean = torch.zeros((), dtype=dtype)
        self.m2 = torch.zeros((), dtype=dtype)
        self.variability_sum = torch.zeros((), dtype=dtype)

    def update(self, features, labels) -> None:
        x, y = check_features_labels(features, labels, self.targets.shape[0])
        if x.shape[1] != self.targets.shape[1]:
            raise ValueError(f"features have dim {x.shape[1]}; the frame has dim {self.targets.shape[1]}")
        if x.shape[0] == 0:
            return
        x = x.to(self.targets.device, self.targets.dtype)
        y = y.to(self.targets.device)
        unit = x / x.norm(dim=1, keepdim=True).clamp(min=torch.finfo(x.dtype).tiny)
        collapse = (unit - self.targets[y]).square().sum(1)
        variability = 1.0 - (unit * self.classifier[y]).sum(1)
        n_b = x.shape[0]
        mean_b = collapse.mean()
        m2_b = (collapse - mean_b).square().sum()
        total = self.count + n_b
        delta = mean_b.cpu() - self.mean
        self.m2 = self.m2 + m2_b.cpu() + delta.square() * self.count * n_b / total
        self.mean = self.mean + delta * n_b / total
        self.variability_sum = self.variability_sum + variability.sum().cpu()
        self.count = total

    def all_reduce(self, group=None) -> "NCMCStats":
        """Exact combination over ranks: sum n, n·mean, variability; then the shifted M2."""
        import torch.distributed as dist

        local = torch.stack([torch.tensor(float(self.count), dtype=self.mean.dtype), self.mean * self.count,
                             self.variability_sum])
        dist.all_reduce(local, group=group)
        count = int(local[0])
        mean = local[1] / max(count, 1)
        m2 = self.m2 + self.count * (self.mean - mean).square()
        dist.all_reduce(m2, group=group)
        self.count, self.mean, self.m2, self.variability_sum = count, mean, m2, local[2]
        return self

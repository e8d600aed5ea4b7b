"""Streaming, mergeable per-class statistics of features: the one state every NC metric reads.

Three accumulators share one state contract (``_Accumulator``): ``update`` folds in a batch with batched
tensor ops, ``merge`` folds in another accumulator (shape and dtype checked), ``all_reduce`` combines the
ranks of ``torch.distributed`` sending only tensors on the state's device, ``reset`` zeroes the state,
``to(device)`` moves it, ``state_dict``/``load_state_dict`` persist it, and ``finalize`` returns a float64
CPU snapshot or raises a clear error when nothing was accumulated.

``ClassStats`` keeps, per class k, the count n_k, the running mean μ_k and the squared deviation
Σ_i ‖h_i − μ_k‖², plus the pooled centred scatter Σ_k Σ_i (h_i − μ_k)(h_i − μ_k)ᵀ (d × d) and, when asked,
one scatter per class (K × d × d). Batches are folded in with the pairwise update of Chan, Golub & LeVeque
(1979) on shifted data (see ``ClassStats.update``), so no raw second moment is ever subtracted.

``NCCCounts`` is the second pass: given finalized class means (and optionally W, b) it counts, per class,
nearest-class-center hits and agreement with the linear classifier (NC4, Papyan et al. 2020); the search
runs over tiles of classes, so its memory is O(batch · tile) for any K.

``NCMCStats`` streams the NCMC collapse statistics (Yan et al. 2024).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .validation import check_classifier, check_features_labels, check_scalar

__all__ = ["ClassStats", "FinalStats", "NCCCounts", "NCMCStats"]

PRECISIONS = ("auto", "float64")


def _default_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _gemm_dtype(features: torch.dtype, state: torch.dtype, precision: str, device: torch.device) -> torch.dtype:
    """Dtype of the per-batch GEMMs: float64 for ``precision="float64"`` (if the state has it); otherwise the
    features' precision (float64 stays float64 on the CPU, anything else and every CUDA input runs float32)."""
    if precision == "float64" and state == torch.float64:
        return torch.float64
    if features == torch.float64 and state == torch.float64 and device.type == "cpu":
        return torch.float64
    return torch.float32


def _dist():
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("all_reduce needs an initialised torch.distributed process group")
    return dist


class _Accumulator:
    """State contract: tensors declared once in ``_state`` (name → zero-maker) plus a ``_config`` of facts
    (sizes, options) that must match for a merge or a load; subclasses write ``update``, ``_merge`` and
    ``all_reduce`` only."""

    _state: dict
    _config: dict
    device: torch.device

    def _declare(self, config: dict, **makers) -> None:
        self._config, self._state = config, makers
        self.reset()

    def reset(self) -> "_Accumulator":
        """Zero every state tensor on the current device; returns self."""
        for name, make in self._state.items():
            setattr(self, name, make(self.device))
        return self

    def to(self, device) -> "_Accumulator":
        """Move the state (and the tensors it is measured against) to ``device``; returns self."""
        self.device = torch.device(device)
        for name in list(self._state) + list(self._moved()):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.to(self.device))
        return self

    def _moved(self) -> tuple[str, ...]:
        """Non-state tensors that follow the state on ``to`` (reference means, classifier, frame)."""
        return ()

    def _check_like(self, other, what: str) -> None:
        name = type(self).__name__
        if not isinstance(other, type(self)):
            raise TypeError(f"can only {what} a {name}; got {type(other).__name__}")
        if other._config != self._config:
            raise ValueError(f"cannot {what} a {name} with {other._config} into one with {self._config}")
        for key in self._state:
            mine, theirs = getattr(self, key), getattr(other, key)
            if mine is None or theirs is None:
                continue
            if mine.shape != theirs.shape or mine.dtype != theirs.dtype:
                raise ValueError(f"cannot {what} {name} state {key!r} of shape {tuple(theirs.shape)} and dtype "
                                 f"{theirs.dtype} into shape {tuple(mine.shape)} and dtype {mine.dtype}")

    def merge(self, other) -> "_Accumulator":
        """Fold another accumulator of the same kind (e.g. a data shard) into this one; returns self."""
        self._check_like(other, "merge")
        self._merge(other)
        return self

    def state_dict(self) -> dict:
        """The config facts and the state tensors (on the state's device)."""
        state = dict(self._config)
        state.update({name: getattr(self, name) for name in self._state if getattr(self, name) is not None})
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict``; the config facts and every tensor's shape must match."""
        name = type(self).__name__
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict from {name}.state_dict(); got {type(state).__name__}")
        wanted = set(self._config) | {k for k in self._state if getattr(self, k) is not None}
        missing = wanted - set(state)
        if missing:
            raise ValueError(f"{name} state is missing keys: {sorted(missing)}")
        config = {key: type(value)(state[key]) for key, value in self._config.items()}
        if config != self._config:
            raise ValueError(f"{name} state has {config}; expected {self._config}")
        loaded = {}
        for key in wanted - set(self._config):
            mine, value = getattr(self, key), torch.as_tensor(state[key])
            if tuple(value.shape) != tuple(mine.shape):
                raise ValueError(f"{name} state {key!r} has shape {tuple(value.shape)}; expected {tuple(mine.shape)}")
            loaded[key] = value.to(self.device, mine.dtype).clone()
        for key, value in loaded.items():
            setattr(self, key, value)

    def _require_samples(self, seen: int) -> None:
        if seen == 0:
            raise ValueError(f"{type(self).__name__} has accumulated no samples; call update(features, labels) first")


@dataclass(frozen=True)
class FinalStats:
    """Float64 CPU snapshot of a ``ClassStats``: counts (K,), means (K, d), sq_dev (K,),
    scatter (d, d) pooled within-class scatter (not divided by N), class_scatter (K, d, d) or None,
    rare_samples (K, m, d) or None: the first min(n_k, m) samples of each class (``ClassStats(rare_below=m+1)``)."""

    counts: torch.Tensor
    means: torch.Tensor
    sq_dev: torch.Tensor
    scatter: torch.Tensor
    class_scatter: torch.Tensor | None
    rare_samples: torch.Tensor | None = None

    def rare_scatter(self, classes: torch.Tensor) -> torch.Tensor | None:
        """Σ_{k ∈ classes} Σ_i (h_i − μ_k)(h_i − μ_k)ᵀ (d × d) from the kept samples, or None when some class
        in ``classes`` (a boolean mask) has more samples than were kept."""
        if self.rare_samples is None or int(self.counts[classes].max()) > self.rare_samples.shape[1]:
            return None
        samples = self.rare_samples[classes]
        held = torch.arange(samples.shape[1])[None, :] < self.counts[classes][:, None]
        centred = ((samples - self.means[classes][:, None, :]) * held[:, :, None]).reshape(-1, self.dim)
        return centred.T @ centred

    @property
    def num_classes(self) -> int:
        return self.counts.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_samples(self) -> int:
        return int(self.counts.sum())


class _Folded:
    """A ``ClassStats`` state tensor: reading it folds the open window in first (``ClassStats._flush``)."""

    def __set_name__(self, owner, name):
        self.slot = "_" + name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        obj._flush()
        return obj.__dict__[self.slot]

    def __set__(self, obj, value):
        obj.__dict__[self.slot] = value


class ClassStats(_Accumulator):
    """Per-class count, mean, squared deviation and centred scatter, updated batch by batch.

    Parameters
    ----------
    num_classes, dim : the label range [0, K) and feature width d.
    dtype : state dtype (default float64; float32 on MPS, which has no float64).
    device : where the state lives (default CPU); batches are moved there.
    per_class_cov : also keep one d × d scatter per class (costs K·d² memory).
    rare_below : keep the first ``rare_below − 1`` samples of every class (costs K·(rare_below − 1)·d memory),
        so ``measure(min_count=m)`` with m ≤ rare_below removes the classes it leaves out from Σ_W exactly,
        without per-class scatters (language-model vocabularies: many rare tokens, K·d² out of reach).
    check_finite : reject NaN/Inf and overflowing features in ``update`` (one min/max pass per batch).
    precision : ``"auto"`` (default) runs the per-batch GEMMs in the features' precision (float32 for
        float32/bfloat16/float16; float64 input stays float64 on the CPU; on CUDA always float32, never a
        float64 GEMM); ``"float64"`` runs every step in float64.

    Examples
    --------
    >>> stats = ClassStats(num_classes=3, dim=2)
    >>> stats.update(torch.tensor([[1., 0.], [0., 1.], [1., 1.]]), torch.tensor([0, 1, 2]))
    >>> stats.counts.tolist()
    [1, 1, 1]
    """

    counts, means, sq_dev = _Folded(), _Folded(), _Folded()
    scatter, class_scatter = _Folded(), _Folded()

    def __init__(self, num_classes: int, dim: int, dtype: torch.dtype | None = None, device=None,
                 per_class_cov: bool = False, check_finite: bool = True, precision: str = "auto", rare_below: int = 1):
        check_scalar(num_classes, "num_classes", int, low=1)
        check_scalar(dim, "dim", int, low=1)
        check_scalar(rare_below, "rare_below", int, low=1)
        if precision not in PRECISIONS:
            raise ValueError(f"precision == {precision!r}, must be one of {PRECISIONS}")
        self.num_classes, self.dim = num_classes, dim
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.dtype = _default_dtype(self.device) if dtype is None else dtype
        if not self.dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating dtype; got {self.dtype}")
        self.per_class_cov, self.check_finite, self.precision = per_class_cov, check_finite, precision
        k, d, acc, kept = num_classes, dim, self.dtype, rare_below - 1
        self.rare_below = rare_below
        self._declare(
            {"num_classes": k, "dim": d, "per_class_cov": per_class_cov, "rare_below": rare_below},
            counts=lambda dev: torch.zeros(k, dtype=torch.int64, device=dev),
            means=lambda dev: torch.zeros(k, d, dtype=acc, device=dev),
            sq_dev=lambda dev: torch.zeros(k, dtype=acc, device=dev),
            scatter=lambda dev: torch.zeros(d, d, dtype=acc, device=dev),
            class_scatter=lambda dev: torch.zeros(k, d, d, dtype=acc, device=dev) if per_class_cov else None,
            rare_samples=lambda dev: torch.zeros(k, kept, d, dtype=acc, device=dev) if kept else None,
        )

    def __repr__(self) -> str:
        return (f"ClassStats(num_classes={self.num_classes}, dim={self.dim}, num_samples={int(self.counts.sum())}, "
                f"dtype={self.dtype}, device={self.device}, per_class_cov={self.per_class_cov}, rare_below={self.rare_below}, "
                f"precision={self.precision!r})")

    # -- accumulation -------------------------------------------------------------------------
    def update(self, features, labels) -> None:
        """Fold one batch (B, d) with labels (B,) into the statistics.

        Shifted-data update (Chan, Golub & LeVeque 1979, eq. 2.1 with the shift of §3), done in windows.
        A class entering a window gets a fixed shift c_k: its running mean, or its mean in this batch if the
        class is new, rounded to the GEMM dtype p. Every per-sample step runs in p: z = x − c_y, S = zᵀz,
        s_k = Σ_{y=k} z, q_k = Σ_{y=k} ‖z‖²; S (its block upper triangle) and q_k go straight into the scatter and squared deviations
        (in the state's dtype), s_k and n_k into the window. The window is folded in (``_flush``) once,
        when the state is next read: δ_k = s_k/n_k, Δ_k = c_k + δ_k − μ_k (window mean − old mean),
        w_k = n_a n_b/(n_a + n_b); the squared deviations get − n_k‖δ_k‖² + w_k‖Δ_k‖², the scatter
        Σ w_k Δ_kΔ_kᵀ − Σ n_k δ_kδ_kᵀ as one GEMM in p of inner size P (the classes in the window), and
        the means and counts are merged. A batch thus costs 10/16 of one d × d GEMM and O(B·d) work.

        Precision in float32 (unit roundoff u = 6e-8): the GEMM sees z, whose size is the within-class spread
        σ, not ‖x‖; its rounding is about u·σ² per entry, while storing x in float32 already moved each
        within-class product by about u·‖x‖·σ, larger by ‖x‖/σ (1e5 for σ = 1e-4 around means of norm 10).
        The class means carry an error of about u·σ/√n_k (from s_k), again below the input's own u·‖x‖.
        The corrections are at most of the size of S (c_k is within about σ of the window mean), so they
        round at the same u·σ² level. The raw-moment form Σ xxᵀ − n μμᵀ would instead lose u·‖x‖²
        (1e-6 against a scatter entry of 1e-8 in that example).
        """
        x, y = check_features_labels(features, labels, self.num_classes, finite=self.check_finite)
        if x.shape[1] != self.dim:
            raise ValueError(f"features have dim {x.shape[1]}; this ClassStats was built for dim={self.dim}")
        if x.shape[0] == 0:
            return
        p = _gemm_dtype(x.dtype, self.dtype, self.precision, self.device)
        if self._window_dtype not in (None, p):
            self._flush()  # a shift is exact only in the dtype it was rounded to
        x, y = x.to(self.device, p), y.to(self.device)
        present, inverse = torch.unique(y, return_inverse=True)  # per-batch work is O(B·d + P·d), P ≤ B classes
        width = len(present)
        counts = torch.bincount(inverse, minlength=width)
        opening = self._window_counts[present] == 0
        if bool(opening.any()):
            batch_means = torch.zeros(width, self.dim, dtype=p, device=self.device).index_add_(0, inverse, x)
            batch_means /= counts[:, None]
            fresh = (self._counts[present] == 0)[:, None]
            start = torch.where(fresh, batch_means, self._means[present].to(p))
            self._shift[present[opening]] = start[opening].to(self.dtype)
        z = self._shift[present].to(p).index_select(0, inverse).neg_().add_(x)  # x − c_y, one B × d buffer
        sums = torch.zeros(width, self.dim, dtype=p, device=self.device).index_add_(0, inverse, z)
        sq = torch.zeros(width, dtype=p, device=self.device).index_add_(0, inverse, (z * z).sum(1))
        self._add_upper_blocks(z)
        self._sq_dev[present] += sq.to(self.dtype)
        if self.per_class_cov:
            self._class_scatter[present] += self._class_scatter_of(z, inverse, width).to(self.dtype)
        if self.rare_samples is not None:
            self._keep_rare(x, inverse, present, counts)
        self._window_sums[present] += sums.to(self.dtype)
        self._window_counts[present] += counts
        self._window_dtype = p

    def _blocks(self) -> range:
        """Starts of the four column blocks of the scatter (``_add_upper_blocks``, ``_mirror_blocks``)."""
        return range(0, self.dim, -(-self.dim // 4))

    def _add_upper_blocks(self, z: torch.Tensor) -> None:
        """zᵀz into the block upper triangle of the scatter: 4 × 4 blocks, of which the 10 on or above the
        diagonal are computed (10/16 of the GEMM's FLOPs; zᵀz is symmetric). ``_flush`` mirrors them."""
        step = self._blocks().step
        for i in self._blocks():
            self._scatter[i:i + step, i:].add_(z[:, i:i + step].T @ z[:, i:])

    def _mirror_blocks(self) -> None:
        step = self._blocks().step
        for i in self._blocks():
            self._scatter[i + step:, i:i + step] = self._scatter[i:i + step, i + step:].T

    def _keep_rare(self, x: torch.Tensor, inverse: torch.Tensor, present: torch.Tensor, counts: torch.Tensor) -> None:
        """Store the batch's samples in the free slots of their class (slot = samples seen before + rank
        within the class in this batch), while the class has fewer than ``rare_below − 1``."""
        order = torch.argsort(inverse, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(inverse)
        rank[order] = torch.arange(len(inverse), device=inverse.device) - starts[inverse[order]]
        slot = (self._counts + self._window_counts)[present][inverse] + rank
        free = slot < self.rare_samples.shape[1]
        self.rare_samples[present[inverse[free]], slot[free]] = x[free].to(self.dtype)

    def _merge_rare(self, counts_a: torch.Tensor, samples: torch.Tensor, counts_b: torch.Tensor) -> None:
        """Append another holder's kept samples (``counts_b`` seen) after this one's (``counts_a`` seen):
        slot s of class k keeps its sample for s < a_k, else takes the other's sample s − a_k if it has one."""
        kept = self.rare_samples.shape[1]
        slots = torch.arange(kept, device=self.device)[None, :]
        held = counts_a.clamp(max=kept)[:, None]
        source = (slots - held).clamp(0, kept - 1)
        taken = torch.take_along_dim(samples.to(self.dtype), source[:, :, None], dim=1)
        use = (slots >= held) & (slots - held < counts_b.clamp(max=kept)[:, None])
        self.rare_samples = torch.where(use[:, :, None], taken, self.rare_samples)

    def _flush(self) -> None:
        """Fold the open window into counts, means, squared deviations and scatters (see ``update``)."""
        if self._window_dtype is None:
            return
        p, acc = self._window_dtype, self.dtype
        self._window_dtype = None
        rows = torch.nonzero(self._window_counts).squeeze(1)
        n_b, n_a = self._window_counts[rows].to(acc), self._counts[rows].to(acc)
        old = self._means[rows]
        delta = self._window_sums[rows] / n_b[:, None]  # window mean − shift
        shift_old = self._shift[rows] + delta - old  # window mean − old mean
        weight = n_a * n_b / (n_a + n_b)
        self._mirror_blocks()
        self._sq_dev[rows] += weight * shift_old.square().sum(1) - n_b * delta.square().sum(1)
        # Σ w ΔΔᵀ − n δδᵀ = ½ Σ (a + c)(a − c)ᵀ + transpose, a = √w Δ, c = √n δ: one GEMM of inner size P
        a, c = shift_old * weight.sqrt()[:, None], delta * n_b.sqrt()[:, None]
        cross = (a + c).to(p).T @ (a - c).to(p)
        self._scatter.add_(cross + cross.T, alpha=0.5)
        self._scatter.copy_(self._scatter + self._scatter.T).mul_(0.5)  # exactly symmetric, also in GEMM blocks
        if self.per_class_cov:
            self._class_scatter[rows] += (weight[:, None, None] * shift_old[:, :, None] * shift_old[:, None, :]
                                          - n_b[:, None, None] * delta[:, :, None] * delta[:, None, :])
        self._means[rows] = old + shift_old * (n_b / (n_a + n_b))[:, None]
        self._counts[rows] += self._window_counts[rows]
        self._window_counts.zero_()
        self._window_sums[rows] = 0

    def _open_empty_window(self) -> None:
        k, d, dev = self.num_classes, self.dim, self.device
        self._shift = torch.zeros(k, d, dtype=self.dtype, device=dev)
        self._window_sums = torch.zeros(k, d, dtype=self.dtype, device=dev)
        self._window_counts = torch.zeros(k, dtype=torch.int64, device=dev)
        self._window_dtype = None

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict``; one saved before ``rare_below`` existed kept no samples (rare_below = 1)."""
        if isinstance(state, dict) and "rare_below" not in state:
            state = {**state, "rare_below": 1}
        super().load_state_dict(state)

    def reset(self) -> "ClassStats":
        super().reset()
        self._open_empty_window()
        return self

    def to(self, device) -> "ClassStats":
        super().to(device)  # reading the state folds the window in first
        self._open_empty_window()
        return self

    @staticmethod
    def _class_scatter_of(z: torch.Tensor, inverse: torch.Tensor, width: int) -> torch.Tensor:
        """Per-class scatter of a shifted batch as one GEMM: (one-hot ⊗ z)ᵀ z, reshaped to (P, d, d)."""
        onehot = (inverse[:, None] == torch.arange(width, device=z.device)[None, :]).to(z.dtype)
        stacked = (onehot[:, :, None] * z[:, None, :]).reshape(z.shape[0], -1)
        return (stacked.T @ z).reshape(width, z.shape[1], z.shape[1])

    def _combine(self, counts, means, sq_dev, scatter, class_scatter) -> None:
        """Chan et al. pairwise merge of another set of per-class (n, μ, M2) into this one (float64)."""
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

    def _merge(self, other: "ClassStats") -> None:
        cs = other.class_scatter.to(self.device) if self.per_class_cov else None
        if self.rare_samples is not None:
            self._merge_rare(self.counts, other.rare_samples.to(self.device), other.counts.to(self.device))
        self._combine(other.counts.to(self.device), other.means.to(self.device), other.sq_dev.to(self.device),
                      other.scatter.to(self.device), cs)

    def all_reduce(self, group=None) -> "ClassStats":
        """Combine the statistics of every rank of ``torch.distributed`` in place (exact, two reductions).

        First the counts and n_k μ_k are summed to get the global means; then every rank adds the shift of
        its own means, Σ_k n_rk (μ_rk − μ_k)(μ_rk − μ_k)ᵀ, to its scatter, and the scatters are summed.
        Kept rare samples are gathered and appended in rank order. Every tensor sent lives on the state's device.
        """
        dist = _dist()
        if self.rare_samples is not None:
            self._gather_rare(dist, group)
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

    def _gather_rare(self, dist, group) -> None:
        """Every rank's kept samples, appended in rank order, so all ranks hold the same ones."""
        world = dist.get_world_size(group)
        samples = [torch.empty_like(self.rare_samples) for _ in range(world)]
        counts = [torch.empty_like(self.counts) for _ in range(world)]
        dist.all_gather(samples, self.rare_samples, group=group)
        dist.all_gather(counts, self.counts, group=group)
        self.rare_samples = torch.zeros_like(self.rare_samples)
        seen = torch.zeros_like(self.counts)
        for rank_samples, rank_counts in zip(samples, counts):
            self._merge_rare(seen, rank_samples, rank_counts)
            seen = seen + rank_counts

    # -- results --------------------------------------------------------------------------------
    def finalize(self) -> FinalStats:
        """Return a float64 CPU snapshot for the metrics; an error if no sample was accumulated."""
        self._require_samples(int(self.counts.sum()))
        f64 = dict(dtype=torch.float64, device="cpu")
        return FinalStats(
            counts=self.counts.to("cpu"),
            means=self.means.to(**f64),
            sq_dev=self.sq_dev.to(**f64),
            scatter=self.scatter.to(**f64),
            class_scatter=None if self.class_scatter is None else self.class_scatter.to(**f64),
            rare_samples=None if self.rare_samples is None else self.rare_samples.to(**f64),
        )

    @classmethod
    def from_features(cls, features, labels, num_classes: int | None = None, batch_size: int = 8192, **kwargs):
        """Build statistics from in-memory features, streamed in batches of ``batch_size``."""
        x, y = check_features_labels(features, labels, num_classes)
        k = int(y.max()) + 1 if num_classes is None else num_classes
        stats = cls(k, x.shape[1], **kwargs)
        for start in range(0, x.shape[0], batch_size):
            stats.update(x[start:start + batch_size], y[start:start + batch_size])
        return stats


class NCCCounts(_Accumulator):
    """Second pass for NC4: per-class counts of nearest-class-center (NCC) hits and, with a classifier,
    of NCC/classifier agreement and classifier hits (Papyan et al. 2020, §NC4).

    NCC(h) = argmin_k ‖h − μ_k‖² over classes present in the statistics, searched over tiles of
    ``tile_size`` classes (memory O(batch · tile)); the classifier decision is argmax_k (W h + b)_k, bias
    included when given, also over tiles. The search runs in float64 on the CPU and float32 on CUDA/MPS
    unless ``dtype`` says otherwise.
    """

    def __init__(self, means: torch.Tensor, present: torch.Tensor | None = None, W=None, b=None, device=None,
                 tile_size: int = 4096, dtype: torch.dtype | None = None):
        check_scalar(tile_size, "tile_size", int, low=1)
        self.device = means.device if device is None else torch.device(device)
        self.dtype = (torch.float64 if self.device.type == "cpu" else torch.float32) if dtype is None else dtype
        self.tile_size = tile_size
        self.means = means.to(self.device, self.dtype)
        k = self.means.shape[0]
        present = torch.ones(k, dtype=torch.bool) if present is None else present.to(torch.bool)
        self.penalty = torch.where(present.to(self.device), 0.0, float("inf")).to(self.dtype)
        self.sq_norms = self.means.square().sum(1) + self.penalty
        self.W = self.b = None
        if W is not None:
            W, b = check_classifier(W, b, num_classes=k, dim=self.means.shape[1])
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
        """argmax_k (x rowsᵀ − offset)_k over tiles of classes, keeping the first maximiser on ties."""
        best = torch.full((x.shape[0],), -float("inf"), dtype=x.dtype, device=x.device)
        arg = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        for start in range(0, rows.shape[0], self.tile_size):
            scores = x @ rows[start:start + self.tile_size].T - offset[None, start:start + self.tile_size]
            value, index = scores.max(1)
            better = value > best
            best = torch.where(better, value, best)
            arg = torch.where(better, index + start, arg)
        return arg

    def predict_ncc(self, x: torch.Tensor) -> torch.Tensor:
        """argmin_k ‖x − μ_k‖² = argmax_k (x·μ_k − ‖μ_k‖²/2)."""
        return self._tiled_argmax(x, self.means, 0.5 * self.sq_norms)

    def update(self, features, labels) -> None:
        x, y = check_features_labels(features, labels, self.means.shape[0])
        if x.shape[1] != self.means.shape[1]:
            raise ValueError(f"features have dim {x.shape[1]}; the class means have dim {self.means.shape[1]}")
        x, y = x.to(self.device, self.dtype), y.to(self.device)
        k = self.means.shape[0]
        ncc = self.predict_ncc(x)
        self.counts += torch.bincount(y, minlength=k)
        self.ncc_correct += torch.bincount(y[ncc == y], minlength=k)
        if self.W is not None:
            net = self._tiled_argmax(x, self.W, -self.b)
            self.agree += torch.bincount(y[ncc == net], minlength=k)
            self.net_correct += torch.bincount(y[net == y], minlength=k)

    def _check_like(self, other, what: str) -> None:
        super()._check_like(other, what)
        if not torch.equal(other.means.to(self.means), self.means):
            raise ValueError(f"cannot {what} NCCCounts measured against different class means")

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


class NCMCStats(_Accumulator):
    """Streaming NCMC collapse statistics (Yan et al. 2024, §4.3; ncmc.md §5).

    Per sample of class k: c = ‖h/‖h‖ − w̄^(k)/‖w̄^(k)‖‖² (collapse to the mean of the class's centers) and
    v = 1 − (h/‖h‖)·(w_k/‖w_k‖) (variability against the classifier). Mean and population std of c and the
    mean of v are kept with Chan et al.'s pairwise update, so a std near zero keeps its precision. The state
    (count, mean, M2, Σ v) lives on ``device`` (default: the frame's device), as do the frame's targets.
    """

    def __init__(self, frame, device=None, dtype: torch.dtype | None = None):
        self.device = frame.classifier.device if device is None else torch.device(device)
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

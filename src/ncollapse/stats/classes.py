"""``ClassStats``: per-class count, mean, squared deviation and centred scatter, streamed in windows, and its
float64 snapshot ``FinalStats``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..resources import check_memory
from ..validation import check_device, check_features_labels, check_magnitude, check_size
from .contract import PRECISIONS, _Accumulator, _default_dtype, _dist, _gemm_dtype, coarsest
from .state_check import _state_feature_dtype, _state_size, check_state
from .kernels import add_upper_blocks, append_rare, class_scatter_of, keep_rare, mirror_blocks

__all__ = ["ClassStats", "FinalStats"]


@dataclass(frozen=True)
class FinalStats:
    """Float64 CPU snapshot of a ``ClassStats``: counts (K,), means (K, d), sq_dev (K,),
    scatter (d, d) pooled within-class scatter (not divided by N), class_scatter (K, d, d) or None,
    rare_samples (K, m, d) or None: the first min(n_k, m) samples of each class (``ClassStats(rare_below=m+1)``),
    feature_dtype and state_dtype: the precision the features reached the statistics in and the one they were
    accumulated in (``ClassStats``; they set the Σ_B rank rule of ``measure``, ``rank.eigenvalue_cutoff``)."""

    counts: torch.Tensor
    means: torch.Tensor
    sq_dev: torch.Tensor
    scatter: torch.Tensor
    class_scatter: torch.Tensor | None
    rare_samples: torch.Tensor | None = None
    feature_dtype: torch.dtype = torch.float64
    state_dtype: torch.dtype = torch.float64

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


def state_bytes(num_classes: int, dim: int, dtype: torch.dtype, per_class_cov: bool = False, kept: int = 0) -> int:
    """Memory of a ``ClassStats`` state: means K·d, scatter d², per-class scatters K·d², kept samples K·m·d."""
    k, d = num_classes, dim
    entries = k * d + d * d + (k * d * d if per_class_cov else 0) + k * kept * d
    return entries * dtype.itemsize


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

    ``feature_dtype`` records the coarsest precision any batch reached the state in (the features' dtype, or the
    float32 GEMM when that is coarser; ``None`` before the first batch); it travels in ``state_dict`` and sets the
    Σ_B rank rule of ``measure``. Batches are detached: the state never requires grad.

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
        num_classes, dim = check_size(num_classes, "num_classes"), check_size(dim, "dim")
        rare_below = check_size(rare_below, "rare_below")
        if precision not in PRECISIONS:
            raise ValueError(f"precision == {precision!r}, must be one of {PRECISIONS}")
        for flag, value in (("per_class_cov", per_class_cov), ("check_finite", check_finite)):
            if not isinstance(value, bool):
                raise TypeError(f"{flag} must be True or False; got {type(value).__name__} {value!r}")
        self.num_classes, self.dim = num_classes, dim
        self.device = torch.device("cpu") if device is None else check_device(device)
        self.dtype = _default_dtype(self.device) if dtype is None else dtype
        if not isinstance(self.dtype, torch.dtype) or not self.dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype such as torch.float64; got {self.dtype!r}")
        self.feature_dtype: torch.dtype | None = None
        self.per_class_cov, self.check_finite, self.precision = per_class_cov, check_finite, precision
        k, d, acc, kept = num_classes, dim, self.dtype, rare_below - 1
        what = f"ClassStats for K = {k} classes of width d = {d}"
        what += f", keeping {kept} samples per class" if kept else ""
        what += ", with per-class scatters" if per_class_cov else ""
        check_memory(state_bytes(k, d, acc, per_class_cov, kept), what,
                     "lower min_count / rare_below, or leave out per_class_cov", device=self.device)
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
        self.feature_dtype = coarsest(self.feature_dtype, x.dtype, p)
        if self.check_finite and x.dtype == torch.float64 and p == torch.float32:  # float64 into float32 GEMMs
            check_magnitude(x, "features", work=p)
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
        add_upper_blocks(self._scatter, z)
        self._sq_dev[present] += sq.to(self.dtype)
        if self.per_class_cov:
            self._class_scatter[present] += class_scatter_of(z, inverse, width).to(self.dtype)
        if self.rare_samples is not None:
            keep_rare(self.rare_samples, self._counts[present] + self._window_counts[present], x, inverse, present,
                      counts)
        self._window_sums[present] += sums.to(self.dtype)
        self._window_counts[present] += counts
        self._window_dtype = p

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
        mirror_blocks(self._scatter)
        self._sq_dev[rows] += weight * shift_old.square().sum(1) - n_b * delta.square().sum(1)
        # Σ w ΔΔᵀ − n δδᵀ is the symmetric part of (a + c)ᵀ(a − c), a = √w Δ, c = √n δ: one GEMM of inner size P,
        # added whole; the symmetric part of the sum is then taken once (exactly symmetric, GEMM blocks included)
        a, c = shift_old * weight.sqrt()[:, None], delta * n_b.sqrt()[:, None]
        self._scatter.add_((a + c).to(p).T @ (a - c).to(p))
        self._scatter.copy_(self._scatter + self._scatter.T).mul_(0.5)
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

    @classmethod
    def from_state_dict(cls, state: dict, **kwargs) -> "ClassStats":
        """A ``ClassStats`` built with the sizes and options that ``state`` (a ``state_dict()``) records, holding it;
        ``kwargs`` (device, dtype, ...) go to the constructor."""
        if not isinstance(state, dict) or not {"num_classes", "dim"} <= set(state):
            raise ValueError("state is not a ClassStats.state_dict(): it has no 'num_classes' and 'dim'")
        sizes = {key: _state_size(state, key) for key in ("num_classes", "dim")}
        rare_below = _state_size(state, "rare_below") if "rare_below" in state else 1
        per_class_cov = state.get("per_class_cov", False)
        if not isinstance(per_class_cov, bool):
            raise ValueError(f"state 'per_class_cov' is {per_class_cov!r}; expected True or False")
        stats = cls(sizes["num_classes"], sizes["dim"], per_class_cov=per_class_cov, rare_below=rare_below, **kwargs)
        stats.load_state_dict(state)
        return stats

    def state_dict(self) -> dict:
        """The sizes, options and tensors, and ``feature_dtype`` (a name such as "float32", or None)."""
        state = super().state_dict()
        state["feature_dtype"] = None if self.feature_dtype is None else str(self.feature_dtype).replace("torch.", "")
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict`` after checking it (``check_state``); one saved before ``rare_below`` existed kept
        no samples (rare_below = 1), one saved before ``feature_dtype`` existed is taken as float32 features (the
        usual network output; coarser than float64, so the rank rule errs toward dropping rounding directions)."""
        if isinstance(state, dict) and "rare_below" not in state:
            state = {**state, "rare_below": 1}
        feature_dtype = _state_feature_dtype(state)
        check_state(state, self.dtype)
        super().load_state_dict(state)
        self.feature_dtype = feature_dtype

    def reset(self) -> "ClassStats":
        super().reset()
        self.feature_dtype = None
        self._open_empty_window()
        return self

    def to(self, device) -> "ClassStats":
        super().to(device)  # reading the state folds the window in first
        self._open_empty_window()
        return self

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
        self.feature_dtype = coarsest(self.feature_dtype, other.feature_dtype)
        cs = other.class_scatter.to(self.device) if self.per_class_cov else None
        if self.rare_samples is not None:
            self.rare_samples = append_rare(self.rare_samples, self.counts, other.rare_samples.to(self.device),
                                            other.counts.to(self.device))
        self._combine(other.counts.to(self.device), other.means.to(self.device), other.sq_dev.to(self.device),
                      other.scatter.to(self.device), cs)

    def all_reduce(self, group=None) -> "ClassStats":
        """Combine the statistics of every rank of ``torch.distributed`` in place (exact, two reductions).

        First the counts and n_k μ_k are summed to get the global means; then every rank adds the shift of
        its own means, Σ_k n_rk (μ_rk − μ_k)(μ_rk − μ_k)ᵀ, to its scatter, and the scatters are summed.
        Kept rare samples are gathered and appended in rank order. Every tensor sent lives on the state's device.
        ``feature_dtype`` stays each rank's own (the ranks of one model see one dtype; a rank without samples keeps
        None, which ``finalize`` reads as float32).
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
            self.rare_samples = append_rare(self.rare_samples, seen, rank_samples, rank_counts)
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
            feature_dtype=self.feature_dtype or torch.float32,
            state_dtype=self.dtype,
        )

    @classmethod
    def from_features(cls, features, labels, num_classes: int | None = None, batch_size: int = 8192, **kwargs):
        """Build statistics from in-memory features, streamed in batches of ``batch_size``."""
        x, y = check_features_labels(features, labels, num_classes)
        k = int(y.max()) + 1 if num_classes is None else check_size(num_classes, "num_classes")
        batch_size = check_size(batch_size, "batch_size")
        stats = cls(k, x.shape[1], **kwargs)
        for start in range(0, x.shape[0], batch_size):
            stats.update(x[start:start + batch_size], y[start:start + batch_size])
        return stats

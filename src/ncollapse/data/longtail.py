"""Long-tailed class profiles and seeded, machine-independent subset selection.

Profiles follow the CIFAR-LT literature (Cao et al. 2019, LDAM-DRW; Cui et al. 2019): with imbalance
τ = n_min / n_max and classes ordered head to tail,

* ``exp``: n_k = int(n_max · τ^(k/(K−1)))  (CIFAR-10, n_max 5,000, τ 0.01 → N = 12,406);
* ``step``: the first ⌊K·(1−μ)⌋ classes keep n_max, the rest int(n_max·τ) (μ = ``minority_fraction`` = 0.5).

n_max may be fractional: SETF (Yang et al. 2022) builds SVHN-LT with n_max = len(split)/K, and int() of the
product then differs from using int(n_max) first (see ``ncollapse.data.datasets.load_longtail``).

Which images are kept: every training index i gets the key splitmix64(seed · 2⁶⁴/φ + i) (Steele et al. 2014),
and class k keeps its n_k indices with the smallest keys. The key depends only on (seed, index), so the
same seed gives the same subset on any machine, library version or thread count.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import torch

from ..validation import check_labels, check_scalar

__all__ = ["longtail_counts", "longtail_indices", "selection_keys", "format_counts", "max_feasible_n_max",
           "make_longtail"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def longtail_counts(n_max: int, num_classes: int, imbalance: float, profile: str = "exp",
                    minority_fraction: float = 0.5) -> list[int]:
    """Per-class sample counts of a long-tailed profile, head (class 0) to tail (class K−1)."""
    check_scalar(n_max, "n_max", Real, low=1)
    check_scalar(num_classes, "num_classes", Integral, low=1)
    check_scalar(imbalance, "imbalance", Real, low=0.0, high=1.0, low_open=True)
    if profile == "exp":
        if num_classes == 1:
            return [int(n_max)]
        return [max(1, int(n_max * imbalance ** (k / (num_classes - 1)))) for k in range(num_classes)]
    if profile == "step":
        check_scalar(minority_fraction, "minority_fraction", Real, low=0.0, high=1.0)
        num_major = int(num_classes * (1.0 - minority_fraction))
        return [int(n_max) if k < num_major else max(1, int(n_max * imbalance)) for k in range(num_classes)]
    raise ValueError(f"profile == {profile!r}, must be 'exp' or 'step'")


def selection_keys(num: int, seed: int) -> np.ndarray:
    """splitmix64 hash of (seed, index) for indices 0..num−1: a uint64 key per index."""
    with np.errstate(over="ignore"):
        z = np.arange(num, dtype=np.uint64) + np.uint64(seed % 2**64) * _GOLDEN
        z = z + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def longtail_indices(labels, counts, seed: int = 0) -> torch.Tensor:
    """Indices (sorted) of a seeded subset holding ``counts[k]`` samples of class k.

    Raises if a class has fewer samples than asked for, naming the class and both numbers.
    """
    y = check_labels(labels).cpu().numpy()
    want = np.asarray(counts, dtype=np.int64)
    if want.ndim != 1 or (want < 0).any():
        raise ValueError(f"counts must be a 1-D list of non-negative integers; got {counts!r}")
    have = np.bincount(y, minlength=len(want))
    if len(have) > len(want):
        raise ValueError(f"labels go up to {len(have) - 1} but counts has only {len(want)} entries")
    short = np.nonzero(have < want)[0]
    if len(short):
        k = int(short[0])
        raise ValueError(f"class {k} has {int(have[k])} samples but the long-tail profile asks for {int(want[k])}; "
                         f"lower n_max to at most {int(have[k])} or use a larger split")
    keys = selection_keys(len(y), seed)
    order = np.lexsort((keys, y))  # by class, then by key
    starts = np.concatenate([[0], np.cumsum(have)[:-1]])
    rank = np.empty(len(y), dtype=np.int64)
    rank[order] = np.arange(len(y)) - starts[y[order]]
    keep = np.nonzero(rank < want[y])[0]
    return torch.from_numpy(keep)


def format_counts(counts, names=None) -> str:
    """A one-screen summary of per-class counts with the imbalance ratio."""
    counts = [int(c) for c in counts]
    names = names or [str(k) for k in range(len(counts))]
    width = max(len(str(n)) for n in names)
    rows = [f"  {str(n):>{width}}  {c:>7d}" for n, c in zip(names, counts)]
    ratio = min(counts) / max(counts) if max(counts) else float("nan")
    return "\n".join([f"{len(counts)} classes, {sum(counts)} samples, n_min/n_max = {ratio:.4g}", *rows])


def max_feasible_n_max(class_counts, imbalance: float, profile: str = "exp",
                       minority_fraction: float = 0.5) -> int:
    """The largest integer n_max whose profile every class can supply (at most the largest class size).

    Counts grow monotonically with n_max, so a bisection over [1, max class size] finds it exactly.
    """
    have = [int(c) for c in class_counts]
    K = len(have)

    def fits(n: int) -> bool:
        return all(w <= h for w, h in zip(longtail_counts(n, K, imbalance, profile, minority_fraction), have))

    lo, hi = 0, max(have)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    if lo == 0:
        raise ValueError(f"no long-tail profile fits the class counts {have}: every class needs at least one sample")
    return lo


def make_longtail(dataset, imbalance: float, n_max: int | None = None, profile: str = "exp", seed: int = 0,
                  minority_fraction: float = 0.5):
    """A seeded long-tailed subset of ``dataset`` (class 0 is the head), as a new ``Dataset``.

    ``n_max`` defaults to ``max_feasible_n_max``: the largest class size when the classes are balanced
    (CIFAR-10: 5,000), otherwise the largest head size every class can still supply (MNIST: 5,923, the size of
    class 0). An explicit ``n_max`` that a class cannot supply raises, naming the class and both numbers.
    """
    check_scalar(seed, "seed", Integral, low=0)
    have = dataset.class_counts()
    if n_max is None:
        n_max = max_feasible_n_max(have, imbalance, profile, minority_fraction)
    counts = longtail_counts(n_max, len(have), imbalance, profile, minority_fraction)
    return dataset.subset(longtail_indices(dataset.labels, counts, seed))

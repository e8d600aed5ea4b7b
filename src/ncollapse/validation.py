"""Input validation shared by every public entry point (scikit-learn style).

Each checker returns the value the caller should use from then on and raises
``TypeError`` for the wrong kind of object or ``ValueError`` for a wrong value or
shape, with a message that says what was expected, what was received and how to fix it.
"""

from __future__ import annotations

import hashlib
import math
from numbers import Integral, Real

import numpy as np
import torch

from .resources import check_memory

__all__ = [
    "check_features",
    "check_labels",
    "check_features_labels",
    "check_finite",
    "check_magnitude",
    "underflow_limit",
    "infer_num_classes",
    "check_scalar",
    "check_counts",
    "check_classifier",
    "check_memory",
    "check_device",
    "check_size",
    "check_minority",
    "check_thresholds",
    "classifier_fingerprint",
]


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        if x.layout != torch.strided:
            raise TypeError(f"{name} is a {str(x.layout).replace('torch.', '')} tensor; pass {name}.to_dense()")
        if x.is_meta:
            raise ValueError(f"{name} is on the meta device and holds no values; pass a tensor with data "
                             f"(e.g. {name}.to_empty(device='cpu') filled in, or the real features)")
        return x.detach()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if isinstance(x, (list, tuple)):
        return torch.as_tensor(np.asarray(x))
    raise TypeError(f"{name} must be a torch.Tensor or numpy array; got {type(x).__name__}")


def check_finite(x: torch.Tensor, name: str) -> None:
    """Raise if ``x`` holds NaN or Inf; the cheap sum test runs first, the precise scan only on failure."""
    if x.numel() == 0 or torch.isfinite(x.sum()):
        return
    _raise_if_not_finite(x, name)


def _raise_if_not_finite(x: torch.Tensor, name: str, first_row: int = 0) -> None:
    """The precise scan: raise naming the kind, count and first row of NaN/Inf entries, rows numbered from
    ``first_row`` (none: return)."""
    nan = torch.isnan(x)
    bad = nan | torch.isinf(x)
    count = int(bad.sum())
    if count == 0:  # the sum overflowed although every entry is finite
        return
    kind = "NaN" if bool(nan.any()) else "Inf"
    first = int(torch.nonzero(bad.reshape(x.shape[0], -1).any(1))[0]) if x.dim() > 0 else 0
    raise ValueError(f"{name} contains {kind} ({count} of {x.numel()} entries, first in row {first_row + first})")


def check_magnitude(x: torch.Tensor, name: str, first_row: int = 0, work: torch.dtype | None = None) -> None:
    """Raise if ``x`` holds NaN or Inf (rows numbered from ``first_row``), or if a sum of squares of ``x`` could
    overflow or underflow the precision it is accumulated in (one min/max pass over ``x``).

    Second moments are GEMMs in float32 for float32 and narrower input and in float64 for float64
    (design.md §3), so max |x| must stay below sqrt(finfo.max / numel): e.g. about 1e153 for a float64
    (40, 5) batch, where features scaled by 1e200 would otherwise overflow into an eigensolver failure;
    ``work`` names another GEMM dtype (float64 features into a float32 state). At the other end
    (``underflow_limit``), products of the largest entries must stay well above the smallest
    normal number, or the scatter collapses to 0 (float32 features × 1e-25 gave NC1 = 0 and a negative CDNV).
    """
    if x.numel() == 0:
        return
    lo, hi = (float(v) for v in torch.aminmax(x))
    if not (math.isfinite(lo) and math.isfinite(hi)):  # min and max propagate NaN and reach ±Inf
        _raise_if_not_finite(x, name, first_row)
    largest = max(-lo, hi)
    if work is None:
        work = torch.float64 if x.dtype == torch.float64 else torch.float32
    limit = math.sqrt(torch.finfo(work).max / x.numel())
    if largest > limit:
        raise ValueError(f"{name} has entries up to {largest:.3g} in magnitude; their squares overflow "
                         f"{str(work).replace('torch.', '')} (limit about {limit:.1g} for shape {tuple(x.shape)}); "
                         f"rescale the features, e.g. divide them by their largest norm")
    floor = underflow_limit(work)
    if 0 < largest < floor:
        raise ValueError(f"{name} has entries of at most {largest:.3g} in magnitude; their squares underflow "
                         f"{str(work).replace('torch.', '')} (need at least about {floor:.1g}); rescale the "
                         f"features, e.g. divide them by their largest entry")


def underflow_limit(work: torch.dtype) -> float:
    """Smallest max |x| whose second moments ``work`` holds: 2^10·sqrt(tiny) (tiny = the smallest normal number,
    IEEE 754), about 1e-16 for float32 and 1.5e-151 for float64. Products of entries down to 2^-10 (0.1 %) of
    max |x| (the within-class deviations that the scatter GEMM squares) are then normal numbers with full
    relative precision; below that they round to subnormals and then to zero."""
    return math.sqrt(torch.finfo(work).tiny) * 2.0 ** 10


def check_features(features, name: str = "features", finite: bool = True, first_row: int = 0) -> torch.Tensor:
    """Return ``features`` as a 2-D real floating tensor (n_samples, dim); ``finite`` also checks the values
    (errors number rows from ``first_row``: a block's place in a larger array)."""
    x = _as_tensor(features, name)
    if x.is_complex():
        raise TypeError(f"{name} must be real; got dtype {x.dtype} (pass {name}.real to drop the imaginary part)")
    if x.dim() != 2:
        hint = ""
        if x.dim() > 2:
            hint = f"; flatten pooled features with {name}.flatten(1)"
        elif x.dim() == 1:
            hint = f"; use {name}.reshape(-1, 1) for one feature or {name}.reshape(1, -1) for one sample"
        raise ValueError(f"{name} must be 2-D (n_samples, dim); got shape {tuple(x.shape)}{hint}")
    if not x.is_floating_point():
        x = x.to(torch.float64)
    if finite:
        check_magnitude(x, name, first_row)  # one pass: its min and max also find NaN and Inf
    return x


def check_labels(labels, num_classes: int | None = None, name: str = "labels") -> torch.Tensor:
    """Return ``labels`` as a 1-D int64 tensor with values in [0, num_classes)."""
    y = _as_tensor(labels, name)
    if y.dim() == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dim() != 1:
        raise ValueError(f"{name} must be 1-D (n_samples,); got shape {tuple(y.shape)}")
    if y.is_floating_point():
        integral = torch.isfinite(y) & (y == torch.round(y))
        if y.numel() and not bool(torch.all(integral)):
            raise ValueError(f"{name} must be integers; got non-integer values such as {float(y[~integral][0])}")
        y = y.to(torch.int64)
    elif y.dtype == torch.bool or y.is_complex():
        raise TypeError(f"{name} must be an integer array; got dtype {y.dtype}")
    else:
        y = y.to(torch.int64)
    if y.numel():
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or (num_classes is not None and hi >= num_classes):
            bound = f"[0, {num_classes})" if num_classes is not None else "[0, inf)"
            raise ValueError(f"{name} outside {bound}: min={lo}, max={hi}")
    return y


def infer_num_classes(labels: torch.Tensor, name: str = "labels") -> int:
    """K = max label + 1 for validated labels, refusing what would make most of those classes empty.

    Labels such as {0, 1000, 2000, 3000} (or one label of 10^12, which would allocate terabytes of
    per-class statistics) are refused when more than half of the classes 0..max have no sample.
    """
    if labels.numel() == 0:
        raise ValueError(f"{name} is empty (0 samples); give at least one sample of each of two classes")
    top = int(labels.max())
    present = int(torch.unique(labels).numel())
    if top + 1 > 2 * present:
        raise ValueError(f"{name} go up to {top} but only {present} distinct values occur ({top + 1 - present} of "
                         f"{top + 1} classes would be empty); pass num_classes or remap labels to 0..{present - 1} "
                         f"(numpy.unique(labels, return_inverse=True))")
    return top + 1


def check_features_labels(features, labels, num_classes: int | None = None, finite: bool = True):
    """Validate a (features, labels) pair; returns tensors on the features' device.

    Without ``num_classes`` the labels must be dense enough to infer it (``infer_num_classes``).
    """
    x = check_features(features, finite=finite)
    y = check_labels(labels, num_classes)
    if num_classes is None:
        infer_num_classes(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"features and labels have inconsistent numbers of samples: {x.shape[0]} and {y.shape[0]}"
        )
    if y.device != x.device:
        y = y.to(x.device)
    return x, y


def check_scalar(value, name: str, kind=Real, *, low=None, high=None, low_open=False, high_open=False,
                 finite=False):
    """Check a scalar parameter's type and bounds, e.g. "lambda_h == -0.1, must be >= 0"; ``finite`` also
    refuses ±inf."""
    if isinstance(value, bool) or not isinstance(value, kind):
        want = "an integer" if kind is Integral else "a number"
        raise TypeError(f"{name} must be {want}; got {type(value).__name__} {value!r}")
    if isinstance(value, float) and math.isnan(value):
        raise ValueError(f"{name} is NaN, must be a number")
    if finite and isinstance(value, float) and math.isinf(value):
        raise ValueError(f"{name} == {value}, must be finite")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} == {value}, must be {'>' if low_open else '>='} {low}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} == {value}, must be {'<' if high_open else '<='} {high}")
    return value


def check_counts(counts, name: str = "counts", allow_zero: bool = False) -> list[int]:
    """Return per-class sample counts as a list of non-negative ints (positive unless ``allow_zero``)."""
    values = counts.tolist() if isinstance(counts, (torch.Tensor, np.ndarray)) else list(counts)
    if len(values) == 0:
        raise ValueError(f"{name} is empty; give one count per class")
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (Integral, float)) or v != int(v):
            raise TypeError(f"{name}[{i}] must be an integer; got {v!r}")
        v = int(v)
        if v < 0 or (v == 0 and not allow_zero):
            raise ValueError(f"{name}[{i}] == {v}, every class needs at least one sample")
        out.append(v)
    return out


def _real(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.is_complex():
        raise TypeError(f"{name} must be real; got dtype {x.dtype} (pass {name}.real if the imaginary part is zero)")
    return x


def check_classifier(W, b=None, num_classes: int | None = None, dim: int | None = None):
    """Validate a classifier W (K, d) and optional bias b (K,); returns float64 CPU tensors."""
    if W is None:
        if b is not None:
            raise ValueError("b was given without W; pass the classifier weights W with its bias b")
        return None, None
    W = _real(_as_tensor(W, "W"), "W").detach().to("cpu", torch.float64)
    if W.dim() != 2:
        raise ValueError(f"W must be 2-D (num_classes, dim); got shape {tuple(W.shape)}")
    if (num_classes is not None and W.shape[0] != num_classes) or (dim is not None and W.shape[1] != dim):
        k = "K" if num_classes is None else num_classes
        d = "d" if dim is None else dim
        raise ValueError(f"W has shape {tuple(W.shape)}; expected (K, d) = ({k}, {d}) to match the features "
                         "(K classes, d feature dimensions)")
    check_finite(W, "W")
    if b is not None:
        b = _real(_as_tensor(b, "b"), "b").detach().to("cpu", torch.float64).reshape(-1)
        if b.shape[0] != W.shape[0]:
            raise ValueError(f"b has {b.shape[0]} entries; expected {W.shape[0]} (one per class)")
        check_finite(b, "b")
    return W, b


def check_size(value, name: str, low: int = 1) -> int:
    """A size or count (Python or numpy integer, ≥ ``low``) as a Python int."""
    return int(check_scalar(value, name, Integral, low=low))


def check_device(device, name: str = "device") -> torch.device:
    """Parse a device (``torch.device``, ``"cpu"``, ``"cuda:0"``, ...), refusing a bogus string or a backend this
    machine lacks with one line."""
    if isinstance(device, torch.device):
        parsed = device
    elif isinstance(device, str) or (isinstance(device, Integral) and not isinstance(device, bool)):
        try:
            parsed = torch.device(device)
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"{name} == {device!r} is not a device; use 'cpu', 'cuda', 'cuda:0' or 'mps'") from exc
    else:
        raise TypeError(f"{name} must be a torch.device or a string such as 'cpu' or 'cuda:0'; "
                        f"got {type(device).__name__} {device!r}")
    if parsed.type not in ("cpu", "cuda", "mps", "meta"):
        raise ValueError(f"{name} == {str(parsed)!r}: ncollapse runs on cpu, cuda and mps devices; use one of them")
    available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}.get(parsed.type)
    if available is not None and not available():
        raise ValueError(f"{name} == {str(parsed)!r} but this machine has no {parsed.type.upper()} device; use 'cpu'")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ValueError(f"{name} == {str(parsed)!r} but only {torch.cuda.device_count()} CUDA device(s) are visible")
    return parsed


def check_minority(minority, num_classes: int) -> list[int]:
    """Minority class indices: integers in [0, K), each once (a class against itself would read as collapse)."""
    if isinstance(minority, (torch.Tensor, np.ndarray)):
        minority = minority.tolist()
    if isinstance(minority, (str, bytes)) or not hasattr(minority, "__iter__"):
        raise TypeError(f"minority must be a list of class indices; got {type(minority).__name__}")
    out = []
    for c in minority:
        if isinstance(c, bool) or not isinstance(c, Integral):
            raise TypeError(f"minority holds {c!r}; class indices must be integers")
        if not 0 <= c < num_classes:
            raise ValueError(f"minority holds class {c}, outside [0, {num_classes}); "
                             f"give class indices 0..{num_classes - 1}")
        out.append(int(c))
    if len(set(out)) != len(out):
        twice = sorted({c for c in out if out.count(c) > 1})
        raise ValueError(f"minority lists class(es) {twice} more than once; give each minority class once")
    return out


def check_thresholds(thresholds) -> tuple[float, float]:
    """Group thresholds (head_min, tail_max): finite numbers with head_min ≥ tail_max (head n_k > head_min, tail
    n_k < tail_max, so no class is in both)."""
    if isinstance(thresholds, (str, bytes)) or not hasattr(thresholds, "__len__") or len(thresholds) != 2:
        raise ValueError(f"group_thresholds must be (head_min, tail_max), e.g. (100, 20); got {thresholds!r}")
    head, tail = (check_scalar(v, f"group_thresholds[{i}]", Real, finite=True) for i, v in enumerate(thresholds))
    if head < tail:
        raise ValueError(f"group_thresholds == {tuple(thresholds)}: head_min {head} is below tail_max {tail}; "
                         f"give (head_min, tail_max) with head_min >= tail_max, e.g. (100, 20)")
    return head, tail


def classifier_fingerprint(W: torch.Tensor | None, b: torch.Tensor | None) -> str | None:
    """A digest of the float64 bytes of (W, b) from ``check_classifier``: which classifier a pass scored against."""
    if W is None:
        return None
    digest = hashlib.blake2b(digest_size=16)
    for part in (W, b):
        digest.update(b"-" if part is None else np.ascontiguousarray(part.numpy()).tobytes())
    return digest.hexdigest()

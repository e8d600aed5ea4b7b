"""Checks on a ``ClassStats.state_dict()`` before it is loaded: sizes, shapes and values that no accumulation can
produce (fractional or negative counts, non-finite means, sums of squares below zero by more than rounding)."""

from __future__ import annotations

from numbers import Integral

import torch

from .contract import coarsest

__all__ = ["check_state"]

SLACK = 16  #: rounding allowance, in units of u, for sums of squares that are ≥ 0 in exact arithmetic


def _state_size(state: dict, key: str) -> int:
    """A size recorded in the state (``num_classes``, ``dim``, ``rare_below``): a positive integer."""
    value = state.get(key)
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"state {key!r} is {value!r}; expected a positive integer (a ClassStats.state_dict())")
    return int(value)


def _state_feature_dtype(state) -> torch.dtype | None:
    """The recorded feature dtype; a state from before it was recorded is taken as float32."""
    if not isinstance(state, dict) or "feature_dtype" not in state:
        return torch.float32
    name = state["feature_dtype"]
    if name is None:
        return None
    dtype = getattr(torch, name, None) if isinstance(name, str) else None
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"state 'feature_dtype' is {name!r}; expected a floating dtype name such as 'float32'")
    return dtype


def _tensor(state: dict, key: str, shape: tuple) -> torch.Tensor:
    value = state[key]
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"state {key!r} is a {type(value).__name__}; expected a tensor of shape {shape}")
    if tuple(value.shape) != shape:
        raise ValueError(f"state {key!r} has shape {tuple(value.shape)}; expected {shape} for the recorded sizes")
    if value.is_complex() or value.dtype == torch.bool:
        raise ValueError(f"state {key!r} has dtype {value.dtype}; expected a real tensor")
    return value.detach().to("cpu")


def check_state(state: dict, state_dtype: torch.dtype) -> None:
    """Refuse, with one line naming the entry, a state whose counts are not non-negative integers, whose means or
    sums are not finite, whose squared deviations or scatter diagonals are negative beyond rounding
    (SLACK·u·(Σ_k sq_dev_k + u·Σ_k n_k‖μ_k‖²), u the unit roundoff of the coarser of the state and feature
    dtypes: the shift c_k is rounded there, Chan et al. 1979 §3), or whose tensors do not have the recorded
    sizes' shapes."""
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict from ClassStats.state_dict(); got {type(state).__name__}")
    missing = {"num_classes", "dim", "counts", "means", "sq_dev", "scatter"} - set(state)
    if missing:
        raise ValueError(f"ClassStats state is missing keys: {sorted(missing)}")
    k, d = _state_size(state, "num_classes"), _state_size(state, "dim")
    counts = _tensor(state, "counts", (k,))
    if counts.is_floating_point():
        if not bool(torch.isfinite(counts).all()) or not bool((counts == counts.round()).all()):
            raise ValueError("state 'counts' holds non-integer values; counts of samples are whole numbers "
                             "(the state is damaged or was edited)")
    counts = counts.to(torch.int64)
    if bool((counts < 0).any()):
        raise ValueError(f"state 'counts' has negative entries (first at class {int(torch.nonzero(counts < 0)[0])});"
                         " counts of samples are >= 0 (the state is damaged or was edited)")
    f64 = torch.float64
    means = _tensor(state, "means", (k, d)).to(f64)
    sq_dev = _tensor(state, "sq_dev", (k,)).to(f64)
    scatter = _tensor(state, "scatter", (d, d)).to(f64)
    for key, value in (("means", means), ("sq_dev", sq_dev), ("scatter", scatter)):
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"state {key!r} holds NaN or Inf (the state is damaged, or the features overflowed)")
    u = torch.finfo(coarsest(state_dtype, _state_feature_dtype(state) or state_dtype)).eps / 2
    shift = u * counts.to(f64) * means.square().sum(1)  # rounding of the shifted sums, per class
    class_tol = SLACK * u * (sq_dev.clamp(min=0) + shift)
    if bool((sq_dev < -class_tol).any()):
        first = int(torch.nonzero(sq_dev < -class_tol)[0])
        raise ValueError(f"state 'sq_dev' is negative for class {first} ({float(sq_dev[first]):.3g}); a sum of "
                         "squared deviations is >= 0 (the state is damaged or was edited)")
    tol = float(class_tol.sum())
    if float(scatter.diagonal().min()) < -tol:
        raise ValueError(f"state 'scatter' has a negative diagonal entry ({float(scatter.diagonal().min()):.3g}); "
                         "a scatter matrix is positive semi-definite (the state is damaged or was edited)")
    if state.get("class_scatter") is not None:
        per_class = _tensor(state, "class_scatter", (k, d, d)).to(f64)
        if not bool(torch.isfinite(per_class).all()):
            raise ValueError("state 'class_scatter' holds NaN or Inf (the state is damaged)")
        if bool((per_class.diagonal(dim1=1, dim2=2).amin(1) < -class_tol).any()):
            raise ValueError("state 'class_scatter' has a negative diagonal entry; per-class scatters are positive "
                             "semi-definite (the state is damaged or was edited)")
    if state.get("rare_samples") is not None:
        rare = state["rare_samples"]
        if not isinstance(rare, torch.Tensor) or rare.dim() != 3 or tuple(rare.shape[::2]) != (k, d):
            raise ValueError(f"state 'rare_samples' has shape {tuple(getattr(rare, 'shape', ()))}; expected ({k}, m, {d})")
        if not bool(torch.isfinite(rare).all()):
            raise ValueError("state 'rare_samples' holds NaN or Inf (the state is damaged)")

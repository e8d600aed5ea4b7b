"""The state contract every accumulator follows (``_Accumulator``) and the dtype rules of the streaming GEMMs."""

from __future__ import annotations

import torch

from ..validation import check_device

__all__ = ["PRECISIONS"]

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


def coarsest(*dtypes: torch.dtype | None) -> torch.dtype | None:
    """The floating dtype with the largest machine epsilon among ``dtypes`` (``None`` entries skipped)."""
    known = [d for d in dtypes if d is not None]
    return max(known, key=lambda d: torch.finfo(d).eps) if known else None


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
        self.device = check_device(device)
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

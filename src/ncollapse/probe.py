"""Collect class statistics at named layers of any ``nn.Module`` with forward hooks.

One pass over a loader fills a ``ClassStats`` per layer (``collect_stats``); a second pass counts
nearest-class-center hits per layer (``layerwise_ncc``), which gives the NCC accuracy at every depth and
the ε-effective depth of Galanti et al. 2022 (Def. 3: the first layer whose NCC train error is ≤ ε).
Feature maps are flattened (``pool="flatten"``) or global-average-pooled over spatial axes (``pool="gap"``).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from tqdm.auto import tqdm

from .nn.modes import eval_mode
from .stats import ClassStats, NCCCounts
from .validation import check_scalar

__all__ = ["collect_stats", "layerwise_ncc", "effective_depth", "pool_features"]


def pool_features(output, pool: str = "flatten") -> torch.Tensor:
    """Turn a layer output (B, C, ...) into (B, d): flatten, or average over the spatial axes first."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"a probed layer must return a tensor; got {type(output).__name__}")
    if pool == "gap" and output.dim() > 2:
        output = output.mean(dim=tuple(range(2, output.dim())))
    elif pool not in ("flatten", "gap"):
        raise ValueError(f"pool == {pool!r}, must be 'flatten' or 'gap'")
    return output.flatten(1)


def _resolve(model: nn.Module, layers) -> dict[str, nn.Module]:
    """Layers given as module paths (``"layer3.1"``) or as (label, module) pairs such as
    ``model.feature_layers()``; returns {label: module}."""
    modules = dict(model.named_modules())
    items = [layers] if isinstance(layers, str) else list(layers)
    if not items:
        raise ValueError("layers is empty; name at least one module, e.g. one of " + ", ".join(list(modules)[1:6]))
    owned = {id(m) for m in modules.values()}
    resolved = {}
    for item in items:
        if isinstance(item, str):
            if item not in modules:
                raise ValueError(f"model has no module named {item!r}; available: {', '.join(list(modules)[1:12])}, ...")
            resolved[item] = modules[item]
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], nn.Module):
            if id(item[1]) not in owned:
                raise ValueError(f"layer {item[0]!r} is not a submodule of the model")
            resolved[str(item[0])] = item[1]
        else:
            raise TypeError(f"layers must hold module names or (label, module) pairs; got {item!r}")
    return resolved


@contextlib.contextmanager
def _hooks(model: nn.Module, layers: dict[str, nn.Module], pool: str):
    captured: dict[str, torch.Tensor] = {}
    handles = [module.register_forward_hook(
        lambda _m, _inp, out, name=name: captured.__setitem__(name, pool_features(out, pool).detach()))
        for name, module in layers.items()]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _probe(model: nn.Module, loader, modules: dict[str, nn.Module], pool: str, forward, desc: str, quiet: bool):
    """Yield ({layer: features}, labels) per batch, in eval mode under ``torch.no_grad``; restores the mode."""
    device = _model_device(model)
    forward = forward or (lambda m, x: m(x))
    with eval_mode(model), _hooks(model, modules, pool) as captured:
        for inputs, labels in tqdm(loader, desc=desc, leave=False, disable=quiet):
            forward(model, inputs.to(device))
            yield captured, labels.to(device)


def collect_stats(model: nn.Module, loader, layers, num_classes: int, pool: str = "flatten",
                  forward=None, quiet: bool = True, **stats_kwargs) -> dict[str, ClassStats]:
    """One pass over ``loader`` (batches of (inputs, labels)) in eval mode and ``torch.no_grad``;
    returns ``{layer: ClassStats}``. ``forward(model, inputs)`` overrides ``model(inputs)``."""
    modules = _resolve(model, layers)
    stats: dict[str, ClassStats] = {}
    for captured, labels in _probe(model, loader, modules, pool, forward, "probe", quiet):
        for name in modules:
            feats = captured[name]
            if name not in stats:
                stats[name] = ClassStats(num_classes, feats.shape[1], device=feats.device, **stats_kwargs)
            stats[name].update(feats, labels)
    if not stats:
        raise ValueError("the loader yielded no batches")
    return stats


def layerwise_ncc(model: nn.Module, loader, stats: dict[str, ClassStats], layers=None, pool: str = "flatten",
                  forward=None, quiet: bool = True) -> dict[str, float]:
    """Second pass: NCC accuracy at every probed layer, with class means from ``collect_stats``.

    ``layers`` is what was given to ``collect_stats`` (needed when it held (label, module) pairs)."""
    modules = _resolve(model, list(stats) if layers is None else layers)
    counters = {name: NCCCounts.from_stats(s) for name, s in stats.items()}
    for captured, labels in _probe(model, loader, modules, pool, forward, "ncc", quiet):
        for name, counter in counters.items():
            counter.update(captured[name], labels)
    return {name: int(c.ncc_correct.sum()) / max(int(c.counts.sum()), 1) for name, c in counters.items()}


def effective_depth(ncc_accuracy: dict[str, float], epsilon: float = 0.01) -> int | None:
    """ε-effective depth (Galanti et al. 2022, Def. 3): 1-based index of the first layer, in the given
    order, whose NCC train accuracy is ≥ 1 − ε; None if no layer reaches it."""
    check_scalar(epsilon, "epsilon", float, low=0.0, high=1.0)
    for depth, acc in enumerate(ncc_accuracy.values(), start=1):
        if acc >= 1.0 - epsilon:
            return depth
    return None

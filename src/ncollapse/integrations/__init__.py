"""Thin framework callbacks over ``ncollapse.NCTracker``: ``integrations.lightning.NCCallback`` (Lightning) and
``integrations.hf.NCCallback`` (Hugging Face ``Trainer``). Each module imports its framework when imported itself,
so ``import ncollapse`` never does; a missing framework is a ``MissingExtraError`` naming
``pip install 'ncollapse[integrations]'``."""

from __future__ import annotations

import importlib

from .._extras import MissingExtraError

__all__ = ["require"]

_INSTALL = "pip install 'ncollapse[integrations]'"


def require(module: str, feature: str):
    """Import ``module`` or raise ``MissingExtraError`` saying which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"{feature} needs {module.split('.')[0]}; install it with: {_INSTALL}") from None


def scalars(record: dict) -> dict[str, float]:
    """The finite numbers of a tracker record (what a logger plots), ``epoch`` and ``step`` left out."""
    return {k: float(v) for k, v in record.items()
            if k not in ("epoch", "step") and isinstance(v, (int, float)) and not isinstance(v, bool) and v == v
            and abs(v) != float("inf")}

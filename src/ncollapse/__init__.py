"""ncollapse: measure, simulate and train for neural collapse.

The public API re-exports the measurement core; sub-packages hold the rest
(``ncollapse.ufm``, ``ncollapse.data``, ``ncollapse.nn``, ``ncollapse.train``, ``ncollapse.report``).
The re-exports load on first use (PEP 562), so ``import ncollapse`` and the CLI's ``--version`` and
``--help`` do not import torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "ClassStats": "stats",
    "NCCCounts": "stats",
    "measure": "metrics",
    "measure_features": "metrics",
    "simplex_etf": "geometry",
    "orthonormal_frame": "geometry",
    "dcube_vertices": "geometry",
    "dorthoplex_vertices": "geometry",
    "multicenter_frame": "geometry",
    "class_aware_centers": "geometry",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])

"""ncollapse: measure, simulate and train for neural collapse.

The public API re-exports the measurement core; sub-packages hold the rest
(``ncollapse.ufm``, ``ncollapse.data``, ``ncollapse.nn``, ``ncollapse.train``, ``ncollapse.report``).
The re-exports load on first use (PEP 562), so ``import ncollapse`` and the CLI's ``--version`` and
``--help`` do not import torch.
"""

from __future__ import annotations

from ._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "ClassStats": "stats",
    "NCCCounts": "stats",
    "measure": "metrics",
    "measure_features": "metrics",
    "measure_stream": "metrics",
    "NCTracker": "tracking",
    "simplex_etf": "geometry",
    "orthonormal_frame": "geometry",
    "dcube_vertices": "geometry",
    "dorthoplex_vertices": "geometry",
    "multicenter_frame": "geometry",
    "class_aware_centers": "geometry",
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

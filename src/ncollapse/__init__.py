"""ncollapse: measure, simulate and train for neural collapse.

The public API re-exports the measurement core; sub-packages hold the rest
(``ncollapse.ufm``, ``ncollapse.data``, ``ncollapse.nn``, ``ncollapse.train``, ``ncollapse.report``).
"""

from .geometry import (class_aware_centers, dcube_vertices, dorthoplex_vertices, multicenter_frame,
                       orthonormal_frame, simplex_etf)
from .metrics import measure, measure_features
from .stats import ClassStats, NCCCounts

__version__ = "0.1.0"

__all__ = [
    "ClassStats",
    "NCCCounts",
    "measure",
    "measure_features",
    "simplex_etf",
    "orthonormal_frame",
    "dcube_vertices",
    "dorthoplex_vertices",
    "multicenter_frame",
    "class_aware_centers",
]

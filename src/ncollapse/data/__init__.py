"""Data: original-format readers, long-tail subsets, tensor-resident loaders, downloads.

>>> from ncollapse.data import load_dataset, make_longtail
>>> ds = load_dataset("digits", split="train")
>>> lt = make_longtail(ds, imbalance=0.1)

The names below load on first use (PEP 562), so ``ncollapse.data.fetch`` (downloads) imports no torch.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "Dataset": "datasets",
    "DataNotFoundError": "datasets",
    "DATASETS": "datasets",
    "load_dataset": "datasets",
    "load_longtail": "datasets",
    "concat_datasets": "datasets",
    "make_longtail": "longtail",
    "longtail_counts": "longtail",
    "longtail_indices": "longtail",
    "max_feasible_n_max": "longtail",
    "format_counts": "longtail",
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

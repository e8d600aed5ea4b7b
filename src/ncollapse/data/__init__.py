"""Data: original-format readers, long-tail subsets, tensor-resident loaders, downloads.

>>> from ncollapse.data import load_dataset, make_longtail
>>> ds = load_dataset("digits", split="train")
>>> lt = make_longtail(ds, imbalance=0.1)
"""

from .datasets import DATASETS, DataNotFoundError, Dataset, concat_datasets, load_dataset, load_longtail
from .longtail import format_counts, longtail_counts, longtail_indices, make_longtail, max_feasible_n_max

__all__ = [
    "Dataset",
    "DataNotFoundError",
    "DATASETS",
    "load_dataset",
    "load_longtail",
    "concat_datasets",
    "make_longtail",
    "longtail_counts",
    "longtail_indices",
    "max_feasible_n_max",
    "format_counts",
]

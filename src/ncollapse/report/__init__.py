"""Run reports: read run directories, draw figures, write self-contained HTML, and log epochs.

``write_report(run_dir)`` and ``write_comparison(run_dirs, out)`` build the pages (matplotlib is imported
only when they are first used, so the trainer can import ``RunLogger`` cheaply); ``load_run`` reads a run
directory; ``RunLogger`` writes ``metrics.jsonl`` (and TensorBoard scalars when available).
"""

from __future__ import annotations

import importlib

from .logging import RunLogger
from .runs import Run, load_run

__all__ = ["write_report", "write_comparison", "load_run", "Run", "RunLogger"]


def __getattr__(name: str):
    if name in ("write_report", "write_comparison"):
        return getattr(importlib.import_module(f"{__name__}.html"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

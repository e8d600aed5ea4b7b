"""Serialisation of metric reports: JSON-ready values and a readable text table.

Shared by the CLI, the trainer, the experiments and the reports; imports no torch, so tensors are
recognised by their ``tolist`` method.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["to_jsonable", "format_report", "brief_list"]


def to_jsonable(value):
    """Convert a metrics dict to JSON-ready values: arrays and tensors → lists, NaN/Inf → None."""
    if isinstance(value, dict):
        return {str(key): to_jsonable(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray) or type(value).__name__ == "Tensor":
        return to_jsonable(value.tolist())
    return value


def brief_list(values, limit: int = 10) -> str:
    """``values`` as a list literal, cut after ``limit`` items with the total: "[1, 2, ..., 10, ... (2997 in all)]"."""
    values = list(values)
    if len(values) <= limit:
        return str(values)
    return "[" + ", ".join(map(str, values[:limit])) + f", ... ({len(values)} in all)]"


def format_report(report: dict) -> str:
    """A readable two-column table of the scalar metrics."""
    lines = []
    for key, value in report.items():
        if isinstance(value, float):
            lines.append(f"{key:<28} {value:.6g}")
        elif isinstance(value, (int, str)) and not isinstance(value, bool):
            lines.append(f"{key:<28} {value}")
        elif key == "sigma_b_spectrum":
            shown = ", ".join(f"{v:.3g}" for v in value[:8])
            lines.append(f"{key:<28} [{shown}{', ...' if len(value) > 8 else ''}]")
        elif isinstance(value, list) and value:
            lines.append(f"{key:<28} {brief_list(value)}")
    return "\n".join(lines)

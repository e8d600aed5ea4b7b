"""The run directory an ``NCTracker`` writes: the files of the trainer's run-directory contract (docs/training.md),
so ``ncollapse report``, ``table`` and ``compare`` read a tracked run as they read a trained one.

* ``config.toml``: ``[data] name``, ``[model] name``, ``[loss] name`` (= the method, which ``report.tables``
  labels), ``[train] seed``, the user's sections (a dict value of ``config``) and plain hyper-parameters
  (``[hparams]``), and the tracker's settings (``[tracker]``);
* ``run.json``: dataset, model, method (also as ``loss``), seed, num_classes, class counts and groups when given,
  the environment;
* ``metrics.jsonl``: one line per measurement, rewritten whole (atomically) at every measurement so it always
  equals the tracker's history, including after ``load_state_dict`` (resume); ``metrics.csv``: its scalars as a
  table (one column per key, empty where a line lacks it);
* ``nc_state.pt``: the last measurement's ``ClassStats`` state, W and b; ``summary.json`` at ``finish``;
* ``tensorboard/``: every scalar, when tensorboard is installed (``tensorboard=None``) or required (``True``).
"""

from __future__ import annotations

import csv
import io
import math
import platform
import sys
from numbers import Real

import torch

from . import __version__
from ._io import atomic_write_bytes, atomic_write_json, atomic_write_text, check_out_dir, dumps_line
from .metrics import class_groups
from .report.logging import tensorboard_available
from .serialize import to_jsonable
from .train.config import _toml_value

__all__ = ["TrackerFiles"]


def _config_toml(desc: dict) -> str:
    sections = {"data": {"name": desc["dataset"] or "custom"}, "model": {"name": desc["model"]},
                "loss": {"name": desc["method"]}, "train": {} if desc["seed"] is None else {"seed": desc["seed"]}}
    hparams = {}
    for key, value in desc["config"].items():
        if isinstance(value, dict):
            sections.setdefault(str(key), {}).update(value)
        else:
            hparams[str(key)] = value
    sections["hparams"] = hparams
    sections["tracker"] = desc["tracker"]
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml_scalar(v)}" for k, v in values.items() if v is not None]
        lines.append("")
    return "\n".join(lines)


def _toml_scalar(value) -> str:
    """A TOML literal; values TOML cannot hold (objects, tensors) are written as their text."""
    try:
        return _toml_value(value)
    except TypeError:
        return _toml_value(str(value))


class TrackerFiles:
    """Writer of one tracked run directory (rank 0 only); see the module docstring."""

    def __init__(self, run_dir, desc: dict, tensorboard: bool | None = None):
        self.path = check_out_dir(run_dir, "run_dir")
        if tensorboard and not tensorboard_available():
            raise ValueError("tensorboard=True but the tensorboard package is not installed; pip install tensorboard "
                             "or pass tensorboard=None")
        self.path.mkdir(parents=True, exist_ok=True)
        self._fresh = not (self.path / "metrics.jsonl").exists()
        self._claimed = False
        self._writer = None
        if tensorboard or (tensorboard is None and tensorboard_available()):
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.path / "tensorboard"))
        self._desc = desc

    def _claim(self) -> None:
        """Write config.toml and run.json once the directory is known to be this run's (fresh, or resumed)."""
        if self._claimed:
            return
        if not self._fresh:
            raise ValueError(f"{self.path} already holds a run (metrics.jsonl); give the tracker a new run_dir, or "
                             "load_state_dict() the tracker's saved state to resume that run")
        self._claimed = True
        desc = self._desc
        atomic_write_text(self.path / "config.toml", _config_toml(desc))
        info = {"dataset": desc["dataset"] or "custom", "model": desc["model"], "loss": desc["method"],
                "method": desc["method"], "head": "linear", "seed": desc["seed"], "num_classes": desc["num_classes"],
                "environment": {"python": platform.python_version(), "torch": torch.__version__,
                                "ncollapse": __version__, "platform": platform.platform()},
                "command": " ".join(sys.argv), "source": "ncollapse.NCTracker"}
        counts = desc["class_counts"]
        if counts is not None:
            info.update(class_counts=[int(c) for c in counts],
                        groups=class_groups(list(counts), tuple(desc["group_thresholds"])))
        atomic_write_json(self.path / "run.json", to_jsonable(info))

    def rewind(self, history: list[dict]) -> None:
        """A resumed tracker: metrics.jsonl becomes its restored history."""
        self._fresh = True
        self._claim()
        self._write_metrics(history)

    def _write_metrics(self, history: list[dict]) -> None:
        atomic_write_text(self.path / "metrics.jsonl", "".join(dumps_line(to_jsonable(r)) + "\n" for r in history))
        columns = list(dict.fromkeys(k for r in history for k, v in r.items() if not isinstance(v, (list, dict))))
        table = io.StringIO()
        writer = csv.DictWriter(table, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(to_jsonable(r) for r in history)
        atomic_write_text(self.path / "metrics.csv", table.getvalue())

    def write(self, record: dict, stats, W, b, epoch: int, history: list[dict]) -> None:
        """Rewrite metrics.jsonl from ``history`` (ending with ``record``), nc_state.pt, and log the scalars."""
        self._claim()
        self._write_metrics(history)
        state = {"epoch": epoch, "stats": {k: v.cpu() if torch.is_tensor(v) else v
                                           for k, v in stats.state_dict().items()}, "weight": W, "bias": b}
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(self.path / "nc_state.pt", buffer.getvalue())
        if self._writer is not None:
            for key, value in record.items():
                if key != "epoch" and isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value):
                    self._writer.add_scalar(key, float(value), global_step=record["step"])
            self._writer.flush()

    def finish(self, summary: dict) -> None:
        atomic_write_json(self.path / "summary.json", to_jsonable(summary))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


"""Read a run directory (rundir contract: metrics.jsonl, run.json, config.toml, nc_state.pt, summary.json).

Reading is forgiving where a killed or unfinished run leaves holes, strict where nothing can be shown:

* ``metrics.jsonl`` missing or without one usable line → ``ValueError`` naming the file (CLI exit 2);
* a line that is not JSON (a half-written last line of a killed run, or a damaged line) is skipped with a
  warning naming the file and line; when an epoch appears twice (a resumed run re-logs it) the later line wins;
* ``run.json``, ``config.toml``, ``summary.json`` and ``nc_state.pt`` are optional: a missing or unreadable one
  becomes a note in ``Run.notes`` and the report omits or degrades the sections that need it.

Accuracies are fractions in [0, 1] as the trainer logs them; ``null`` (NaN in the run) reads back as NaN.
"""

from __future__ import annotations

import json
import math
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..metrics import GROUPS, class_groups
from ..resources import JSON_FILE_LIMIT, SIDE_FILE_LIMIT, format_bytes, read_capped, read_lines_capped
from ..stats import ClassStats

__all__ = ["Run", "load_run", "read_metrics", "load_nc_state"]

METRICS = "metrics.jsonl"


@dataclass
class Run:
    """Everything a report reads from one run directory; optional parts are None (see ``notes``)."""

    path: Path
    metrics: list[dict]
    info: dict = field(default_factory=dict)
    config_text: str | None = None
    summary: dict | None = None
    nc_state: dict | None = None
    notes: list[str] = field(default_factory=list)
    name: str | None = None

    @property
    def label(self) -> str:
        """The name shown in reports: ``name`` when set, else the directory name."""
        return self.name or self.path.name

    @property
    def last(self) -> dict:
        return self.metrics[-1]

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(epochs, values) of a scalar key over the lines that have it; null → NaN."""
        rows = [(m["epoch"], m[key]) for m in self.metrics if key in m and _is_scalar(m[key])]
        if not rows:
            return np.zeros(0), np.zeros(0)
        epochs, values = zip(*rows)
        return np.asarray(epochs, float), np.asarray([math.nan if v is None else v for v in values], float)

    def scalar_keys(self, prefix: str) -> list[str]:
        """Keys starting with ``prefix`` whose values are numbers (or null) in some line, in first-seen order."""
        keys: dict[str, None] = {}
        for m in self.metrics:
            for k, v in m.items():
                if k.startswith(prefix) and _is_scalar(v) and v is not None:
                    keys.setdefault(k)
        return list(keys)

    @property
    def num_classes(self) -> int | None:
        """K from run.json, else the length of the last ``test_acc_per_class``."""
        if isinstance(self.info.get("num_classes"), int):
            return self.info["num_classes"]
        per_class = self.last.get("test_acc_per_class")
        return len(per_class) if isinstance(per_class, list) else None

    def class_counts(self) -> list[int] | None:
        """Training counts per class: run.json, else the counts of the training statistics in nc_state.pt."""
        counts = self.info.get("class_counts")
        if isinstance(counts, list) and counts:
            return [int(c) for c in counts]
        if self.nc_state is not None:
            return self.nc_state["stats"].counts.tolist()
        return None

    def groups(self) -> dict[str, list[int]] | None:
        """head / medium / tail class ids: run.json, else ``metrics.class_groups`` of the class counts."""
        groups = self.info.get("groups")
        if isinstance(groups, dict) and groups:
            return {g: [int(c) for c in groups.get(g, [])] for g in GROUPS}
        counts = self.class_counts()
        return None if counts is None else class_groups(counts)


def _is_scalar(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def read_metrics(path) -> list[dict]:
    """Parse ``metrics.jsonl``: one dict with an integer ``epoch`` per line, sorted by epoch, later duplicates win;
    each skipped line is reported with ``warnings.warn``."""
    records, skipped = parse_metrics(Path(path))
    for message in skipped:
        warnings.warn(message, stacklevel=2)
    return records


def parse_metrics(path: Path) -> tuple[list[dict], list[str]]:
    """(records sorted by epoch, messages about skipped lines), without warning; ``ValueError`` when no line is usable."""
    if not path.exists():
        raise ValueError(f"{path} not found: a run directory needs the metrics.jsonl the trainer writes; "
                         "check the path or wait for the first epoch to finish")
    by_epoch: dict[int, dict] = {}
    skipped, last_number, bad_json = [], 0, []
    for number, line in read_lines_capped(path, JSON_FILE_LIMIT):
        if line is None:
            skipped.append(f"{path}:{number}: skipped a line longer than {format_bytes(JSON_FILE_LIMIT)}")
            continue
        if not line.strip():
            continue
        last_number = number
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad_json.append((len(skipped), number))
            skipped.append("")  # worded below, once the last line is known
            continue
        epoch = record.get("epoch") if isinstance(record, dict) else None
        if not isinstance(epoch, int) or isinstance(epoch, bool):
            skipped.append(f"{path}:{number}: skipped a line without an integer 'epoch'")
            continue
        by_epoch[epoch] = record
    for i, number in bad_json:  # a bad last line is a half-written one
        what = "half-written last line (killed run?)" if number == last_number else "line that is not JSON"
        skipped[i] = f"{path}:{number}: skipped a {what}"
    if not by_epoch:
        detail = f" ({len(skipped)} unreadable line(s) skipped)" if skipped else ""
        raise ValueError(f"{path} has no usable metrics line{detail}; the run has not finished an epoch yet")
    return [by_epoch[e] for e in sorted(by_epoch)], skipped


def load_nc_state(path) -> dict:
    """Load ``nc_state.pt`` and rebuild its ``ClassStats``: {"epoch", "stats": ClassStats, "weight", "bias",
    "test_confusion" (K x K counts of the final epoch, or None)}."""
    path = Path(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "stats" not in state:
        raise ValueError(f"{path} holds no 'stats' entry; expected the dict the trainer writes with ClassStats.state_dict()")
    raw = state["stats"]
    if not isinstance(raw, dict) or not {"num_classes", "dim"} <= set(raw):
        raise ValueError(f"{path}: 'stats' is not a ClassStats.state_dict()")
    stats = ClassStats.from_state_dict(raw)
    weight = state.get("weight")
    if weight is not None:
        weight = torch.as_tensor(weight).to(torch.float64)
        if tuple(weight.shape) != (stats.num_classes, stats.dim):
            raise ValueError(f"{path}: weight has shape {tuple(weight.shape)}; expected "
                             f"({stats.num_classes}, {stats.dim}) to match the statistics")
    bias = state.get("bias")
    confusion = state.get("test_confusion")
    if confusion is not None:
        confusion = torch.as_tensor(confusion)
        if tuple(confusion.shape) != (stats.num_classes, stats.num_classes):
            raise ValueError(f"{path}: test_confusion has shape {tuple(confusion.shape)}; expected "
                             f"({stats.num_classes}, {stats.num_classes})")
    return {"epoch": state.get("epoch"), "stats": stats, "weight": weight,
            "bias": None if bias is None else torch.as_tensor(bias).to(torch.float64), "test_confusion": confusion}


def _read_json(path: Path, notes: list[str]) -> dict | None:
    """The JSON object of ``path`` (at most ``JSON_FILE_LIMIT`` bytes, a regular file); None with a note otherwise."""
    if not path.exists():
        notes.append(f"{path.name} not found")
        return None
    try:
        data = read_capped(path, JSON_FILE_LIMIT, "")
    except (OSError, ValueError) as exc:  # a FIFO, a device, a folder, too large, unreadable
        notes.append(f"{exc}; its sections are left out")
        return None
    try:
        value = json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        notes.append(f"{path.name} is not valid JSON ({exc}); its sections are left out")
        return None
    if not isinstance(value, dict):
        notes.append(f"{path.name} does not hold a JSON object; its sections are left out")
        return None
    return value


def load_run(run_dir) -> Run:
    """Read a run directory; raises ``ValueError`` when it has no usable metrics. Problems that leave a partial
    run (skipped metrics lines, missing optional files) are collected in ``Run.notes``, not warned."""
    path = Path(run_dir)
    if not path.is_dir():
        raise ValueError(f"run directory {path} does not exist or is not a directory")
    metrics, skipped = parse_metrics(path / METRICS)
    run = Run(path=path, metrics=metrics, notes=skipped)
    run.info = _read_json(path / "run.json", run.notes) or {}
    summary_path = path / "summary.json"
    run.summary = _read_json(summary_path, run.notes) if summary_path.exists() else None
    if not summary_path.exists():
        run.notes.append("summary.json not found: the run has not finished (or was killed)")
    config = path / "config.toml"
    if config.exists():
        try:
            run.config_text = read_capped(config, SIDE_FILE_LIMIT, "").decode("utf-8", errors="replace")
            tomllib.loads(run.config_text)
        except tomllib.TOMLDecodeError as exc:
            run.notes.append(f"config.toml does not parse ({exc}); shown as written")
        except (OSError, ValueError) as exc:  # a FIFO, a device, a folder, too large, unreadable
            run.notes.append(f"{exc}; the config is left out")
    else:
        run.notes.append("config.toml not found")
    state = path / "nc_state.pt"
    if state.is_file():
        try:
            run.nc_state = load_nc_state(state)
        except Exception as exc:  # torch.load of a damaged file raises many types (UnpicklingError, IndexError, ...)
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            run.notes.append(f"nc_state.pt could not be read ({reason}); "
                             "Gram heatmaps and the final-state spectrum are left out")
    else:
        run.notes.append("nc_state.pt not found: Gram heatmaps and the final-state spectrum are left out")
    return run

"""Per-epoch logging of a run: ``metrics.jsonl`` always, TensorBoard scalars when ``tensorboard`` is installed.

``RunLogger.log(record)`` appends one JSON line (NaN/Inf → null, arrays → lists) and flushes it, so a killed
run loses at most the line being written. Opening a file whose last line was cut off by a kill truncates that
partial line first (with a warning), so the next line does not glue onto it. TensorBoard is optional and not a
dependency: ``tensorboard=None`` uses it when importable, ``True`` requires it, ``False`` never uses it; it gets
every numeric value (bools and lists skipped) as a scalar at step = epoch.
"""

from __future__ import annotations

import errno
import importlib.util
import math
import os
import warnings
from numbers import Real
from pathlib import Path

from .._io import DiskFullError, dumps_line
from ..serialize import to_jsonable

__all__ = ["RunLogger", "tensorboard_available"]


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def _drop_partial_line(path: Path) -> None:
    """Truncate the file after its last newline when a kill left a line without one."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as fh:
        data = fh.read()
        if data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1
        warnings.warn(f"{path}: dropped a half-written last line ({len(data) - keep} bytes) left by a killed run",
                      stacklevel=3)
        fh.truncate(keep)


class RunLogger:
    """Append epoch records to ``run_dir/metrics.jsonl`` (and TensorBoard); use as a context manager or call close()."""

    def __init__(self, run_dir, filename: str = "metrics.jsonl", tensorboard: bool | None = None):
        self.path = Path(run_dir) / filename
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if tensorboard and not tensorboard_available():
            raise ValueError("tensorboard=True but the tensorboard package is not installed; "
                             "pip install tensorboard or pass tensorboard=None to log JSONL only")
        _drop_partial_line(self.path)
        self._fh = open(self.path, "a", encoding="utf-8")
        self._full = False
        self._writer = None
        if tensorboard or (tensorboard is None and tensorboard_available()):
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.path.parent / "tensorboard"))

    def log(self, record: dict) -> None:
        """Append one epoch's dict (must hold an integer ``epoch``) as a flushed JSON line."""
        if not isinstance(record, dict):
            raise TypeError(f"record must be a dict of metrics; got {type(record).__name__}")
        epoch = record.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool):
            raise ValueError(f"record needs an integer 'epoch' (1-based); got {epoch!r}")
        try:
            self._fh.write(dumps_line(to_jsonable(record)) + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            self._full = True
            raise DiskFullError(f"no space left on the device while appending epoch {epoch} to {self.path}; the "
                                "earlier lines and checkpoint are kept (a partial line is dropped on --resume); free "
                                "space and continue with --resume") from None
        if self._writer is not None:
            for key, value in record.items():
                if key != "epoch" and isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value):
                    self._writer.add_scalar(key, float(value), global_step=epoch)
            self._writer.flush()

    def close(self) -> None:
        try:
            self._fh.close()
        except OSError:  # the buffered rest of a line that met a full disk: already reported by log()
            if not self._full:
                raise
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

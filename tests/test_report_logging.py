"""RunLogger: flushed JSONL with NaN → null, recovery from a killed run, optional TensorBoard."""

import errno
import json
import sys
import types
import warnings

import numpy as np
import pytest

from ncollapse._io import DiskFullError
from ncollapse.report import logging as runlog
from ncollapse.report.logging import RunLogger
from ncollapse.report.runs import read_metrics


def test_lines_are_flushed_and_nan_becomes_null(tmp_path):
    with RunLogger(tmp_path, tensorboard=False) as logger:
        logger.log({"epoch": 1, "test_acc": float("nan"), "nc/sigma_b_spectrum": np.array([2.0, 1.0, 0.0]),
                    "nc/rank": np.int64(2), "lr": np.float32(0.5)})
        line = (tmp_path / "metrics.jsonl").read_text()  # readable before close
    assert line.endswith("\n") and line.count("\n") == 1
    assert json.loads(line) == {"epoch": 1, "test_acc": None, "nc/sigma_b_spectrum": [2.0, 1.0, 0.0],
                                "nc/rank": 2, "lr": 0.5}


def test_reopening_after_a_kill_drops_the_partial_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1, "test_acc": 0.5}\n{"epoch": 2, "test_')
    with pytest.warns(UserWarning, match=r"dropped a half-written last line \(19 bytes\)"):
        logger = RunLogger(tmp_path, tensorboard=False)
    logger.log({"epoch": 2, "test_acc": 0.6})
    logger.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        records = read_metrics(path)
    assert [(r["epoch"], r["test_acc"]) for r in records] == [(1, 0.5), (2, 0.6)]


def test_bad_records_are_refused(tmp_path):
    with RunLogger(tmp_path, tensorboard=False) as logger:
        with pytest.raises(ValueError, match="integer 'epoch'"):
            logger.log({"test_acc": 0.5})
        with pytest.raises(TypeError, match="must be a dict"):
            logger.log([1, 2])
    assert (tmp_path / "metrics.jsonl").read_text() == ""


def test_tensorboard_required_but_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(runlog, "tensorboard_available", lambda: False)
    with pytest.raises(ValueError, match="tensorboard=True but the tensorboard package is not installed"):
        RunLogger(tmp_path, tensorboard=True)
    with RunLogger(tmp_path) as logger:  # auto: JSONL only
        assert logger._writer is None


def test_tensorboard_gets_finite_numeric_scalars(tmp_path, monkeypatch):
    calls = []

    class FakeWriter:
        def __init__(self, log_dir):
            calls.append(("init", log_dir))

        def add_scalar(self, tag, value, global_step):
            calls.append((tag, value, global_step))

        def flush(self):
            pass

        def close(self):
            calls.append(("close",))

    monkeypatch.setattr(runlog, "tensorboard_available", lambda: True)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    with RunLogger(tmp_path) as logger:
        logger.log({"epoch": 3, "test_acc": 0.75, "nc/nc1": np.float64(0.01), "nan": float("nan"),
                    "flag": True, "per_class": [0.1, 0.2]})
    assert calls == [("init", str(tmp_path / "tensorboard")), ("test_acc", 0.75, 3), ("nc/nc1", 0.01, 3), ("close",)]


def test_full_disk_while_logging_says_so(tmp_path):
    class Full:
        def __init__(self, fh):
            self.fh = fh

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.fh, name)

    logger = RunLogger(tmp_path, tensorboard=False)
    logger.log({"epoch": 1, "loss": 0.5})
    logger._fh = Full(logger._fh)
    with pytest.raises(DiskFullError, match="no space left on the device while appending epoch 2"):
        logger.log({"epoch": 2, "loss": 0.4})
    logger.close()
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 1

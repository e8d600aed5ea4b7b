"""Reading run directories: metrics parsing, partial runs, nc_state.pt."""

import json
import math
import warnings

import numpy as np
import pytest
import torch

import ncollapse
from fixtures.report_runs import COUNTS, make_run
from ncollapse.report.runs import load_nc_state, load_run, read_metrics


def test_half_written_last_line_is_skipped_with_a_warning(tmp_path):
    run_dir = make_run(tmp_path / "run", epochs=4, torn_tail=True)
    with pytest.warns(UserWarning, match=r"metrics.jsonl:5: skipped a half-written last line"):
        records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    run = load_run(run_dir)
    assert any("half-written last line" in n for n in run.notes)
    assert len(run.metrics) == 4


def test_duplicate_epochs_keep_the_later_line_and_bad_lines_are_named(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1, "test_acc": 0.1}\n{"epoch": 2, "test_acc": 0.2}\nnot json\n'
                    '{"lr": 0.1}\n\n{"epoch": 2, "test_acc": 0.25}\n{"epoch": 3, "test_acc": null}\n')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = read_metrics(path)
    messages = [str(w.message) for w in caught]
    assert any(m.endswith(":3: skipped a line that is not JSON") for m in messages)
    assert any(m.endswith(":4: skipped a line without an integer 'epoch'") for m in messages)
    assert [(r["epoch"], r["test_acc"]) for r in records] == [(1, 0.1), (2, 0.25), (3, None)]


def test_missing_or_empty_metrics_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist or is not a directory"):
        load_run(tmp_path / "nowhere")
    (tmp_path / "run").mkdir()
    with pytest.raises(ValueError, match=r"metrics.jsonl not found"):
        load_run(tmp_path / "run")
    (tmp_path / "run" / "metrics.jsonl").write_text('{"epoch": 1, "lr')
    with pytest.raises(ValueError, match=r"no usable metrics line \(1 unreadable line\(s\) skipped\)"):
        read_metrics(tmp_path / "run" / "metrics.jsonl")


def test_series_and_scalar_keys(tmp_path):
    run = load_run(make_run(tmp_path / "run", epochs=5, nc_every=2, ncmc=True))
    epochs, acc = run.series("test_acc")
    assert epochs.tolist() == [1, 2, 3, 4, 5]
    assert math.isnan(acc[1]) and np.isfinite(acc[[0, 2, 3, 4]]).all()  # NaN was logged as null
    nc_epochs, nc1 = run.series("nc/nc1")
    assert nc_epochs.tolist() == [2, 4, 5]
    assert (np.diff(nc1) < 0).all()
    keys = run.scalar_keys("nc/")
    assert "nc/nc1" in keys and "nc/ncc_mismatch" in keys and "nc/sigma_b_spectrum" not in keys
    assert run.scalar_keys("ncmc/") == ["ncmc/collapse_mean", "ncmc/collapse_std", "ncmc/variability"]
    assert run.num_classes == len(COUNTS)
    assert run.groups() == {"head": [0], "medium": [1, 2], "tail": [3, 4, 5]}


def test_nc_state_rebuilds_class_stats(tmp_path):
    run_dir = make_run(tmp_path / "run", epochs=3, nc_every=1)
    state = load_nc_state(run_dir / "nc_state.pt")
    raw = torch.load(run_dir / "nc_state.pt", weights_only=True)
    assert state["epoch"] == 3
    assert isinstance(state["stats"], ncollapse.ClassStats)
    torch.testing.assert_close(state["stats"].means, raw["stats"]["means"], rtol=0, atol=0)
    assert state["stats"].counts.tolist() == COUNTS
    assert state["weight"].shape == (len(COUNTS), 8)


def test_optional_files_degrade_to_notes(tmp_path):
    run_dir = make_run(tmp_path / "run", epochs=2, nc_every=1)
    (run_dir / "run.json").unlink()
    (run_dir / "summary.json").unlink()
    run = load_run(run_dir)
    assert run.info == {} and run.summary is None
    assert run.class_counts() == COUNTS  # falls back to the training statistics in nc_state.pt
    assert run.groups()["tail"] == [3, 4, 5]
    (run_dir / "nc_state.pt").write_bytes(b"truncated")
    (run_dir / "run.json").write_text("{broken")
    run = load_run(run_dir)
    assert run.nc_state is None and run.class_counts() is None
    assert any(n.startswith("nc_state.pt could not be read") for n in run.notes)
    assert any(n.startswith("run.json is not valid JSON") for n in run.notes)


def test_nc_state_with_mismatched_weight_is_a_note(tmp_path):
    run_dir = make_run(tmp_path / "run", epochs=1, nc_every=1)
    state = torch.load(run_dir / "nc_state.pt", weights_only=True)
    state["weight"] = torch.zeros(3, 8, dtype=torch.float64)
    torch.save(state, run_dir / "nc_state.pt")
    with pytest.raises(ValueError, match=r"weight has shape \(3, 8\); expected \(6, 8\)"):
        load_nc_state(run_dir / "nc_state.pt")
    assert any("weight has shape" in n for n in load_run(run_dir).notes)
    json.loads((run_dir / "run.json").read_text())

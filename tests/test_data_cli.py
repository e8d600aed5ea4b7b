"""``ncollapse data info``: per-class counts as text and JSON, clear errors."""

from __future__ import annotations

import json

from ncollapse.cli import main
from ncollapse.data import load_dataset
from ncollapse.data.longtail import longtail_counts


def test_info_json_of_a_split(capsys):
    assert main(["data", "info", "digits", "--split", "test", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    test = load_dataset("digits", split="test")
    assert out["counts"] == test.class_counts() and out["num_samples"] == len(test) == sum(out["counts"])
    assert out["image_shape"] == [1, 8, 8] and out["split"] == "test" and out["imbalance"] is None


def test_info_longtail_text(capsys):
    assert main(["data", "info", "digits", "--imbalance", "0.1", "--n-max", "100"]) == 0
    lines = capsys.readouterr().out.splitlines()
    counts = longtail_counts(100, 10, 0.1)
    assert lines[0].startswith("digits train long-tailed (tau 0.1)")
    assert lines[1] == f"10 classes, {sum(counts)} samples, n_min/n_max = 0.1"
    assert [int(line.split()[-1]) for line in lines[2:]] == counts


def test_info_errors_are_one_line_exit_2(tmp_path, capsys):
    assert main(["data", "info", "cifar10", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"ncollapse data fetch cifar10 --root {tmp_path}" in err[0]
    assert main(["data", "info", "digits", "--imbalance", "0.1", "--n-max", "1000"]) == 2
    assert "lower n_max" in capsys.readouterr().err
    assert main(["data", "info", "digits", "--imbalance", "0.1", "--split", "test"]) == 2

"""Reproducibility of ``ncollapse train``: two identical runs log identical numbers; the run records its threads
and library versions; ``data.test_per_class`` evaluates on a seeded balanced test subset."""

import json

import torch

from ncollapse.cli import main
from ncollapse.train import load_config
from ncollapse.train import build_data

ARGS = ["--set", "data.name=\"digits\"", "--set", "data.imbalance=0.1", "--set", "data.test_per_class=20",
        "--set", "model.name=\"mlp\"", "--set", "model.options={widths=[32, 32]}", "--set", "model.head=\"multicenter\"",
        "--set", "model.centers=\"class_aware\"", "--set", "model.f=2", "--set", "loss.name=\"ncmc_cosine\"",
        "--set", "train.epochs=2", "--set", "schedule.warmup_epochs=1", "--set", "train.batch_size=32", "--set", "eval.nc_every=1",
        "--set", "eval.group_thresholds=[60, 15]", "--set", "train.threads=1", "--set", "train.seed=3"]


def _numbers(run):
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        line.pop("time_s")
    return lines


def test_two_identical_runs_log_identical_numbers(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[data]\naugment = [\"crop\"]\npad = 1\n")
    for name in ("a", "b"):
        assert main(["train", "--config", str(config), *ARGS, "--out", str(tmp_path / name), "--quiet"]) == 0
    a, b = _numbers(tmp_path / "a"), _numbers(tmp_path / "b")
    assert len(a) == 2 and a == b and "ncmc/collapse_mean" in a[-1] and len(a[-1]["train_eval_acc_per_class"]) == 10
    env = json.loads((tmp_path / "a" / "run.json").read_text())["environment"]
    assert env["threads"] == 1 and env["torch"] == torch.__version__ and env["numpy"] and env["python"]
    assert "threads = 1" in (tmp_path / "a" / "config.toml").read_text()


def test_test_per_class_is_a_seeded_balanced_subset():
    cfg = load_config(None, ["data.name=\"digits\"", "data.imbalance=0.1", "data.test_per_class=20"])
    _, test = build_data(cfg)
    _, again = build_data(cfg)
    assert test.class_counts() == [20] * 10 and torch.equal(test.labels, again.labels)
    assert torch.equal(test.images, again.images)
    _, whole = build_data(load_config(None, ["data.name=\"digits\"", "data.imbalance=0.1"]))
    assert len(whole) > len(test)

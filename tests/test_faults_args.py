"""Fault injection for arguments and ``table`` (issue 19, points 5, 6 and 8): devices, ranges checked before any
folder is made, set-up failures that leave no folder, a diverged training run named as such, and malformed runs
skipped by ``table`` with a warning naming the file. Each refusal: exit 2, one line, no earlier file changed."""

from __future__ import annotations

import json
import math

import pytest
import torch
from faults_cli_common import cli, refused, snapshot, table_run

from ncollapse.report import tables
from ncollapse.validation import check_classifier, check_device

TRAIN = ["--set", "data.name=\"digits\"", "--set", "data.imbalance=0.1", "--set", "data.augment=[]",
         "--set", "model.name=\"mlp\"", "--set", "model.options={widths=[16]}", "--set", "train.epochs=2",
         "--set", "train.batch_size=64", "--set", "schedule.warmup_epochs=0", "--set", "train.threads=1",
         "--set", "eval.group_thresholds=[60, 15]"]


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[eval]\nnc_every = 1\n")
    return path


# ------------------------------------------------------------------ devices

BAD_DEVICES = ["banana", "cuda:x", "tpu", "cpu:banana"] + ([] if torch.cuda.is_available() else ["cuda", "cuda:0"])


@pytest.mark.parametrize("device", BAD_DEVICES)
def test_ufm_device(capsys, tmp_path, device):
    refused(capsys, tmp_path, ["ufm", "--classes", "3", "--dim", "4", "--device", device], "--device", device)


@pytest.mark.parametrize("device", ["banana", "cuda:x"])
def test_lesde_device(capsys, tmp_path, device):
    refused(capsys, tmp_path, ["lesde", "--classes", "3", "--steps", "5", "--device", device], "--device")


def test_check_device_accepts_cpu_and_names_the_option():
    assert check_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="^--device == 'xla'"):
        check_device("xla", "--device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA; the refusal is for CPU builds")
def test_train_cuda_on_a_cpu_build_makes_no_folder(capsys, tmp_path, config):
    out = tmp_path / "run"
    refused(capsys, tmp_path, ["train", "--config", config, *TRAIN, "--device", "cuda", "--out", out], "cuda")
    assert not out.exists()


# ------------------------------------------------------------------ ranges, checked before any folder is made

@pytest.mark.parametrize("ratios, lambdas, words", [
    ("0", "1e-3", "--ratios value == 0.0"), ("-2", "1e-3", "--ratios value == -2.0"),
    ("nan", "1e-3", "--ratios value is NaN"), ("inf", "1e-3", "--ratios value == inf"),
    ("2", "0", "--lambdas value == 0.0"), ("2", "nan", "--lambdas value is NaN"), ("2,4", "1e-3,-1", "== -1.0"),
])
def test_phase_grid_ranges(capsys, tmp_path, ratios, lambdas, words):
    out = tmp_path / "phase"
    refused(capsys, tmp_path, ["ufm", "sweep", "--ratios", ratios, "--lambdas", lambdas, "--out", out], words)
    assert not out.exists()


@pytest.mark.parametrize("name, key", [("cdnv-gap", "probe_every"), ("test-collapse", "probe_every"),
                                       ("transfer", "probe_every"), ("transfer", "episodes"),
                                       ("lesde-fit", "record_every")])
def test_experiment_counts_at_least_one(capsys, tmp_path, name, key):
    out = tmp_path / "exp"
    refused(capsys, tmp_path, ["experiment", name, "--set", f"experiment.{key}=0", "--out", out],
            f"experiment.{key} == 0, must be >= 1")
    assert not out.exists()


@pytest.mark.parametrize("threads, words", [(100000, "must be <= 1024"), (-1, "must be >= 0")])
def test_train_threads_before_the_folder(capsys, tmp_path, config, threads, words):
    out = tmp_path / "run"
    refused(capsys, tmp_path, ["train", "--config", config, *TRAIN, "--set", f"train.threads={threads}",
                               "--out", out], "train.threads", words)
    assert not out.exists()


def test_failed_set_up_leaves_no_folder(capsys, tmp_path, config):
    out = tmp_path / "run"
    refused(capsys, tmp_path, ["train", "--config", config, *TRAIN, "--set", "data.name=\"mnist\"",
                               "--set", f"data.root=\"{tmp_path / 'nothing'}\"", "--out", out], "mnist")
    assert not out.exists()


def test_diverged_training_names_lr_epoch_and_step(capsys, tmp_path, config):
    """optim.lr = inf: one line naming the learning rate, the epoch and the step, not 'features contain NaN';
    the run directory can be removed and the run redone elsewhere."""
    out = tmp_path / "run"
    line = refused(capsys, tmp_path, ["train", "--config", config, *TRAIN, "--set", "optim.lr=inf", "--out", out,
                                      "--quiet"], "training diverged", "learning rate inf", "epoch 1, step")
    assert "NaN" not in line and "delete this run directory" in line
    assert not (out / "checkpoint.pt").exists() and not (out / "run.lock").exists()
    assert (out / "config.toml").is_file()  # what was written before the divergence names the config used


# ------------------------------------------------------------------ table: malformed runs are skipped, NaN shown

def _table(capsys, root, *extra):
    rc, out, err = cli(capsys, "table", "--runs", root, *extra)
    return rc, out, [line for line in err if line.startswith("ncollapse table: warning:")], err


@pytest.mark.parametrize("name, content, words", [
    ("summary.json", "[1, 2]", "summary.json holds a JSON list"),
    ("run.json", "[]", "run.json holds a JSON list"),
    ("summary.json", '"done"', "summary.json holds a JSON str"),
    ("summary.json", "{not json", "summary.json is not valid JSON"),
    ("summary.json", '{"best_test_acc": "high"}', "best_test_acc is 'high', not a number"),
    ("summary.json", '{"best_test_acc": [0.5]}', "best_test_acc is [0.5], not a number"),
    ("summary.json", '{"best_test_acc": true}', "best_test_acc is True, not a number"),
    ("run.json", '{"seed": [1]}', "seed [1] is not an integer"),
])
def test_table_skips_a_malformed_run(capsys, tmp_path, name, content, words):
    root = tmp_path / "runs"
    table_run(root, "good", 0.6, seed=0)
    bad = table_run(root, "bad", 0.9, seed=1)
    (bad / name).write_text(content)
    before = snapshot(root)
    rc, out, warnings, _ = _table(capsys, root)
    assert rc == 0 and "| CE | **60.0** |" in out
    assert any(str(bad) in w and words in w and "skipped" in w for w in warnings), warnings
    assert snapshot(root) == before


@pytest.mark.parametrize("value", ["null", "NaN"])
def test_table_shows_a_nan_metric_with_a_warning(capsys, tmp_path, value):
    root = tmp_path / "runs"
    table_run(root, "a", 0.6, seed=0)
    nan = table_run(root, "b", 0.9, seed=1)
    (nan / "summary.json").write_text('{"best_test_acc": %s, "final_test_acc": 0.9}' % value)
    rc, out, warnings, _ = _table(capsys, root)
    assert rc == 0 and "| CE | NaN ± NaN |" in out  # the seed is kept: the mean over both is NaN
    assert any(str(nan / "summary.json") in w and "best_test_acc is" in w and "NaN" in w for w in warnings)


def test_table_duplicate_seed_keeps_the_path_sorting_first(capsys, tmp_path):
    root = tmp_path / "runs"
    table_run(root, "b_later", 0.9, seed=0)
    table_run(root, "a_first", 0.5, seed=0)
    for order in ([root / "b_later", root / "a_first"], [root / "a_first", root / "b_later"]):
        rc, out, warnings, _ = _table(capsys, *order)
        assert rc == 0 and "| CE | **50.0** |" in out
        assert any("b_later: seed 0 already in this cell" in w and "a_first" in w for w in warnings)


def test_table_all_runs_malformed_is_one_line(capsys, tmp_path):
    root = tmp_path / "runs"
    (table_run(root, "bad", 0.9) / "summary.json").write_text("[]")
    rc, _, warnings, err = _table(capsys, root)
    assert rc == 2 and len(err) == len(warnings) + 1 and "no finished runs" in err[-1]


def test_nan_cells_are_left_out_of_the_ranking(tmp_path):
    table_run(tmp_path, "a", float("nan"), seed=0)
    runs = tables.load_runs([tmp_path])
    with pytest.warns(UserWarning, match="best_test_acc is NaN"):
        table = tables.build_table("auto", runs, "best")
    cell = table.cells[0][0]
    assert math.isnan(cell.values[0]) and cell.rank == 0 and tables.cell_text(cell, True) == "NaN"


# ------------------------------------------------------------------ messages name K, help writes under runs/

def test_classifier_shape_message_names_k():
    with pytest.raises(ValueError, match=r"expected \(K, d\) = \(K, 64\)"):
        check_classifier(torch.zeros(3, 8), dim=64)


@pytest.mark.parametrize("argv", [["ufm", "--help"], ["ufm", "sweep", "--help"], ["ufm", "threshold", "--help"],
                                  ["ufm", "experiment", "--help"], ["table", "--help"]])
def test_help_examples_write_under_runs(capsys, argv):
    with pytest.raises(SystemExit):
        cli(capsys, *argv)
    text = capsys.readouterr().out
    outs = [line.split("--out ")[1].split()[0] for line in text.splitlines()
            if line.lstrip().startswith("ncollapse") and "--out " in line]
    assert outs and all(o.startswith(("runs/", "/tmp/")) for o in outs), outs


def test_json_summary_of_a_real_table(capsys, tmp_path):
    """The right result where nothing is wrong: two seeds, mean ± sample std."""
    table_run(tmp_path, "a", 0.5, seed=0)
    table_run(tmp_path, "b", 0.7, seed=1)
    rc, out, warnings, _ = _table(capsys, tmp_path)
    assert rc == 0 and "| CE | **60.0 ± 14.1** |" in out and not warnings
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["best_test_acc"] == 0.5


@pytest.mark.parametrize("args, words", [(["--theta", "5"], "theta == 5.0"), (["--theta", "nan"], "theta is NaN"),
                                         (["--centers", "0,2"], "centers_per_class[0] == 0"),
                                         (["--samples", "0"], "num_samples == 0")])
def test_ncmc_toy_refusal_leaves_no_folder(capsys, tmp_path, args, words):
    out = tmp_path / "toy" / "out"
    refused(capsys, tmp_path, ["ncmc", "toy", "--out", out, "--samples", "50", *args], words)
    assert not (tmp_path / "toy").exists()


def test_ufm_experiment_refusal_leaves_no_folder(capsys, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise ValueError("refused after the claims")

    monkeypatch.setattr("ncollapse.ufm.experiments.run_experiment", refuse)
    out = tmp_path / "ufm" / "out"
    refused(capsys, tmp_path, ["ufm", "experiment", "nc_dynamics", "--out", out], "refused after the claims")
    assert not (tmp_path / "ufm").exists()

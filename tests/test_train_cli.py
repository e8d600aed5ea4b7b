"""``ncollapse train`` / ``ncollapse evaluate`` on digits, the NCMC and SETF heads, and bad input (exit 2)."""

import json

import pytest

from ncollapse.cli import main

ARGS = ["--set", "data.name=\"digits\"", "--set", "data.imbalance=0.1", "--set", "data.augment=[]",
        "--set", "model.name=\"mlp\"", "--set", "model.options={widths=[32, 32]}", "--set", "train.epochs=2",
        "--set", "train.batch_size=32", "--set", "schedule.warmup_epochs=0", "--set", "optim.lr=0.05",
        "--set", "eval.group_thresholds=[60, 15]", "--set", "train.threads=1"]


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[eval]\nnc_every = 1\n")
    return path


def test_train_then_evaluate(tmp_path, config, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), *ARGS, "--out", str(out), "--quiet", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert summary["final_test_acc"] == last["test_acc"] and summary["status"] == "finished"
    assert main(["evaluate", "--run", str(out), "--json", "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["acc"] == pytest.approx(last["test_acc"]) and report["acc_tail"] == pytest.approx(last["test_acc_tail"])
    assert report["epoch"] == 2 and "nc/nc1" in report and report["split"] == "test"
    assert main(["evaluate", "--run", str(out), "--split", "train", "--json", "--device", "cpu"]) == 0
    train_report = json.loads(capsys.readouterr().out)
    assert train_report["nc/nc1"] == pytest.approx(last["nc/nc1"], rel=1e-9)
    assert train_report["nc/num_samples"] == sum(json.loads((out / "run.json").read_text())["class_counts"])
    assert main(["evaluate", "--run", str(out), "--device", "cpu"]) == 0
    assert "acc_per_class" in capsys.readouterr().out


def test_ncmc_and_setf_heads(tmp_path, config, capsys):
    """CAL on the multi-center frame tracks ncmc/* metrics; the ETF head trains with dot regression."""
    ncmc = ["--set", "model.head=\"multicenter\"", "--set", "model.centers=\"class_aware\"", "--set", "model.f=2",
            "--set", "model.feature_dim=40", "--set", "loss.name=\"ncmc_cosine\"", "--set", "train.mixup_alpha=1.0"]
    assert main(["train", "--config", str(config), *ARGS, *ncmc, "--out", str(tmp_path / "cal"), "--quiet"]) == 0
    last = json.loads((tmp_path / "cal" / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0 <= last["ncmc/collapse_mean"] <= 4 and last["ncmc/variability"] is not None and last["test_acc"] > 0.1
    setf = ["--set", "model.head=\"etf\"", "--set", "loss.name=\"dot_regression\""]
    assert main(["train", "--config", str(config), *ARGS, *setf, "--out", str(tmp_path / "setf"), "--quiet"]) == 0
    last = json.loads((tmp_path / "setf" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["test_acc"] > 0.3 and last["nc/self_duality"] is not None


@pytest.mark.parametrize("extra, words", [
    (["--set", "optim.lrr=0.1"], "did you mean 'lr'"),
    (["--set", "train.epochs=\"3\""], "train.epochs must be an integer"),
    (["--set", "loss.name=\"ncmc_cosine\""], "needs model.head = 'multicenter'"),
    (["--set", "eval.decision=\"gcr\""], "eval.decision = 'gcr' needs model.head = 'multicenter'"),
    (["--set", "data.name=\"mnist\"", "--set", "data.root=\"/nonexistent\""], "ncollapse data fetch mnist"),
])
def test_bad_input_exits_2(tmp_path, config, capsys, extra, words):
    assert main(["train", "--config", str(config), *ARGS, *extra, "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_evaluate_missing_or_corrupt_run(tmp_path, capsys):
    assert main(["evaluate", "--run", str(tmp_path)]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert main(["evaluate", "--run", str(tmp_path)]) == 2
    assert "corrupted or truncated" in capsys.readouterr().err

"""Training end to end on scikit-learn's digits: the run directory, exact resume, refusal of bad resumes."""

import json

import pytest
import torch

import ncollapse.train.trainer as trainer
from ncollapse.train import load_checkpoint, load_config, train
from conftest import file_contents, interrupt_at

BASE = ["data.name=\"digits\"", "data.imbalance=0.1", "data.pad=1", "model.name=\"mlp\"",
        "model.options={widths=[32, 32]}", "train.epochs=3", "train.batch_size=32", "data.augment=[]", "train.threads=1",
        "schedule.warmup_epochs=1", "optim.lr=0.05", "eval.nc_every=2", "eval.group_thresholds=[60, 15]"]


def _cfg(*extra):
    return load_config(None, [*BASE, *extra])


def _lines(path):
    out = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        record.pop("time_s")
        out.append(record)
    return out


def test_run_directory_contract(tmp_path):
    cfg = _cfg("loss.name=\"balanced_softmax\"")
    summary = train(cfg, tmp_path / "run", device="cpu", command="ncollapse train test")
    run = tmp_path / "run"
    assert summary["status"] == "finished"
    info = json.loads((run / "run.json").read_text())
    counts = info["class_counts"]
    assert counts[0] == max(counts) and counts[-1] == max(counts) // 10  # digits-LT, tau 0.1
    assert info["groups"]["head"] and info["groups"]["tail"] and info["command"] == "ncollapse train test"
    records = _lines(run / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert "nc/nc1" not in records[0] and "nc/nc1" in records[1] and "nc/nc1" in records[2]
    last = records[-1]
    for key in ("nc/cdnv", "nc/etf_error_means", "nc/self_duality", "nc/ncc_mismatch", "nc/sigma_b_spectrum"):
        assert key in last
    assert len(last["nc/sigma_b_spectrum"]) == 10 and len(last["test_acc_per_class"]) == 10
    tail = info["groups"]["tail"]
    assert last["test_acc_tail"] == pytest.approx(sum(last["test_acc_per_class"][k] for k in tail) / len(tail))
    assert last["best_test_acc"] == max(r["test_acc"] for r in records) > 0.5
    assert summary["best_test_acc"] == last["best_test_acc"] and summary["final_test_acc"] == last["test_acc"]
    assert json.loads((run / "summary.json").read_text())["best_epoch"] == summary["best_epoch"]
    state = torch.load(run / "nc_state.pt", weights_only=True)
    assert state["epoch"] == 3 and state["weight"].dtype == torch.float64 and state["weight"].shape == (10, 32)
    assert int(state["stats"]["counts"].sum()) == sum(counts)
    assert (run / "config.toml").read_text().count("[") >= 7


def test_interrupted_run_resumes_to_identical_weights(tmp_path, monkeypatch):
    """SIGINT mid-epoch and again at an epoch's last step; two resumes end bit-identical to one run."""
    cfg = _cfg("train.mixup_alpha=0.4", "data.augment=[\"crop\", \"flip\"]")
    train(cfg, tmp_path / "whole", device="cpu")
    steps_per_epoch = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")["step"] // 3
    interrupt_at(monkeypatch, trainer, [steps_per_epoch + 3, 2 * steps_per_epoch - 1])
    first = train(cfg, tmp_path / "cut", device="cpu")
    assert first == {"status": "interrupted", "signal": 130, "epoch": 1, "batch_in_epoch": 4}
    with pytest.raises(ValueError, match="already holds a run"):
        train(cfg, tmp_path / "cut", device="cpu")
    second = train(cfg, tmp_path / "cut", resume=True, device="cpu")
    assert second["status"] == "interrupted" and second["batch_in_epoch"] == 0 and second["epoch"] == 2
    third = train(cfg, tmp_path / "cut", resume=True, device="cpu")
    assert third["status"] == "finished"
    want = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")
    got = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    for key, value in want["model"].items():
        assert torch.equal(value, got["model"][key]), key
    assert got["step"] == want["step"] and _lines(tmp_path / "cut" / "metrics.jsonl") == _lines(
        tmp_path / "whole" / "metrics.jsonl")


def test_bad_resumes_change_nothing(tmp_path, monkeypatch):
    cfg = _cfg("train.epochs=2")
    interrupt_at(monkeypatch, trainer, [25])
    assert train(cfg, tmp_path, device="cpu")["status"] == "interrupted"
    files = file_contents(tmp_path)
    with pytest.raises(ValueError, match=r"another config \(optim.lr: 0.05 in the checkpoint, 0.1 now"):
        train(_cfg("train.epochs=2", "optim.lr=0.1"), tmp_path, resume=True, device="cpu")
    assert file_contents(tmp_path) == files
    (tmp_path / "checkpoint.pt").write_bytes(files["checkpoint.pt"][: len(files["checkpoint.pt"]) // 2])
    with pytest.raises(ValueError, match="checkpoint.pt is corrupted or truncated"):
        train(cfg, tmp_path, resume=True, device="cpu")
    files["checkpoint.pt"] = files["checkpoint.pt"][: len(files["checkpoint.pt"]) // 2]
    assert file_contents(tmp_path) == files and "metrics.jsonl" in files


def test_metrics_beyond_the_checkpoint_are_dropped_on_resume(tmp_path):
    """A run killed between the metrics line and the checkpoint (or mid-line) resumes without duplicates."""
    cfg = _cfg("train.epochs=2", "eval.nc_every=0")
    train(cfg, tmp_path, device="cpu")
    whole = _lines(tmp_path / "metrics.jsonl")
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    text = (tmp_path / "metrics.jsonl").read_text()
    (tmp_path / "metrics.jsonl").write_text(text + '{"epoch": 3, "half')
    assert train(cfg, tmp_path, resume=True, device="cpu")["status"] == "finished"
    assert _lines(tmp_path / "metrics.jsonl") == whole
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == ckpt["step"]


def test_resume_of_a_checkpoint_from_before_a_config_key_was_added(tmp_path, monkeypatch):
    """A key added to the schema later (here eval.decision) counts at its default, not as a different config."""
    cfg = _cfg("train.epochs=2")
    interrupt_at(monkeypatch, trainer, [25])
    assert train(cfg, tmp_path, device="cpu")["status"] == "interrupted"
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    del ckpt["config"]["eval"]["decision"]
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    assert train(cfg, tmp_path, resume=True, device="cpu")["status"] == "finished"

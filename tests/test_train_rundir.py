"""A run directory is owned by one process and nothing in it is overwritten silently: the lock, resume without
a checkpoint, extending a run, foreign checkpoints and a full disk."""

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import ncollapse.train.checkpoint as checkpoint
from ncollapse.cli import main
from ncollapse.train import load_checkpoint, load_config, train
from ncollapse.train.checkpoint import LOCK_NAME, RunLock, RunLockedError
from conftest import file_contents

TOML = """
[data]
name = "digits"
imbalance = 0.1
pad = 1
augment = []
[model]
name = "mlp"
options = {widths = [32, 32]}
[train]
epochs = EPOCHS
batch_size = 32
threads = 1
[schedule]
warmup_epochs = 1
[optim]
lr = 0.05
[eval]
nc_every = 2
group_thresholds = [60, 15]
"""


def _config_file(tmp_path, epochs):
    path = tmp_path / f"digits_{epochs}.toml"
    path.write_text(TOML.replace("EPOCHS", str(epochs)))
    return path


def _start(config, out):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "ncollapse", "train", "--config", str(config), "--out", str(out),
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _epochs(out):
    return [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _wait_for(path, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_two_concurrent_starts_one_wins(tmp_path):
    config, out = _config_file(tmp_path, 100), tmp_path / "run"
    procs = [_start(config, out), _start(config, out)]
    results = [(p, *p.communicate(timeout=600)) for p in procs]
    codes = sorted(p.returncode for p, _, _ in results)
    assert codes == [0, 2], [(p.returncode, err) for p, _, err in results]
    winner = next(p for p, _, _ in results if p.returncode == 0)
    loser_err = next(err for p, _, err in results if p.returncode == 2).strip().splitlines()
    assert len(loser_err) == 1 and f"is in use by process {winner.pid}" in loser_err[0]
    assert _epochs(out) == list(range(1, 101))  # one run's lines, not two interleaved
    assert not (out / LOCK_NAME).exists()


def test_second_start_names_the_holder_and_a_dead_holder_is_taken_over(tmp_path, capsys, caplog):
    config, out = _config_file(tmp_path, 400), tmp_path / "run"
    holder = _start(config, out)
    try:
        _wait_for(out / LOCK_NAME, holder)
        assert main(["train", "--config", str(config), "--out", str(out), "--resume", "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"is in use by process {holder.pid}" in err[0]
        _wait_for(out / "checkpoint.pt", holder)
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding the lock
        holder.communicate()
    assert (out / LOCK_NAME).read_text().split()[-1] == str(holder.pid)
    with caplog.at_level(logging.INFO, logger="ncollapse"):
        with pytest.raises(RunLockedError, match="in use"), RunLock(out), RunLock(out):
            pass
        assert f"left by process {holder.pid}, which is no longer running" in caplog.text
        first = load_checkpoint(out / "checkpoint.pt")["epoch"]

        def stop_after_one_epoch(epoch, model):
            os.kill(os.getpid(), signal.SIGINT)  # the loop saves a checkpoint and returns
            return {}

        summary = train(load_config(config), out, resume=True, device="cpu", on_epoch=stop_after_one_epoch)
    assert summary["status"] == "interrupted"
    assert f"resuming from epoch {first + 1}, step " in caplog.text
    assert not (out / LOCK_NAME).exists()


def test_lock_of_another_host_is_not_taken(tmp_path):
    (tmp_path / LOCK_NAME).write_text("elsewhere.example 1\n")
    with pytest.raises(RunLockedError, match="process 1 on host elsewhere.example"):
        with RunLock(tmp_path):
            pass


def test_resume_without_checkpoint_leaves_the_run_alone(tmp_path, capsys):
    config, out = _config_file(tmp_path, 2), tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out), "--quiet"]) == 0
    (out / "checkpoint.pt").unlink()
    before = file_contents(out)
    capsys.readouterr()
    assert main(["train", "--config", str(config), "--out", str(out), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a run (metrics.jsonl) but no checkpoint.pt" in err[0]
    assert file_contents(out) == before


def test_extending_a_finished_run_matches_a_longer_run(tmp_path):
    config = _config_file(tmp_path, 2)
    train(load_config(config), tmp_path / "ext", device="cpu")
    longer = load_config(config, ["train.epochs=3"])
    train(longer, tmp_path / "ext", resume=True, device="cpu")
    train(longer, tmp_path / "straight", device="cpu")

    def lines(name):
        return [{k: v for k, v in json.loads(line).items() if k != "time_s"}
                for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    assert lines("ext") == lines("straight")
    with pytest.raises(ValueError, match="train.epochs: 3 in the checkpoint, 2 now"):
        train(load_config(config), tmp_path / "ext", resume=True, device="cpu")


class _Foreign:
    pass


def test_foreign_and_damaged_checkpoints_are_named_honestly(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"format": checkpoint.CHECKPOINT_FORMAT, "payload": _Foreign()}, foreign)
    with pytest.raises(ValueError) as exc:
        load_checkpoint(foreign)
    message = str(exc.value)
    assert "foreign or tampered file and was not loaded" in message
    assert "weights_only" not in message and "corrupted" not in message
    damaged = tmp_path / "damaged.pt"
    torch.save({"format": checkpoint.CHECKPOINT_FORMAT, "x": torch.zeros(1000)}, damaged)
    damaged.write_bytes(damaged.read_bytes()[:300])
    with pytest.raises(ValueError, match="corrupted or truncated"):
        load_checkpoint(damaged)


def test_full_disk_during_a_checkpoint_keeps_the_last_good_one(tmp_path, monkeypatch, capsys):
    config, out = _config_file(tmp_path, 3), tmp_path / "run"
    real_write, real_fsync = checkpoint.atomic_write_bytes, os.fsync
    state = {"checkpoints": 0, "full": False}

    def fsync(fd):
        if state["full"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    def write(path, data):  # the second checkpoint meets a full disk inside the atomic write
        state["checkpoints"] += path.name == "checkpoint.pt"
        state["full"] = path.name == "checkpoint.pt" and state["checkpoints"] == 2
        try:
            return real_write(path, data)
        finally:
            state["full"] = False

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(checkpoint, "atomic_write_bytes", write)
    assert main(["train", "--config", str(config), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no space left on the device while writing" in err[0]
    assert "the previous checkpoint.pt is kept unchanged" in err[0]
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    assert not [p for p in out.iterdir() if p.name.startswith(".nc")]  # no temp file left (_io: ".nc" + 8 chars)
    assert not (out / LOCK_NAME).exists()

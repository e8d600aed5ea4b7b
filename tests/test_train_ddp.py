"""DDP on gloo: 2 local processes give the metrics of a 1-process run (same global batches, no BatchNorm)."""

import json
import os
import socket

import pytest
import torch.multiprocessing as mp

from ncollapse.train import load_checkpoint, load_config, train

OVERRIDES = ["data.name=\"digits\"", "data.augment=[]", "model.name=\"mlp\"",
             "model.options={widths=[32, 32], batch_norm=false}", "train.epochs=2", "train.batch_size=64",
             "train.drop_last=true", "train.threads=1", "schedule.warmup_epochs=1", "optim.lr=0.05",
             "eval.nc_every=1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    train(load_config(None, OVERRIDES), out, device="cpu")


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_process_ddp_matches_one_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)
    train(load_config(None, OVERRIDES), tmp_path / "one", device="cpu")
    ddp, one = _records(tmp_path / "ddp" / "metrics.jsonl"), _records(tmp_path / "one" / "metrics.jsonl")
    assert len(ddp) == len(one) == 2
    for a, b in zip(ddp, one):
        assert a["test_acc"] == b["test_acc"] and a["test_acc_per_class"] == b["test_acc_per_class"]
        for key in ("lr", "train_loss", "train_acc", "nc/nc1", "nc/cdnv", "nc/etf_error_means", "nc/self_duality",
                    "nc/ncc_mismatch", "nc/trace_sigma_w"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
        assert a["nc/num_samples"] == b["nc/num_samples"] == 1442
    assert load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")["world_size"] == 2
    assert not any(p.name.startswith(".") for p in (tmp_path / "ddp").iterdir())  # rank 0 alone wrote, atomically

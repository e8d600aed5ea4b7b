"""NCTracker under torch.distributed (gloo, 2 local processes): each rank measures its shard, the statistics are
all-reduced, and the metrics equal one process measuring everything; only rank 0 writes the run directory."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from ncollapse import NCTracker
from ncollapse.report.runs import load_run

K, D = 4, 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setup():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % K
    x = torch.randn(200, D, generator=g) + 3 * torch.eye(D)[y]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Linear(16, K))
    return x, y, model


def _measure(x, y, model, run_dir=None, mode="eval_pass"):
    loader = [(x[i:i + 25], y[i:i + 25]) for i in range(0, len(y), 25)]
    tracker = NCTracker(model, K, loader, mode=mode, run_dir=run_dir, tensorboard=False)
    if mode == "online":
        model.train()
        for xb, yb in loader:
            model(xb)
            tracker.update(yb)
    record = tracker.epoch_end()
    tracker.finish()
    return record


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        x, y, model = _setup()
        shard = (x[rank::world], y[rank::world])
        records = {mode: _measure(*shard, model, os.path.join(out, mode), mode) for mode in ("eval_pass", "online")}
        torch.save(records, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_measure_what_one_does(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    x, y, model = _setup()
    for mode in ("eval_pass", "online"):
        want = _measure(x, y, model, mode=mode)
        for rank in (0, 1):
            got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)[mode]
            assert got["nc/num_samples"] == len(y)
            for key in ("nc/nc1", "nc/cdnv", "nc/self_duality", "nc/etf_error_means"):
                assert got[key] == pytest.approx(want[key], rel=1e-6), (mode, key)
            if mode == "eval_pass":
                assert got["nc/ncc_mismatch"] == want["nc/ncc_mismatch"]
                assert got["train_eval_acc"] == want["train_eval_acc"]
        assert load_run(tmp_path / mode).last["nc/nc1"] == pytest.approx(want["nc/nc1"], rel=1e-6)

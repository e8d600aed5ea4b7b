"""ClassStats.all_reduce / NCCCounts.all_reduce with 2 processes on the gloo backend equal the whole."""

import os
import socket

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ncollapse import ClassStats, NCCCounts, measure
from ncollapse.geometry import multicenter_frame
from ncollapse.metrics import measure_ncmc
from ncollapse.stats import NCMCStats

from conftest import make_features


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, x, y, W, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        shard_x, shard_y = x[rank::world], y[rank::world]
        s = ClassStats(6, x.shape[1], per_class_cov=True, rare_below=8)
        s.update(shard_x, shard_y)
        s.all_reduce()
        ncc = NCCCounts.from_stats(s, W=W)
        ncc.update(shard_x, shard_y)
        ncc.all_reduce()
        frame = multicenter_frame(x.shape[1], [1, 2, 1, 2, 1, 2], 0.3)
        acc = NCMCStats(frame)
        acc.update(shard_x, shard_y)
        acc.all_reduce()
        if rank == 0:
            torch.save({"state": s.state_dict(), "report": measure(s, W=W, ncc=ncc), "ncmc": measure_ncmc(acc)},
                       os.path.join(out_dir, "out.pt"))
    finally:
        dist.destroy_process_group()


def test_all_reduce_two_processes_equals_whole(tmp_path):
    x, y, _ = make_features([90, 50, 30, 12, 7, 3], dim=16, seed=7)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    W = torch.from_numpy(np.random.default_rng(0).normal(size=(6, 16)))
    mp.spawn(_worker, args=(2, _free_port(), x, y, W, str(tmp_path)), nprocs=2, join=True)
    got = torch.load(tmp_path / "out.pt", weights_only=False)
    whole = ClassStats(6, 16, per_class_cov=True, rare_below=8)
    whole.update(x, y)
    ncc = NCCCounts.from_stats(whole, W=W)
    ncc.update(x, y)
    want = measure(whole, W=W, ncc=ncc)
    torch.testing.assert_close(got["state"]["scatter"], whole.scatter, atol=1e-10, rtol=1e-11)
    torch.testing.assert_close(got["state"]["class_scatter"], whole.class_scatter, atol=1e-10, rtol=1e-11)
    for key in ("nc1", "cdnv", "self_duality", "ncc_mismatch", "nc1_tail"):
        assert abs(got["report"][key] - want[key]) <= 1e-10 * max(1.0, abs(want[key])), key
    for c in (4, 5):  # classes of 7 and 3 samples: every sample kept, rank 0's first, then rank 1's
        kept = got["state"]["rare_samples"][c, : int((y == c).sum())]
        assert torch.equal(kept, torch.cat([x[0::2][y[0::2] == c], x[1::2][y[1::2] == c]]))
    acc = NCMCStats(multicenter_frame(16, [1, 2, 1, 2, 1, 2], 0.3))
    acc.update(x, y)
    for key, value in measure_ncmc(acc).items():
        assert abs(got["ncmc"][key] - value) < 1e-12, key

"""Device choice and DDP set-up, detected from the environment as torchrun sets it (RANK, WORLD_SIZE,
LOCAL_RANK); the same code runs unchanged in one process. Backend: nccl on CUDA, gloo otherwise."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistContext", "resolve_device", "setup", "teardown", "all_reduce_sum", "any_rank", "gather_objects"]


@dataclass(frozen=True)
class DistContext:
    """Where this process runs: ``rank`` of ``world_size`` on ``device``; only rank 0 writes files."""

    rank: int
    world_size: int
    device: torch.device
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` → cuda, else mps, else cpu; an unavailable device is a ``ValueError``."""
    if name not in ("auto", "cpu", "cuda", "mps"):
        raise ValueError(f"device == {name!r}, must be one of 'auto', 'cpu', 'cuda', 'mps'")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but torch.cuda.is_available() is False; use --device cpu")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' requested but torch.backends.mps.is_available() is False; use --device cpu")
    return torch.device(name)


def setup(device: str = "auto") -> DistContext:
    """Initialise ``torch.distributed`` when launched by torchrun (WORLD_SIZE > 1), else a 1-process context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(0, 1, resolve_device(device))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), dev, initialised_here=True)


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op in one process)."""
    if ctx.distributed:
        dist.barrier()


def teardown(ctx: DistContext) -> None:
    if ctx.initialised_here and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (no-op in one process)."""
    if ctx.distributed:
        dist.all_reduce(tensor)
    return tensor


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True on every rank when ``flag`` is true on some rank (agreement on stopping)."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([int(flag)], device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return bool(t.item())


def gather_objects(obj, ctx: DistContext) -> list:
    """Every rank's ``obj`` in rank order (a one-element list in one process)."""
    if not ctx.distributed:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out

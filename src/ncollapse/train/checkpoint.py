"""The run directory's state: the checkpoint format, save and restore, and the files written beside it.

``checkpoint.pt`` holds the model, optimiser, scaler, step, each rank's loader state (epoch and batch; its
order and augmentation are pure functions of (seed, epoch, batch, rank)), every RNG state incl. the mixup
generator, and the running loss/accuracy sums of the epoch, so a resumed run continues at the next batch and on
CPU ends with bit-identical weights. A run directory belongs to one config: resuming under another is refused
with the keys that differ, except a larger ``train.epochs`` (extending a run). A run directory belongs to one
process: ``RunLock`` creates ``run.lock`` (O_CREAT | O_EXCL, holding host and PID) before anything else is
written and removes it when the run ends; a second start exits with the holder's PID, and the lock of a dead
process is taken over with a note. Writes are atomic (``_io``); the contract is in docs/training.md.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import platform
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from .._io import atomic_write_bytes, atomic_write_json, atomic_write_text
from ..serialize import to_jsonable
from .build import Run
from .config import Config, config_from_dict, dumps_toml
from .dist import DistContext, gather_objects

__all__ = ["CHECKPOINT_FORMAT", "LOCK_NAME", "RunLock", "RunLockedError", "TrainState", "load_checkpoint",
           "open_run_dir", "restore", "save_checkpoint", "save_torch", "read_metrics", "write_run_files"]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "ncollapse.train.checkpoint/1"
LOCK_NAME = "run.lock"


class RunLockedError(ValueError):
    """Another live process owns the run directory."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class RunLock:
    """Exclusive ownership of a run directory for the life of a run (a context manager).

    ``run.lock`` is created atomically (``O_CREAT | O_EXCL``) with "host pid"; when it exists, a live holder
    (or one on another host, which cannot be checked) is an error naming it, and a dead holder's lock is moved
    aside with ``os.rename`` (only one taker wins), checked to be the one inspected, and replaced, with a note.
    """

    def __init__(self, out):
        self.path = Path(out) / LOCK_NAME
        self.owner = f"{socket.gethostname()} {os.getpid()}"

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(8):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(self.owner + "\n")
            return self
        raise RunLockedError(f"{self.path.parent}: could not take {LOCK_NAME} (other processes keep starting here)")

    def _take_over_if_stale(self) -> None:
        try:
            seen = self.path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return
        host, _, pid = seen.rpartition(" ")
        if not pid.isdigit():
            raise RunLockedError(f"{self.path} exists but names no process ({seen!r}); delete it if no run is active")
        if host != socket.gethostname() or _pid_alive(int(pid)):
            where = "" if host == socket.gethostname() else f" on host {host}"
            raise RunLockedError(f"{self.path.parent} is in use by process {pid}{where} (lock {self.path}); wait for "
                                 f"it to finish or choose another --out")
        aside = self.path.with_name(f"{LOCK_NAME}.stale.{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:  # another process took it over first; try again
            return
        if aside.read_text(encoding="utf-8").strip() == seen:
            log.warning("note: %s was left by process %s, which is no longer running; taking it over", self.path, pid)
            aside.unlink()
        else:  # a live process replaced the lock between our read and rename: give it back
            os.replace(aside, self.path)

    def __exit__(self, *exc) -> bool:
        try:
            if self.path.read_text(encoding="utf-8").strip() == self.owner:
                self.path.unlink()
        except FileNotFoundError:
            pass
        return False


@dataclass
class TrainState:
    """Where the loop stands: global step, epoch and batch in it, best test accuracy, wall time, the epoch's sums."""

    sums: torch.Tensor  # loss·n, correct, n over the epoch's batches (float64, on the device)
    step: int = 0
    epoch: int = 0
    batch: int = 0
    best: float = -1.0
    best_epoch: int = 0
    elapsed: float = 0.0  # wall seconds of the earlier sessions of this run
    t_start: float = field(default_factory=time.perf_counter)

    @classmethod
    def fresh(cls, device) -> TrainState:
        return cls(torch.zeros(3, dtype=torch.float64, device=device))

    def wall_s(self) -> float:
        return self.elapsed + time.perf_counter() - self.t_start


def load_checkpoint(path) -> dict:
    """Read ``checkpoint.pt``; a corrupted, truncated or foreign file is a ``ValueError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "unsupported global" in str(exc).lower():
            raise ValueError(f"{path} holds Python objects beyond tensors and plain containers, which ncollapse never "
                             "writes; it is a foreign or tampered file and was not loaded") from None
        raise ValueError(f"{path} is corrupted or truncated (not a PyTorch checkpoint); restore it or delete the "
                         "run directory to start over") from None
    except Exception as exc:  # noqa: BLE001 - any other reading failure means the file is unusable
        raise ValueError(f"{path} is corrupted or truncated ({type(exc).__name__}); restore it or delete the run "
                         "directory to start over") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an ncollapse training checkpoint (format {CHECKPOINT_FORMAT})")
    return ckpt


def _config_diff(a: dict, b: dict) -> list[str]:
    out = []
    for section in sorted(set(a) | set(b)):
        sa, sb = a.get(section, {}), b.get(section, {})
        out += [f"{section}.{k}: {sa.get(k)!r} in the checkpoint, {sb.get(k)!r} now"
                for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k)]
    return out


def _extension(before: dict, now: dict) -> tuple[int, int] | None:
    """(old, new) train.epochs when ``now`` differs from ``before`` only by a larger train.epochs."""
    old, new = before["train"]["epochs"], now["train"]["epochs"]
    same = {**before, "train": {**before["train"], "epochs": new}} == now
    return (old, new) if same and new > old else None


def open_run_dir(out: Path, cfg: Config, ctx: DistContext, resume: bool) -> dict | None:
    """The checkpoint to resume from (written by this very config, or by it with fewer ``train.epochs``, and the
    same world size), or None for a fresh run in an empty ``out``; checked before anything is written."""
    ckpt_path, metrics_path = out / "checkpoint.pt", out / "metrics.jsonl"
    if resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        # through the dataclasses, so keys added to the schema since the checkpoint count at their defaults
        before = config_from_dict(ckpt["config"], str(ckpt_path)).to_dict()
        extended = _extension(before, cfg.to_dict())
        diff = [] if extended else _config_diff(before, cfg.to_dict())
        if extended:
            log.info("extending the run from %d to %d epochs (see docs/training.md for the schedule)", *extended)
        if diff:
            raise ValueError(f"{ckpt_path} was written by another config ({'; '.join(diff[:3])}); resume with the "
                             f"run's own config.toml or choose another --out")
        if ckpt["world_size"] != ctx.world_size:
            raise ValueError(f"{ckpt_path} was written by {ckpt['world_size']} processes; resume with the same "
                             f"number (now {ctx.world_size})")
        return ckpt
    if resume and metrics_path.exists():
        raise ValueError(f"--resume: {out} holds a run (metrics.jsonl) but no checkpoint.pt to continue from; "
                         "nothing was changed; restore the checkpoint or choose another --out")
    if resume:
        log.warning("--resume: no run in %s yet, starting a new one", out)
    elif ckpt_path.exists() or metrics_path.exists():
        raise ValueError(f"{out} already holds a run ({'checkpoint.pt' if ckpt_path.exists() else 'metrics.jsonl'}); "
                         "pass --resume to continue it or choose another --out")
    return None


def save_torch(path: Path, obj) -> None:
    """``torch.save`` to ``path`` atomically (a full disk leaves the previous file as it was)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _rng_state(ctx: DistContext, mix_gen) -> dict:
    state = {"torch": torch.get_rng_state(), "mixup": mix_gen.get_state()}
    if ctx.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(ctx.device)
    return state


def _set_rng_state(state: dict, ctx: DistContext, mix_gen) -> None:
    torch.set_rng_state(state["torch"])
    mix_gen.set_state(state["mixup"])
    if "cuda" in state and ctx.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], ctx.device)


def save_checkpoint(path: Path, run: Run, state: TrainState, epoch: int, batch_in_epoch: int) -> None:
    """Every rank's loader, RNG and sums gathered; rank 0 writes the checkpoint at (epoch, batch_in_epoch)."""
    ranks = gather_objects({"loader": run.train_loader.state_dict(), "rng": _rng_state(run.ctx, run.mix_gen),
                            "sums": state.sums.cpu()}, run.ctx)
    if run.ctx.is_main:
        save_torch(path, {"format": CHECKPOINT_FORMAT, "config": run.cfg.to_dict(), "world_size": run.ctx.world_size,
                          "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
                          "scaler": run.scaler.state_dict(), "step": state.step, "epoch": epoch,
                          "batch_in_epoch": batch_in_epoch, "ranks": ranks, "best_test_acc": state.best,
                          "best_epoch": state.best_epoch, "wall_s": state.wall_s()})


def restore(ckpt: dict, run: Run) -> TrainState:
    """Load the checkpoint into ``run``'s model, optimiser, scaler, loader and RNGs; the loop's state from it."""
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scaler.load_state_dict(ckpt["scaler"])
    rank_state = ckpt["ranks"][run.ctx.rank]
    run.train_loader.load_state_dict(rank_state["loader"])
    _set_rng_state(rank_state["rng"], run.ctx, run.mix_gen)
    return TrainState(rank_state["sums"].to(run.ctx.device), ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"],
                      ckpt["best_test_acc"], ckpt["best_epoch"], ckpt["wall_s"])


def read_metrics(path: Path, upto_epoch: int) -> list[str]:
    """Lines of metrics.jsonl for epochs ≤ ``upto_epoch`` (drops a half-written last line)."""
    if not path.is_file():
        return []
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["epoch"] <= upto_epoch:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            break
    return kept


def _environment(device) -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "ncollapse": __version__, "device": str(device), "platform": platform.platform(),
            "threads": torch.get_num_threads()}


def write_run_files(out: Path, run: Run, *, resume: bool, start_epoch: int, command: str | None) -> None:
    """``config.toml``, ``metrics.jsonl`` cut back to the checkpoint's epoch on resume, and ``run.json`` once."""
    cfg, train_set = run.cfg, run.train_set
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.toml", dumps_toml(cfg))
    metrics_path = out / "metrics.jsonl"
    if resume:
        atomic_write_text(metrics_path, "".join(f"{line}\n" for line in read_metrics(metrics_path, start_epoch)))
    if not (out / "run.json").exists():
        atomic_write_json(out / "run.json", to_jsonable({
            "dataset": cfg.data.name, "model": cfg.model.name, "loss": cfg.loss.name, "head": cfg.model.head,
            "seed": cfg.train.seed, "num_classes": train_set.num_classes, "class_names": list(train_set.classes),
            "class_counts": run.counts, "groups": run.groups, "environment": _environment(run.ctx.device),
            "command": command if command is not None else " ".join(sys.argv)}))

"""The training loop: one ``train(config, out_dir)`` entry point that reads top to bottom (nanoGPT style).

Per epoch: for each batch set the learning rate from ``schedule.lr_at(step)``, (mixup,) forward under
autocast, loss (with the 0-based epoch, for DRW), backward through the GradScaler, step; then evaluate on
the test split, every ``eval.nc_every`` epochs measure NC on the training features, append one line to
``metrics.jsonl`` and write ``checkpoint.pt`` atomically. The run-directory contract is in docs/training.md.

The run is assembled by ``build.build_run``; the checkpoint (exact resume: an interrupted run saves mid-epoch
and ``resume=True`` continues at the next batch, bit-identical on CPU) is ``checkpoint``'s; SIGINT/SIGTERM are
checked after every step. ``train.task = "lm"`` hands the locked run directory to ``lm.train_lm`` (a GPT on text,
budgets in tokens, NC at vocabulary size).
"""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import torch
from tqdm import tqdm

from ..data.loader import mixup
from ..losses import mixup_loss
from ..metrics import GROUPS
from ..report.logging import RunLogger
from ..serialize import to_jsonable
from .._io import atomic_write_json
from . import dist as distlib
from .build import Run, build_run, gram_slots
from .checkpoint import (RunLock, RunLockedError, TrainState, open_run_dir, read_metrics, restore, save_checkpoint,
                         save_torch, write_run_files)
from .config import Config
from .evaluate import accuracy_report, nc_report, nc_state, run_pass, smallest_class_gram
from .lm import train_lm
from .schedule import lr_at

__all__ = ["train"]

log = logging.getLogger(__name__)

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
_DDP_STOP_CHECK = 10  # steps between the ranks' agreement on a pending SIGINT/SIGTERM


class _StopFlag:
    """SIGINT/SIGTERM set a flag the loop checks after each step (main thread only; a second signal aborts)."""

    def __init__(self):
        self.signum = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("received %s: finishing this step, saving a checkpoint and exiting", signal.Signals(signum).name)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def train(config: Config, out_dir, *, resume: bool = False, device: str = "auto", command: str | None = None,
          progress: bool = False, data=None, on_epoch=None) -> dict:
    """Train ``config`` into ``out_dir`` (see the module docstring); returns the summary dict.

    ``summary["status"]`` is ``"finished"`` or ``"interrupted"`` (then ``summary["signal"]`` holds the exit
    code 130/143 the CLI returns). Under torchrun every rank calls this; rank 0 writes the files.

    Hooks for experiments: ``data`` = (train set, test set) replaces ``build_data(config)`` (e.g. shuffled labels
    or a subset of classes); ``on_epoch(epoch, model)`` runs after each epoch's evaluation (1-based epoch) and
    returns a dict of scalars that joins the epoch's line of ``metrics.jsonl``.
    """
    if not isinstance(config, Config):
        raise TypeError(f"config must be a ncollapse.train.Config; got {type(config).__name__}")
    out = Path(out_dir)
    ctx = distlib.setup(device)
    fresh = not out.exists()
    try:
        with _StopFlag() as stop, ExitStack() as resources:
            if config.train.batch_size % ctx.world_size:
                raise ValueError(f"train.batch_size == {config.train.batch_size} is not divisible by the "
                                 f"{ctx.world_size} DDP processes")
            if config.train.threads:
                torch.set_num_threads(config.train.threads)
            # 0. the run directory: owned by this process (run.lock), then a fresh one or a checkpoint written by
            #    this very config (before any other write)
            _lock_run_dir(out, ctx, resources)
            if config.train.task == "lm":  # a GPT on text: the loop of train/lm.py, budgets in tokens
                result = train_lm(config, out, ctx, stop, resources, resume=resume, command=command,
                                  progress=progress)
                distlib.barrier(ctx)
                return result
            ckpt = open_run_dir(out, config, ctx, resume)
            # 1.-2. data on the device, model, loss, optimiser, precision; 3. their state from the checkpoint
            run = build_run(config, ctx, data)
            state = TrainState.fresh(ctx.device) if ckpt is None else restore(ckpt, run)
            if ckpt is not None:
                log.info("resuming from epoch %d, step %d%s", state.epoch + 1, state.step,
                         f" (batch {state.batch} of the epoch)" if state.batch else "")
            del ckpt
            logger = None
            if ctx.is_main:
                write_run_files(out, run, resume=resume, start_epoch=state.epoch, command=command)
                logger = resources.enter_context(RunLogger(out))  # metrics.jsonl, and TensorBoard when installed
                log.info("training %s on %d images (%d classes, counts %s) for %d epochs on %s x%d",
                         config.model.name, len(run.train_set), run.num_classes, run.counts, config.train.epochs,
                         ctx.device, ctx.world_size)
            result = _train(run, state, out, stop, logger, progress=progress, on_epoch=on_epoch)
            distlib.barrier(ctx)  # ranks leave together: gloo aborts a rank that tears down while rank 0 still writes
            return result
    except BaseException:
        if fresh and ctx.is_main and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # set-up failed before anything was written: the folder is not claimed
        raise
    finally:
        distlib.teardown(ctx)


def _lock_run_dir(out: Path, ctx, resources: ExitStack) -> None:
    """Rank 0 takes ``out/run.lock`` for the run's life; every rank stops when it could not."""
    error = None
    if ctx.is_main:
        try:
            resources.enter_context(RunLock(out))
        except RunLockedError as exc:
            error = exc
    if distlib.any_rank(error is not None, ctx):
        raise error or RunLockedError(f"{out} is in use by another run (rank 0 could not lock it)")


def _train(run: Run, state: TrainState, out: Path, stop: _StopFlag, logger, *, progress: bool, on_epoch) -> dict:
    cfg, ctx = run.cfg, run.ctx
    epochs, steps_per_epoch = cfg.train.epochs, len(run.train_loader)
    ckpt_path, metrics_path = out / "checkpoint.pt", out / "metrics.jsonl"
    state.t_start = time.perf_counter()
    last = {}
    for epoch in range(state.epoch, epochs):
        t_epoch = time.perf_counter()
        run.net.train()
        bar = _progress(progress and ctx.is_main, steps_per_epoch, epoch, epochs, state.batch)
        # 4. one epoch of optimisation steps (a resumed epoch starts at the loader's saved batch)
        stopped_at = _steps(run, state, epoch, stop, bar)
        bar.close()
        if stopped_at is not None:
            save_checkpoint(ckpt_path, run, state, epoch, stopped_at)
            return _interrupted(stop, epoch, stopped_at, out, ctx.is_main)
        state.batch = 0

        # 5. evaluate: test accuracy every epoch, NC of the training and test features every nc_every epochs
        record = _evaluate(run, state, epoch, out, progress and ctx.is_main)
        if on_epoch is not None:
            record.update(on_epoch(epoch + 1, run.model))
        record["time_s"] = time.perf_counter() - t_epoch

        # 6. log and checkpoint
        if ctx.is_main:
            logger.log(record)
            log.info("epoch %d/%d lr %.4g loss %.4f train %.4f test %.4f (best %.4f) head %s tail %s %.1fs",
                     epoch + 1, epochs, record["lr"], record["train_loss"], record["train_acc"], record["test_acc"],
                     state.best, _fmt(record["test_acc_head"]), _fmt(record["test_acc_tail"]), record["time_s"])
        last = record
        save_checkpoint(ckpt_path, run, state, epoch + 1, 0)
        if distlib.any_rank(stop.signum is not None, ctx) and epoch + 1 < epochs:
            return _interrupted(stop, epoch + 1, 0, out, ctx.is_main)

    # 7. summary (final-epoch values unless the key says best)
    if not last:
        last = json.loads(read_metrics(metrics_path, epochs)[-1]) if metrics_path.exists() else {}
    summary = {"final_test_acc": last.get("test_acc"), "best_test_acc": state.best, "best_epoch": state.best_epoch,
               **{f"test_acc_{g}": last.get(f"test_acc_{g}") for g in GROUPS}, "epochs": epochs,
               "wall_s": state.wall_s()}
    if ctx.is_main:
        atomic_write_json(out / "summary.json", to_jsonable(summary))
    return {**summary, "status": "finished"}


def _steps(run: Run, state: TrainState, epoch: int, stop: _StopFlag, bar) -> int | None:
    """The epoch's optimisation steps from ``state.batch`` on; the batch count when a signal stopped it early."""
    cfg, ctx = run.cfg, run.ctx
    epochs, steps_per_epoch, alpha = cfg.train.epochs, len(run.train_loader), cfg.train.mixup_alpha
    losses = torch.zeros(steps_per_epoch, device=ctx.device)  # checked once at the end of the epoch
    for i, (x, y) in enumerate(run.train_loader, start=state.batch):
        lr = lr_at(state.step, cfg.schedule, cfg.optim.lr, steps_per_epoch, epochs)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        if cfg.model.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if alpha > 0:
            x, y_a, y_b, lam = mixup(x, y, alpha, run.mix_gen)
        with run.autocast():
            features, logits = run.net(x)
        if alpha > 0:
            loss = mixup_loss(run.loss_fn, features, logits, y_a, y_b, lam, epoch=epoch)
        else:
            y_a, y_b, lam = y, y, 1.0
            loss = run.loss_fn(features, logits, y, epoch=epoch)
        losses[i] = loss.detach()
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        state.step += 1
        with torch.no_grad():
            pred = logits.argmax(1)
            hits = lam * (pred == y_a).sum() + (1.0 - lam) * (pred == y_b).sum()
            state.sums += torch.stack([loss.detach().double() * len(y), torch.as_tensor(hits, dtype=torch.float64),
                                       torch.tensor(float(len(y)), dtype=torch.float64, device=ctx.device)])
        bar.update(1)
        check = not ctx.distributed or (i + 1) % _DDP_STOP_CHECK == 0  # agreeing costs a sync under DDP
        if check and i + 1 < steps_per_epoch and distlib.any_rank(stop.signum is not None, ctx):
            return i + 1
    bad = (~torch.isfinite(losses)).nonzero()  # one sync per epoch
    _check_diverged(run, epoch * steps_per_epoch + int(bad[0]) if len(bad) else -1, epoch, steps_per_epoch)
    return None


class TrainingDivergedError(ValueError):
    """The training loss became NaN or infinite (too large a learning rate, as a rule)."""


def _check_diverged(run: Run, step: int, epoch: int, steps_per_epoch: int) -> None:
    """Raise ``TrainingDivergedError`` naming the learning rate, epoch and step of the first non-finite loss."""
    if not distlib.any_rank(step >= 0, run.ctx):
        return
    if step < 0:  # another DDP rank diverged first; this one only knows the epoch
        step = epoch * steps_per_epoch
    cfg = run.cfg
    lr = lr_at(step, cfg.schedule, cfg.optim.lr, steps_per_epoch, cfg.train.epochs)
    raise TrainingDivergedError(
        f"training diverged: the loss became non-finite in epoch {epoch + 1}, step {step - epoch * steps_per_epoch + 1}"
        f" of {steps_per_epoch} (global step {step + 1}) at learning rate {lr:.4g} (optim.lr = {cfg.optim.lr:g}); "
        "lower optim.lr and train into a new --out or delete this run directory"
        + (f" (its checkpoint holds epoch {epoch})" if epoch else " (no epoch finished)"))


def _evaluate(run: Run, state: TrainState, epoch: int, out: Path, progress: bool) -> dict:
    """The epoch's line of metrics.jsonl: lr, training loss/accuracy, test accuracies and (when due) NC metrics
    of the training and the test features; the test pass that gives the accuracies also gives the test NC."""
    cfg, ctx, epochs = run.cfg, run.ctx, run.cfg.train.epochs
    totals = distlib.all_reduce_sum(state.sums.clone(), ctx).cpu()
    state.sums.zero_()
    nc_every, last = cfg.eval.nc_every, epoch + 1 == epochs
    nc_due = last or bool(nc_every and (epoch + 1) % nc_every == 0)
    test_pass = run_pass(run.model, run.test_loader, run.num_classes, ctx, scores=run.scores,
                         autocast=run.autocast() if run.amp_dtype else None, channels_last=cfg.model.channels_last,
                         nc=nc_due, confusion=last, progress=progress, desc=f"epoch {epoch + 1}: test pass")
    test = accuracy_report(test_pass, run.groups)
    if test["test_acc"] > state.best:
        state.best, state.best_epoch = test["test_acc"], epoch + 1
    record = {"epoch": epoch + 1,
              "lr": lr_at(state.step - 1, cfg.schedule, cfg.optim.lr, len(run.train_loader), epochs),
              "train_loss": float(totals[0] / totals[2]), "train_acc": float(totals[1] / totals[2]),
              **test, "best_test_acc": state.best}
    if nc_due:
        nc = run_pass(run.model, run.nc_loader, run.num_classes, ctx, nc=True, scores=run.scores,
                      channels_last=cfg.model.channels_last, progress=progress, desc=f"epoch {epoch + 1}: NC pass",
                      keep_samples=gram_slots(cfg, run.counts))
        record.update(accuracy_report(nc, run.groups, prefix="train_eval_"))
        record.update(nc_report(nc, run.model, run.counts, cfg.eval.group_thresholds))
        if cfg.eval.gram_samples:
            record["nc/smallest_class_gram"] = smallest_class_gram(nc.stats, run.counts)
        record.update(nc_report(test_pass, run.model, run.counts, cfg.eval.group_thresholds, split="test"))
        if ctx.is_main:
            save_torch(out / "nc_state.pt", nc_state(nc, run.model, epoch + 1, test_pass.confusion))
    return record


def _interrupted(stop: _StopFlag, epoch: int, batch: int, out: Path, main: bool) -> dict:
    if main:
        log.warning("interrupted in epoch %d after %d batches; checkpoint saved, continue with --resume (--out %s)",
                    epoch + 1, batch, out)
    return {"status": "interrupted", "signal": EXIT_CODES.get(stop.signum, 130), "epoch": epoch,
            "batch_in_epoch": batch}


def _fmt(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def _progress(enabled: bool, total: int, epoch: int, epochs: int, initial: int):
    return tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{epochs}", file=sys.stderr,
                disable=not enabled, leave=False, dynamic_ncols=True)

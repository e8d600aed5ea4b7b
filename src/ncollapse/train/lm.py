"""``train.task = "lm"``: a GPT trained on text by next-token cross-entropy, NC tracked at vocabulary size.

The loop reads top to bottom (nanoGPT style): per step set the learning rate from ``schedule.lr_at`` (warm-up
``lm.warmup_tokens``, then cosine or constant over the whole budget), draw a batch of windows from the on-device
``TokenSampler``, forward under autocast, cross-entropy of the logits against the next tokens (mean over the
batch's tokens), backward through the GradScaler, clip the gradient norm (``lm.grad_clip``), step. Budgets are
counted in tokens: the run takes ⌈lm.tokens / (batch_size · context)⌉ steps; every ``lm.eval_every`` tokens (and
at the end) it logs the training loss since the last point, the validation loss and perplexity, and writes
``checkpoint.pt``; every ``lm.nc_every`` tokens (and at the end) it also runs the NC passes of ``lm_eval`` on the
training tokens (``nc/*``) and the held-out tokens (``nc_test/*``). Each point is one line of ``metrics.jsonl``
whose ``epoch`` is the point's number (1-based) and ``tokens`` the training tokens seen, so ``ncollapse report``
draws LM runs with the image runs' panels.

The run directory is the image trainer's (``run.lock``, ``config.toml``, ``run.json``, ``metrics.jsonl``,
``checkpoint.pt``, ``summary.json``) plus ``tokenizer.json``. The checkpoint holds the model, optimiser, scaler,
step, every rank's sampler generator and dropout RNG state (``DropoutRNG``) and the running loss sums, so a run stopped by SIGINT/SIGTERM
(checked after every step) resumes with ``resume=True`` bit-identically on CPU. DDP: every rank draws its own
batches of ``batch_size / world_size`` windows; evaluation windows are sharded and the sums all-reduced.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import signal
import sys
import time
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .._io import atomic_write_json, atomic_write_text
from ..data.text import TextCorpus, TokenSampler, load_corpus
from ..metrics import class_groups
from ..nn.gpt import GPT, GPTConfig
from ..report.logging import RunLogger
from ..serialize import to_jsonable
from . import dist as distlib
from .build import amp_dtype, build_optimizer
from .checkpoint import CHECKPOINT_FORMAT, _environment, open_run_dir, read_metrics, save_torch
from .config import Config, dumps_toml
from .lm_eval import lm_nc_report, nc_pass, validation_loss, window_starts, windows
from .schedule import lr_at

__all__ = ["LMRun", "build_lm_run", "build_gpt", "train_lm", "lm_points"]

log = logging.getLogger(__name__)

_DDP_STOP_CHECK = 10  # steps between the ranks' agreement on a pending SIGINT/SIGTERM
_EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


def build_gpt(cfg: Config, vocab_size: int) -> GPT:
    """The ``GPT`` of ``[lm]`` for ``vocab_size`` tokens, initialised from ``train.seed``."""
    lm = cfg.lm
    return GPT(GPTConfig(vocab_size, lm.context, lm.layers, lm.width, lm.heads, lm.tied, lm.dropout),
               seed=cfg.train.seed)


def lm_points(cfg: Config) -> tuple[int, int, list[int], set[int]]:
    """(tokens per step, total steps, the steps that end an evaluation point, the steps with an NC pass)."""
    per_step = cfg.train.batch_size * cfg.lm.context
    total = -(-cfg.lm.tokens // per_step)
    every = max(1, round(cfg.lm.eval_every / per_step))
    nc_every = max(1, round(cfg.lm.nc_every / per_step)) if cfg.lm.nc_every else 0
    nc = {s for s in range(1, total + 1) if (nc_every and s % nc_every == 0) or s == total}
    points = sorted({s for s in range(every, total + 1, every)} | nc)
    return per_step, total, points, nc


class DropoutRNG:
    """Dropout draws from the global RNG; a run keeps its own state, seeded by (train.seed, rank), and swaps it in
    around each training step, so its dropout masks depend on the seed alone and a resumed run draws the same."""

    def __init__(self, seed: int, device: torch.device):
        self.device = device
        self.devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=self.devices):
            torch.random.default_generator.manual_seed(seed)
            if self.devices:
                torch.cuda.manual_seed(seed)
            self.state = self._get()

    def _get(self) -> dict:
        state = {"cpu": torch.get_rng_state()}
        if self.devices:
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    @contextmanager
    def __call__(self):
        with torch.random.fork_rng(devices=self.devices):
            torch.set_rng_state(self.state["cpu"])
            if self.devices:
                torch.cuda.set_rng_state(self.state["cuda"], self.device)
            yield
            self.state = self._get()


@dataclass
class LMRun:
    """The pieces of one LM run on one rank; ``net`` is ``model`` wrapped for DDP when distributed."""

    cfg: Config
    ctx: distlib.DistContext
    corpus: TextCorpus
    sampler: TokenSampler
    val_rows: torch.Tensor
    nc_rows: dict
    train_counts: np.ndarray
    model: GPT
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler
    dropout_rng: DropoutRNG | None

    def autocast(self):
        return torch.autocast(self.ctx.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()


@dataclass
class LMState:
    """Where the loop stands: step, evaluation points written, wall time, the loss sums since the last point."""

    sums: torch.Tensor  # loss·tokens, tokens (float64, on the device)
    step: int = 0
    points: int = 0
    elapsed: float = 0.0
    t_start: float = field(default_factory=time.perf_counter)

    def wall_s(self) -> float:
        return self.elapsed + time.perf_counter() - self.t_start


def build_lm_run(cfg: Config, ctx: distlib.DistContext, corpus: TextCorpus | None = None) -> LMRun:
    """Corpus (tokenised or from the cache), sampler, evaluation windows, model, optimiser and precision."""
    lm, device = cfg.lm, ctx.device
    if corpus is None:
        corpus = load_corpus(list(lm.text), lm.vocab_size, lm.val_fraction, cache_dir=lm.cache_dir or None)
    sampler = TokenSampler(corpus.train, cfg.train.batch_size // ctx.world_size, lm.context, device=device,
                           seed=cfg.train.seed, rank=ctx.rank)
    if len(corpus.val) < lm.context + 1:
        raise ValueError(f"the held-out text gives {len(corpus.val)} tokens, fewer than one window of "
                         f"{lm.context + 1}; raise lm.val_fraction or give more text")
    val = torch.as_tensor(corpus.val.astype(np.int32)).to(device)
    val_rows = windows(val, window_starts(len(val), lm.context, lm.val_tokens, spread=False), lm.context, ctx)
    nc_rows = {"nc_test": windows(val, window_starts(len(val), lm.context, lm.nc_tokens, False), lm.context, ctx),
               "nc": windows(sampler.tokens, window_starts(len(sampler.tokens), lm.context, lm.nc_tokens, True),
                             lm.context, ctx)}
    model = build_gpt(cfg, corpus.vocab_size).to(device)
    optimizer = build_optimizer(cfg, model)
    dtype = amp_dtype(cfg.train.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if ctx.distributed else model
    dropout_rng = DropoutRNG(cfg.train.seed * 1_000_003 + 7919 * (ctx.rank + 1), device) if lm.dropout else None
    return LMRun(cfg, ctx, corpus, sampler, val_rows, nc_rows, corpus.train_counts(), model, net, optimizer, dtype,
                 scaler, dropout_rng)


def train_lm(config: Config, out: Path, ctx: distlib.DistContext, stop, resources: ExitStack, *, resume: bool,
             command: str | None, progress: bool) -> dict:
    """The LM run of ``trainer.train`` once the run directory is locked (see the module docstring)."""
    ckpt = open_run_dir(out, config, ctx, resume)
    if config.train.batch_size % ctx.world_size:
        raise ValueError(f"train.batch_size == {config.train.batch_size} is not divisible by the "
                         f"{ctx.world_size} DDP processes")
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    run = build_lm_run(config, ctx)
    state = LMState(torch.zeros(2, dtype=torch.float64, device=ctx.device)) if ckpt is None else _restore(ckpt, run)
    del ckpt
    logger = None
    if ctx.is_main:
        _write_run_files(out, run, resume=resume, points=state.points, command=command)
        logger = resources.enter_context(RunLogger(out))
        log.info("training a GPT (%d parameters) on %d tokens of %d (vocabulary %d) on %s x%d",
                 run.model.num_parameters(), config.lm.tokens, len(run.corpus.train), run.corpus.vocab_size,
                 ctx.device, ctx.world_size)
    return _loop(run, state, out, stop, logger, progress)


def _loop(run: LMRun, state: LMState, out: Path, stop, logger, progress: bool) -> dict:
    cfg, ctx = run.cfg, run.ctx
    per_step, total, points, nc_steps = lm_points(cfg)
    points = set(points)  # looked up after every step
    schedule = dataclasses.replace(cfg.schedule, warmup_epochs=float(round(cfg.lm.warmup_tokens / per_step)))
    ckpt_path = out / "checkpoint.pt"
    state.t_start = time.perf_counter()
    t_point, step_at_point, last = time.perf_counter(), state.step, None
    bar = tqdm(total=total, initial=state.step, desc="tokens/step", file=sys.stderr, leave=False,
               disable=not (progress and ctx.is_main), dynamic_ncols=True)
    with bar:
        while state.step < total:
            # 1. learning rate of this step; 2. batch, forward, loss, backward, clip, step
            lr = lr_at(state.step, schedule, cfg.optim.lr, 1, total)
            for group in run.optimizer.param_groups:
                group["lr"] = lr
            x, y = run.sampler.next()
            with run.dropout_rng() if run.dropout_rng else nullcontext():
                with run.autocast():
                    _, logits = run.net(x)
                    loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
                run.optimizer.zero_grad(set_to_none=True)
                run.scaler.scale(loss).backward()
            if cfg.lm.grad_clip:
                run.scaler.unscale_(run.optimizer)
                torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.lm.grad_clip)
            run.scaler.step(run.optimizer)
            run.scaler.update()
            state.step += 1
            state.sums += torch.stack([loss.detach().double() * y.numel(),
                                       torch.tensor(float(y.numel()), dtype=torch.float64, device=ctx.device)])
            bar.update(1)
            # 3. at an evaluation point: validation loss, NC when due, one line of metrics.jsonl, a checkpoint
            if state.step in points:
                seconds = time.perf_counter() - t_point
                last = _evaluate(run, state, lr, state.step in nc_steps, per_step, progress and ctx.is_main)
                last["train_tokens_per_s"] = (state.step - step_at_point) * per_step / max(seconds, 1e-9)
                last["time_s"] = time.perf_counter() - t_point
                if ctx.is_main:
                    logger.log(last)
                    log.info("tokens %d/%d lr %.3g train loss %.4f val loss %.4f (ppl %.1f) %.0f tok/s",
                             last["tokens"], total * per_step, lr, last["train_loss"], last["val_loss"],
                             last["val_ppl"], last["train_tokens_per_s"])
                _save(ckpt_path, run, state)
                t_point, step_at_point = time.perf_counter(), state.step
                continue
            check = not ctx.distributed or state.step % _DDP_STOP_CHECK == 0
            if check and distlib.any_rank(stop.signum is not None, ctx):
                _save(ckpt_path, run, state)
                if ctx.is_main:
                    log.warning("interrupted at step %d of %d; checkpoint saved, continue with --resume (--out %s)",
                                state.step, total, out)
                return {"status": "interrupted", "signal": _EXIT_CODES.get(stop.signum, 130),
                        "step": state.step, "tokens": state.step * per_step}
    if last is None:
        lines = read_metrics(out / "metrics.jsonl", state.points)
        last = json.loads(lines[-1]) if lines else {}
    summary = {"final_val_loss": last.get("val_loss"), "final_val_ppl": last.get("val_ppl"),
               "final_train_loss": last.get("train_loss"), "tokens": total * per_step, "steps": total,
               "wall_s": state.wall_s()}
    if ctx.is_main:
        atomic_write_json(out / "summary.json", to_jsonable(summary))
    return {**summary, "status": "finished"}


def _evaluate(run: LMRun, state: LMState, lr: float, nc: bool, per_step: int, progress: bool) -> dict:
    cfg, ctx, lm = run.cfg, run.ctx, run.cfg.lm
    totals = distlib.all_reduce_sum(state.sums.clone(), ctx).cpu()
    state.sums.zero_()
    state.points += 1
    autocast = run.autocast() if run.amp_dtype else None
    val = validation_loss(run.model, run.val_rows, ctx, cfg.eval.batch_size // lm.context or 1, autocast)
    record = {"epoch": state.points, "step": state.step, "tokens": state.step * per_step, "lr": lr,
              "train_loss": float(totals[0] / totals[1]), "val_loss": val, "val_ppl": math.exp(min(val, 700.0))}
    if nc:
        for prefix, rows in run.nc_rows.items():
            result = nc_pass(run.model, rows, ctx, cfg.eval.batch_size // lm.context or 1, lm.min_count, autocast)
            record.update(lm_nc_report(result, run.train_counts, lm.group_thresholds, lm.min_count, prefix))
    return record


def _save(path: Path, run: LMRun, state: LMState) -> None:
    """Every rank's sampler, RNG and sums gathered; rank 0 writes the checkpoint."""
    rng = run.dropout_rng.state if run.dropout_rng else None
    ranks = distlib.gather_objects({"sampler": run.sampler.state_dict(), "dropout_rng": rng, "sums": state.sums.cpu()},
                                   run.ctx)
    if run.ctx.is_main:
        save_torch(path, {"format": CHECKPOINT_FORMAT, "task": "lm", "config": run.cfg.to_dict(),
                          "world_size": run.ctx.world_size, "model": run.model.state_dict(),
                          "optimizer": run.optimizer.state_dict(), "scaler": run.scaler.state_dict(),
                          "step": state.step, "epoch": state.points, "batch_in_epoch": 0, "ranks": ranks,
                          "corpus_key": run.corpus.key, "wall_s": state.wall_s()})


def _restore(ckpt: dict, run: LMRun) -> LMState:
    if ckpt.get("corpus_key") != run.corpus.key:
        raise ValueError("checkpoint.pt was trained on other text (the corpus sha256 differs); resume with the "
                         "run's own files or choose another --out")
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scaler.load_state_dict(ckpt["scaler"])
    mine = ckpt["ranks"][run.ctx.rank]
    run.sampler.load_state_dict(mine["sampler"])
    if run.dropout_rng is not None:
        run.dropout_rng.state = mine["dropout_rng"]
    log.info("resuming at step %d (%d evaluation points written)", ckpt["step"], ckpt["epoch"])
    return LMState(mine["sums"].to(run.ctx.device), ckpt["step"], ckpt["epoch"], ckpt["wall_s"])


def _write_run_files(out: Path, run: LMRun, *, resume: bool, points: int, command: str | None) -> None:
    """``config.toml``, ``tokenizer.json``, ``metrics.jsonl`` cut back to the checkpoint's point, ``run.json``."""
    cfg = run.cfg
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.toml", dumps_toml(cfg))
    run.corpus.write_tokenizer(out / "tokenizer.json")
    metrics_path = out / "metrics.jsonl"
    if resume:
        atomic_write_text(metrics_path, "".join(f"{line}\n" for line in read_metrics(metrics_path, points)))
    if not (out / "run.json").exists():
        counts = run.train_counts.tolist()
        atomic_write_json(out / "run.json", to_jsonable({
            "task": "lm", "dataset": "text", "model": "gpt", "loss": "ce", "head": "linear", "seed": cfg.train.seed,
            "num_classes": run.corpus.vocab_size, "files": list(run.corpus.files), "corpus_sha256": run.corpus.key,
            "train_tokens": len(run.corpus.train), "val_tokens": len(run.corpus.val),
            "parameters": run.model.num_parameters(), "parameters_non_embedding": run.model.num_parameters(False),
            "group_sizes": {k: len(v) for k, v in class_groups(counts, tuple(cfg.lm.group_thresholds)).items()},
            "environment": _environment(run.ctx.device),
            "command": command if command is not None else " ".join(sys.argv)}))

"""The training loop: one ``train(config, out_dir)`` entry point that reads top to bottom (nanoGPT style).

Per epoch: for each batch set the learning rate from ``schedule.lr_at(step)``, (mixup,) forward under
autocast, loss (with the 0-based epoch, for DRW), backward through the GradScaler, step; then evaluate on
the test split, every ``eval.nc_every`` epochs measure NC on the training features, append one line to
``metrics.jsonl`` and write ``checkpoint.pt`` atomically. The run-directory contract is in docs/training.md.

Exact resume: the checkpoint holds the model, optimiser, scaler, step, the loader state (epoch and batch;
its order and augmentation are pure functions of (seed, epoch, batch, rank)), every RNG state incl. the
mixup generator, and the running loss/accuracy sums of the epoch. An interrupted run (SIGINT/SIGTERM,
checked after every step) saves mid-epoch; ``resume=True`` continues at the next batch, so on CPU the
resumed run ends with bit-identical weights.
"""

from __future__ import annotations

import io
import json
import logging
import math
import platform
import signal
import sys
import threading
import time
from contextlib import ExitStack, nullcontext
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from .. import __version__
from .._io import atomic_write_bytes, atomic_write_json, atomic_write_text
from ..serialize import to_jsonable
from ..report.logging import RunLogger
from . import dist as distlib
from .config import Config, config_from_dict, dumps_toml
from .evaluate import accuracy_report, groups_of, nc_report, nc_state, run_pass
from .schedule import lr_at

__all__ = ["train", "build_data", "build_model_for", "load_checkpoint", "CHECKPOINT_FORMAT"]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "ncollapse.train.checkpoint/1"
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
_DDP_STOP_CHECK = 10  # steps between the ranks' agreement on a pending SIGINT/SIGTERM


# ------------------------------------------------------------------------------------------ building blocks

def build_data(cfg: Config):
    """(train set, test set): the long-tailed training subset when ``data.imbalance < 1`` or ``data.n_max > 0``."""
    from ..data import load_dataset, load_longtail

    d = cfg.data
    if d.imbalance < 1.0 or d.n_max > 0:
        train_set = load_longtail(d.name, d.root, d.imbalance, n_max=d.n_max or None, profile=d.profile,
                                  seed=d.subset_seed)
    else:
        train_set = load_dataset(d.name, d.root, split=d.train_split)
    return train_set, load_dataset(d.name, d.root, split=d.test_split)


def build_model_for(cfg: Config, train_set):
    """The model of ``cfg.model`` for ``train_set``'s classes, channels and image size (seeded by train.seed)."""
    from ..geometry import class_aware_centers
    from ..nn import build_model

    m = cfg.model
    centers = None
    if m.head == "multicenter":
        centers = m.f if m.centers == "uniform" else class_aware_centers(train_set.class_counts(), m.f, order="sorted")
    return build_model(m.name, train_set.num_classes, in_channels=train_set.images.shape[1],
                       image_size=train_set.images.shape[-1], feature_dim=m.feature_dim or None, head=m.head,
                       bias=m.bias, centers_per_class=centers, theta=m.theta,
                       normalize_features=m.normalize_features, seed=cfg.train.seed, **m.options)


def build_loss_for(cfg: Config, model, class_counts):
    """``build_loss`` with the head's fixed classifier handed to the losses that regress onto it."""
    from ..losses import build_loss

    options = dict(cfg.loss.options)
    if cfg.loss.name == "dot_regression":
        options.setdefault("frame", model.head.weight)
    if cfg.loss.name in ("ncmc_p", "ncmc_cosine"):
        if not hasattr(model.head, "frame"):
            raise ValueError(f"loss.name = {cfg.loss.name!r} needs model.head = 'multicenter'; got {cfg.model.head!r}")
        options.setdefault("frame", model.head.frame)
    return build_loss(cfg.loss.name, class_counts, **options)


def _optimizer(cfg: Config, model):
    o = cfg.optim
    if o.name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                               weight_decay=o.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)


def _amp_dtype(setting: str, device: torch.device):
    """Autocast dtype: CUDA only (bf16 where supported, else fp16 with a GradScaler); None = full precision."""
    if setting == "off" or (setting == "auto" and device.type != "cuda"):
        return None
    if device.type != "cuda":
        raise ValueError(f"train.amp = {setting!r} needs a CUDA device; got {device.type} (use train.amp = 'off')")
    if setting == "bf16" or (setting == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def make_loader(ds, batch_size, ctx, *, train: bool, cfg: Config, seed: int = 0):
    from ..data.loader import TensorLoader

    if train:
        return TensorLoader(ds.images, ds.labels, batch_size, device=ctx.device, shuffle=True,
                            drop_last=cfg.train.drop_last, augment=tuple(cfg.data.augment), pad=cfg.data.pad,
                            mean=ds.mean, std=ds.std, seed=seed, balanced=cfg.data.balanced,
                            rank=ctx.rank, world_size=ctx.world_size)
    shard = slice(ctx.rank, None, ctx.world_size)  # evaluation: every rank a strided shard, counts all-reduced
    return TensorLoader(ds.images[shard], ds.labels[shard], batch_size, device=ctx.device, shuffle=False,
                        drop_last=False, augment=(), mean=ds.mean, std=ds.std)


def decision_scores(cfg: Config, model, class_counts):
    """``scores(features, logits)`` whose argmax is the evaluation prediction, or None for plain argmax logits.

    ``eval.decision = "gcr"``: max_j ⟨w_j^(k), ĥ⟩ over the class's centers (Yan et al. 2024, §3.1; multicenter
    head only); ``eval.logit_adjust_tau`` > 0: post-hoc z − τ log π (Menon et al. 2021, eq. 9) on top.
    """
    from ..losses import posthoc_logit_adjust
    from ..nn.heads import gcr_scores

    head, tau = model.head, cfg.eval.logit_adjust_tau
    if cfg.eval.decision == "gcr" and not hasattr(head, "frame"):
        raise ValueError(f"eval.decision = 'gcr' needs model.head = 'multicenter'; got {cfg.model.head!r}")
    if cfg.eval.decision == "rcr" and tau == 0:
        return None

    def scores(features, logits):
        if cfg.eval.decision == "gcr":
            unit = torch.nn.functional.normalize(features.float(), dim=1)
            logits = gcr_scores(unit, head.centers, head.owner, head.weight.shape[0])
        return posthoc_logit_adjust(logits, class_counts, tau=tau) if tau else logits

    return scores


def _environment(device) -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "ncollapse": __version__, "device": str(device), "platform": platform.platform()}


# ------------------------------------------------------------------------------------------ checkpoints

def load_checkpoint(path) -> dict:
    """Read ``checkpoint.pt``; a corrupted, truncated or foreign file is a ``ValueError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the file is unusable
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


def _save(path: Path, obj) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _rng_state(ctx, mix_gen) -> dict:
    state = {"torch": torch.get_rng_state(), "mixup": mix_gen.get_state()}
    if ctx.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(ctx.device)
    return state


def _set_rng_state(state: dict, ctx, mix_gen) -> None:
    torch.set_rng_state(state["torch"])
    mix_gen.set_state(state["mixup"])
    if "cuda" in state and ctx.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], ctx.device)


def _read_metrics(path: Path, upto_epoch: int) -> list[str]:
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


# ------------------------------------------------------------------------------------------ the loop

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
    ctx = distlib.setup(device)
    try:
        with _StopFlag() as stop, ExitStack() as resources:
            return _train(config, Path(out_dir), resume, ctx, command, progress, stop, resources, data, on_epoch)
    finally:
        distlib.teardown(ctx)


def _train(cfg: Config, out: Path, resume: bool, ctx, command, progress, stop, resources: ExitStack, data=None,
           on_epoch=None) -> dict:
    main = ctx.is_main
    ckpt_path, metrics_path = out / "checkpoint.pt", out / "metrics.jsonl"

    # 0. the run directory: a fresh one, or a checkpoint written by this very config (checked before any write)
    ckpt = None
    if resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        # through the dataclasses, so keys added to the schema since the checkpoint count at their defaults
        diff = _config_diff(config_from_dict(ckpt["config"], str(ckpt_path)).to_dict(), cfg.to_dict())
        if diff:
            raise ValueError(f"{ckpt_path} was written by another config ({'; '.join(diff[:3])}); resume with the "
                             f"run's own config.toml or choose another --out")
        if ckpt["world_size"] != ctx.world_size:
            raise ValueError(f"{ckpt_path} was written by {ckpt['world_size']} processes; resume with the same "
                             f"number (now {ctx.world_size})")
    elif resume:
        log.warning("--resume: no checkpoint in %s, starting a new run", out)
    elif ckpt_path.exists() or metrics_path.exists():
        raise ValueError(f"{out} already holds a run ({'checkpoint.pt' if ckpt_path.exists() else 'metrics.jsonl'}); "
                         "pass --resume to continue it or choose another --out")
    if cfg.train.batch_size % ctx.world_size:
        raise ValueError(f"train.batch_size == {cfg.train.batch_size} is not divisible by the {ctx.world_size} "
                         "DDP processes")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device, seed, epochs = ctx.device, cfg.train.seed, cfg.train.epochs

    # 1. data: the whole (small) splits as uint8 tensors on the device, augmented there
    train_set, test_set = build_data(cfg) if data is None else data
    counts = train_set.class_counts()
    num_classes = train_set.num_classes
    groups = groups_of(counts, cfg.eval.group_thresholds)
    train_loader = make_loader(train_set, cfg.train.batch_size // ctx.world_size, ctx, train=True, cfg=cfg, seed=seed)
    test_loader = make_loader(test_set, cfg.eval.batch_size, ctx, train=False, cfg=cfg)
    nc_loader = make_loader(train_set, cfg.eval.batch_size, ctx, train=False, cfg=cfg)
    steps_per_epoch = len(train_loader)

    # 2. model, loss, optimiser, precision
    model = build_model_for(cfg, train_set).to(device)
    if cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = build_loss_for(cfg, model, counts)
    optimizer = _optimizer(cfg, model)
    amp_dtype = _amp_dtype(cfg.train.amp, device)
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else nullcontext
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if ctx.distributed else model
    mix_gen = torch.Generator().manual_seed(seed * 1_000_003 + 7919 * (ctx.rank + 1))
    scores = decision_scores(cfg, model, counts)
    if cfg.train.mixup_alpha > 0:
        from ..data.loader import mixup
        from ..losses import mixup_loss

    # 3. state: fresh, or everything the checkpoint holds
    step, start_epoch, skip, best, best_epoch, elapsed = 0, 0, 0, -1.0, 0, 0.0
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss·n, correct, n over the epoch's batches
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        rank_state = ckpt["ranks"][ctx.rank]
        train_loader.load_state_dict(rank_state["loader"])
        _set_rng_state(rank_state["rng"], ctx, mix_gen)
        sums = rank_state["sums"].to(device)
        step, start_epoch, skip = ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]
        best, best_epoch, elapsed = ckpt["best_test_acc"], ckpt["best_epoch"], ckpt["wall_s"]
        del ckpt
    if main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.toml", dumps_toml(cfg))
        if resume:
            atomic_write_text(metrics_path, "".join(f"{line}\n" for line in _read_metrics(metrics_path, start_epoch)))
        if not (out / "run.json").exists():
            atomic_write_json(out / "run.json", to_jsonable({
                "dataset": cfg.data.name, "model": cfg.model.name, "loss": cfg.loss.name, "head": cfg.model.head,
                "seed": seed, "num_classes": num_classes, "class_names": list(train_set.classes),
                "class_counts": counts, "groups": groups, "environment": _environment(device),
                "command": command if command is not None else " ".join(sys.argv)}))
        logger = resources.enter_context(RunLogger(out))  # metrics.jsonl, and TensorBoard when installed
        log.info("training %s on %d images (%d classes, counts %s) for %d epochs on %s x%d",
                 cfg.model.name, len(train_set), num_classes, counts, epochs, device, ctx.world_size)

    def checkpoint(epoch: int, batch_in_epoch: int, loader_state) -> None:
        ranks = distlib.gather_objects({"loader": loader_state, "rng": _rng_state(ctx, mix_gen),
                                        "sums": sums.cpu()}, ctx)
        if main:
            _save(ckpt_path, {"format": CHECKPOINT_FORMAT, "config": cfg.to_dict(), "world_size": ctx.world_size,
                              "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                              "scaler": scaler.state_dict(), "step": step, "epoch": epoch,
                              "batch_in_epoch": batch_in_epoch, "ranks": ranks, "best_test_acc": best,
                              "best_epoch": best_epoch, "wall_s": elapsed + time.perf_counter() - t_start})

    t_start = time.perf_counter()
    last = {}
    for epoch in range(start_epoch, epochs):
        t_epoch = time.perf_counter()
        net.train()
        bar = _progress(progress and main, steps_per_epoch, epoch, epochs, skip)
        # 4. one epoch of optimisation steps (a resumed epoch starts at the loader's saved batch)
        for i, (x, y) in enumerate(train_loader, start=skip):
            lr = lr_at(step, cfg.schedule, cfg.optim.lr, steps_per_epoch, epochs)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if cfg.model.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if cfg.train.mixup_alpha > 0:
                x, y_a, y_b, lam = mixup(x, y, cfg.train.mixup_alpha, mix_gen)
            with autocast():
                features, logits = net(x)
            if cfg.train.mixup_alpha > 0:
                loss = mixup_loss(loss_fn, features, logits, y_a, y_b, lam, epoch=epoch)
            else:
                y_a, y_b, lam = y, y, 1.0
                loss = loss_fn(features, logits, y, epoch=epoch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            step += 1
            with torch.no_grad():
                pred = logits.argmax(1)
                hits = lam * (pred == y_a).sum() + (1.0 - lam) * (pred == y_b).sum()
                sums += torch.stack([loss.detach().double() * len(y), torch.as_tensor(hits, dtype=torch.float64),
                                     torch.tensor(float(len(y)), dtype=torch.float64, device=device)])
            bar.update(1)
            check = not ctx.distributed or (i + 1) % _DDP_STOP_CHECK == 0  # agreeing costs a sync under DDP
            if check and i + 1 < steps_per_epoch and distlib.any_rank(stop.signum is not None, ctx):
                bar.close()
                checkpoint(epoch, i + 1, train_loader.state_dict())
                return _interrupted(stop, epoch, i + 1, out, main)
        bar.close()
        skip = 0

        # 5. evaluate: test accuracy every epoch, NC of the training features every nc_every epochs
        totals = distlib.all_reduce_sum(sums.clone(), ctx).cpu()
        sums.zero_()
        test = accuracy_report(run_pass(model, test_loader, num_classes, ctx, scores=scores,
                                        autocast=autocast() if amp_dtype else None,
                                        channels_last=cfg.model.channels_last), groups)
        if test["test_acc"] > best:
            best, best_epoch = test["test_acc"], epoch + 1
        record = {"epoch": epoch + 1, "lr": lr_at(step - 1, cfg.schedule, cfg.optim.lr, steps_per_epoch, epochs),
                  "train_loss": float(totals[0] / totals[2]), "train_acc": float(totals[1] / totals[2]),
                  **test, "best_test_acc": best}
        nc_every = cfg.eval.nc_every
        if epoch + 1 == epochs or (nc_every and (epoch + 1) % nc_every == 0):
            nc = run_pass(model, nc_loader, num_classes, ctx, nc=True, channels_last=cfg.model.channels_last)
            record.update(nc_report(nc, model, counts, cfg.eval.group_thresholds))
            if main:
                _save(out / "nc_state.pt", nc_state(nc, model, epoch + 1))
        if on_epoch is not None:
            record.update(on_epoch(epoch + 1, model))
        record["time_s"] = time.perf_counter() - t_epoch

        # 6. log and checkpoint
        if main:
            logger.log(record)
            log.info("epoch %d/%d lr %.4g loss %.4f train %.4f test %.4f (best %.4f) head %s tail %s %.1fs",
                     epoch + 1, epochs, record["lr"], record["train_loss"], record["train_acc"], record["test_acc"],
                     best, _fmt(record["test_acc_head"]), _fmt(record["test_acc_tail"]), record["time_s"])
        last = record
        checkpoint(epoch + 1, 0, train_loader.state_dict())
        if distlib.any_rank(stop.signum is not None, ctx) and epoch + 1 < epochs:
            return _interrupted(stop, epoch + 1, 0, out, main)

    # 7. summary (final-epoch values unless the key says best)
    if not last:
        last = json.loads(_read_metrics(metrics_path, epochs)[-1]) if metrics_path.exists() else {}
    summary = {"final_test_acc": last.get("test_acc"), "best_test_acc": best, "best_epoch": best_epoch,
               "test_acc_head": last.get("test_acc_head"), "test_acc_medium": last.get("test_acc_medium"),
               "test_acc_tail": last.get("test_acc_tail"), "epochs": epochs,
               "wall_s": elapsed + time.perf_counter() - t_start}
    if main:
        atomic_write_json(out / "summary.json", to_jsonable(summary))
    return {**summary, "status": "finished"}


def _interrupted(stop, epoch: int, batch: int, out: Path, main: bool) -> dict:
    if main:
        log.warning("interrupted in epoch %d after %d batches; checkpoint saved, continue with --resume (--out %s)",
                    epoch + 1, batch, out)
    return {"status": "interrupted", "signal": EXIT_CODES.get(stop.signum, 130), "epoch": epoch,
            "batch_in_epoch": batch}


def _fmt(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def _progress(enabled: bool, total: int, epoch: int, epochs: int, initial: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{epochs}", file=sys.stderr,
                disable=not enabled, leave=False, dynamic_ncols=True)

"""Evaluation passes shared by the trainer and ``ncollapse evaluate``.

One forward pass over a (sharded) split under ``no_grad`` gives per-class accuracy counts and, when asked,
the NC state of the penultimate features: ``ClassStats`` (first pass), then ``NCCCounts`` over the cached
features (second pass, NC4) and, for the NCMC head, ``NCMCStats``. Under DDP every count and statistic is
all-reduced, so every rank ends with the statistics of the whole split. Metrics come from
``ncollapse.metrics``; nothing here computes a metric by hand.
"""

from __future__ import annotations

import dataclasses
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..metrics import GROUPS, measure, measure_ncmc
from ..nn.modes import eval_mode
from ..stats import ClassStats, NCCCounts, NCMCStats
from .build import build_data, build_model_for, decision_scores, groups_of, make_loader
from .checkpoint import load_checkpoint
from .config import config_from_dict
from .dist import DistContext, all_reduce_sum, resolve_device

__all__ = ["PassResult", "classifier_of", "run_pass", "accuracy_report", "nc_report", "smallest_class_gram", "nc_state",
           "evaluate_run"]


@dataclass
class PassResult:
    """Per-class correct / total counts (CPU int64), the K x K confusion counts (rows: true class, columns:
    prediction) when asked for, and, for an NC pass, the reduced statistics."""

    correct: torch.Tensor
    counts: torch.Tensor
    confusion: torch.Tensor | None = None
    stats: ClassStats | None = None
    ncc: NCCCounts | None = None
    ncmc: NCMCStats | None = None


def classifier_of(model) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(W, b) in float64 on CPU such that argmax(W h + b) is the model's decision on its features h.

    A learnable linear head gives its weight and bias; cosine and fixed heads (logits ⟨ĥ, w_k/‖w_k‖⟩)
    give the row-normalised weight and no bias, which has the same argmax.
    """
    head = model.head
    W = head.weight.detach().to("cpu", torch.float64)
    bias = getattr(head, "bias", None)
    if isinstance(head, torch.nn.Linear):
        return W, None if bias is None else bias.detach().to("cpu", torch.float64)
    return F.normalize(W, dim=1), None


def run_pass(model, loader, num_classes: int, ctx: DistContext, *, nc: bool = False, scores=None,
             autocast=None, channels_last: bool = False, confusion: bool = False, progress: bool = False,
             desc: str = "evaluation", keep_samples: int = 0) -> PassResult:
    """Accuracy counts (with ``confusion`` the confusion counts, with ``nc`` the NC statistics) of ``model`` over
    ``loader``'s shard; ``progress`` shows a tqdm bar on stderr. With ``nc``, the statistics keep the first
    ``keep_samples`` features of every class (``ClassStats(rare_below=keep_samples + 1)``, in rank order).

    ``scores(features, logits)`` replaces the logits before the argmax (GCR, post-hoc logit adjustment;
    see ``build.decision_scores``). Nothing here draws random numbers, so a pass never changes a training run.
    """
    device = ctx.device
    correct = torch.zeros(num_classes, dtype=torch.int64, device=device)
    counts = torch.zeros(num_classes, dtype=torch.int64, device=device)
    pairs = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device) if confusion else None
    cached: list[tuple[torch.Tensor, torch.Tensor]] = []
    stats = None
    bar = tqdm(loader, desc=desc, file=sys.stderr, disable=not progress, leave=False, dynamic_ncols=True)
    with eval_mode(model), bar:
        for x, y in bar:
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast or nullcontext():
                features, logits = model(x)
            logits = logits.float()
            if scores is not None:
                logits = scores(features, logits)
            pred = logits.argmax(1)
            counts += torch.bincount(y, minlength=num_classes)
            correct += torch.bincount(y[pred == y], minlength=num_classes)
            if pairs is not None:
                pairs += torch.bincount(y * num_classes + pred, minlength=num_classes * num_classes)
            if nc:
                features = features.float()
                if stats is None:
                    stats = ClassStats(num_classes, features.shape[1], device=device, rare_below=keep_samples + 1)
                stats.update(features, y)
                cached.append((features, y))
    result = PassResult(all_reduce_sum(correct, ctx).cpu(), all_reduce_sum(counts, ctx).cpu())
    if pairs is not None:
        result.confusion = all_reduce_sum(pairs, ctx).cpu().reshape(num_classes, num_classes)
    if not nc:
        return result
    if stats is None:
        raise ValueError("the NC pass saw no samples: the split (or this rank's shard) is empty")
    if ctx.distributed:
        stats.all_reduce()
    W, b = classifier_of(model)
    ncc = NCCCounts.from_stats(stats, W=W, b=b)
    frame = getattr(model.head, "frame", None)
    ncmc = NCMCStats(frame) if frame is not None else None
    for features, y in cached:
        ncc.update(features, y)
        if ncmc is not None:
            ncmc.update(features, y)
    if ctx.distributed:
        ncc.all_reduce()
        if ncmc is not None:
            ncmc.all_reduce()
    result.stats, result.ncc, result.ncmc = stats, ncc, ncmc
    return result


def accuracy_report(result: PassResult, groups: dict, prefix: str = "test_") -> dict:
    """Overall accuracy (correct / total), per-class accuracy and the head/medium/tail group accuracy
    (mean of the per-class accuracies of the group's classes; null for an empty group)."""
    total = int(result.counts.sum())
    if total == 0:
        raise ValueError("accuracy over an empty split is undefined")
    per_class = result.correct.double() / result.counts.clamp(min=1).double()
    per_class = torch.where(result.counts > 0, per_class, torch.full_like(per_class, float("nan")))
    out = {f"{prefix}acc": int(result.correct.sum()) / total, f"{prefix}acc_per_class": per_class.tolist()}
    for name in GROUPS:
        classes = [c for c in groups[name] if result.counts[c] > 0]
        out[f"{prefix}acc_{name}"] = float(per_class[classes].mean()) if classes else None
    return out


def nc_report(result: PassResult, model, train_counts, thresholds, split: str = "train") -> dict:
    """Every scalar of ``ncollapse.measure`` prefixed ``nc/``, ``nc/sigma_b_spectrum``, and ``ncmc/*``; for
    ``split="test"`` the prefixes are ``nc_test/`` and ``ncmc_test/`` and the spectrum is left out."""
    W, b = classifier_of(model)
    report = measure(result.stats, W=W, b=b, ncc=result.ncc, group_counts=list(train_counts),
                     group_thresholds=tuple(thresholds))
    nc, ncmc = ("nc", "ncmc") if split == "train" else (f"nc_{split}", f"ncmc_{split}")
    out = {f"{nc}/{k}": v for k, v in report.items()
           if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if split == "train":
        out["nc/sigma_b_spectrum"] = report["sigma_b_spectrum"].tolist()
    if result.ncmc is not None:
        out.update({f"{ncmc}/{k.removeprefix('ncmc_')}": v for k, v in measure_ncmc(result.ncmc).items()})
    return out


def smallest_class_gram(stats: ClassStats, train_counts) -> list[list[float]]:
    """Cosine Gram ĥ_iᵀĥ_j of the kept features of the smallest training class (Yan et al. 2024, Fig. 7: the
    minority class's features collapsing); the class is argmin of ``train_counts``, the first of ties."""
    k = min(range(len(train_counts)), key=lambda c: train_counts[c])
    held = min(int(stats.counts[k]), stats.rare_samples.shape[1])
    unit = F.normalize(stats.rare_samples[k, :held].double(), dim=1)
    return (unit @ unit.T).cpu().tolist()


def nc_state(result: PassResult, model, epoch: int, test_confusion: torch.Tensor | None = None) -> dict:
    """The ``nc_state.pt`` payload of the run-directory contract (with the test confusion counts at the end)."""
    W, b = classifier_of(model)
    state = {"epoch": epoch, "stats": {k: v.cpu() if torch.is_tensor(v) else v
                                       for k, v in result.stats.state_dict().items()},
             "weight": W, "bias": b}
    if test_confusion is not None:
        state["test_confusion"] = test_confusion
    return state


def evaluate_run(run_dir, split: str = "test", device: str = "auto", data_root=None, progress: bool = False) -> dict:
    """Accuracy and NC metrics of ``run_dir/checkpoint.pt`` on ``split`` (one process)."""
    if split not in ("train", "test"):
        raise ValueError(f"split == {split!r}, must be 'train' or 'test'")
    path = Path(run_dir) / "checkpoint.pt"
    ckpt = load_checkpoint(path)
    cfg = config_from_dict(ckpt["config"], source=str(path))
    if cfg.train.task == "lm":
        raise ValueError(f"{run_dir} is a language-model run; its metrics.jsonl holds the validation loss and the NC "
                         "passes (nc/*, nc_test/*): read it with ncollapse report --run")
    if data_root is not None:
        cfg = cfg.replace(data=dataclasses.replace(cfg.data, root=str(data_root)))
    ctx = DistContext(0, 1, resolve_device(device))
    train_set, test_set = build_data(cfg)
    counts = train_set.class_counts()
    model = build_model_for(cfg, train_set)
    model.load_state_dict(ckpt["model"])
    model.to(ctx.device)
    loader = make_loader(train_set if split == "train" else test_set, cfg.eval.batch_size, ctx, train=False, cfg=cfg)
    result = run_pass(model, loader, train_set.num_classes, ctx, nc=True,
                      scores=decision_scores(cfg, model, counts), progress=progress, desc=f"{split} split")
    report = {"run": str(run_dir), "split": split, "epoch": ckpt["epoch"], "batch_in_epoch": ckpt["batch_in_epoch"]}
    report.update(accuracy_report(result, groups_of(counts, cfg.eval.group_thresholds), prefix=""))
    report.update(nc_report(result, model, counts, cfg.eval.group_thresholds))
    return report

"""Evaluation passes of a language model: validation loss and NC at vocabulary size.

The classes are the vocabulary: for every position t of a window, the feature is the final LayerNorm's output
h_t, the label the next token x_{t+1} and the classifier the LM head (Wu & Papyan 2024, §3: "Linguistic
Collapse", NC of causal LMs with the vocabulary as classes). An NC pass over N tokens is two passes over the
features: the forward pass fills a ``ClassStats(rare_below=min_count)`` and caches the features (float32) and the
head's argmax; the second pass feeds the cached features to ``NCCCounts`` with those predictions (NC4 at
K = vocabulary, tiled, without a second search over the head). ``measure(min_count=...)`` then leaves out tokens
seen fewer than ``min_count`` times in the pass (their within-class scatter removed exactly from the kept
samples); the report gives the share of the pass's tokens and of the vocabulary that were measured.

Windows: the held-out pass reads consecutive windows from the start of the held-out tokens, the training pass
windows spread evenly over the training tokens; both are fixed for a run, so every pass measures the same
tokens. Under DDP each rank takes every ``world_size``-th window and the statistics are all-reduced.
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..metrics import measure
from ..nn.modes import eval_mode
from ..stats import ClassStats, NCCCounts
from .dist import DistContext, all_reduce_sum

__all__ = ["LMPass", "window_starts", "windows", "validation_loss", "nc_pass", "lm_nc_report"]


@dataclass
class LMPass:
    """The reduced statistics of one NC pass: ``ClassStats`` (K = vocabulary) and ``NCCCounts`` with the head."""

    stats: ClassStats
    ncc: NCCCounts
    weight: torch.Tensor


def window_starts(length: int, context: int, n_tokens: int, spread: bool) -> np.ndarray:
    """Starts of ⌈n_tokens/context⌉ windows of context + 1 tokens inside ``length`` tokens (as many as fit):
    consecutive from 0, or spread evenly over the whole array when ``spread``."""
    fit = (length - 1) // context
    if fit < 1:
        raise ValueError(f"{length} tokens hold no window of context + 1 = {context + 1}; give more text or a "
                         "shorter lm.context")
    count = min(fit, -(-n_tokens // context)) if n_tokens else fit
    if spread and count < fit:
        return np.linspace(0, length - context - 1, count).round().astype(np.int64)
    return np.arange(count, dtype=np.int64) * context


def windows(tokens: torch.Tensor, starts: np.ndarray, context: int, ctx: DistContext) -> torch.Tensor:
    """This rank's windows (n, context + 1) int64 on the tokens' device: every ``world_size``-th from ``rank``."""
    mine = torch.as_tensor(starts[ctx.rank::ctx.world_size], device=tokens.device)
    return tokens[mine[:, None] + torch.arange(context + 1, device=tokens.device)].long()


def _batches(rows: torch.Tensor, batch_size: int):
    for i in range(0, rows.shape[0], batch_size):
        block = rows[i:i + batch_size]
        yield block[:, :-1], block[:, 1:]


def validation_loss(model, rows: torch.Tensor, ctx: DistContext, batch_size: int, autocast=None) -> float:
    """Mean next-token cross-entropy (nats) over the windows of every rank."""
    sums = torch.zeros(2, dtype=torch.float64, device=rows.device)
    with eval_mode(model), torch.no_grad():
        for x, y in _batches(rows, batch_size):
            with autocast or nullcontext():
                _, logits = model(x)
            sums[0] += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum").double()
            sums[1] += y.numel()
    sums = all_reduce_sum(sums, ctx)
    if float(sums[1]) == 0:
        raise ValueError("the validation loss saw no tokens; raise lm.val_tokens or lm.val_fraction")
    return float(sums[0] / sums[1])


def nc_pass(model, rows: torch.Tensor, ctx: DistContext, batch_size: int, min_count: int, autocast=None) -> LMPass:
    """NC statistics of the final-norm features against the next tokens of ``rows`` (module docstring)."""
    weight = model.head.weight.detach()
    vocab, dim = weight.shape
    stats = ClassStats(vocab, dim, device=rows.device, rare_below=min_count)
    cached = []
    with eval_mode(model), torch.no_grad():
        for x, y in _batches(rows, batch_size):
            with autocast or nullcontext():
                features, logits = model(x)
            h, labels, pred = features.flatten(0, 1).float(), y.flatten(), logits.flatten(0, 1).argmax(1)
            stats.update(h, labels)
            cached.append((h, labels, pred))
    if ctx.distributed:
        stats.all_reduce()
    if int(stats.counts.sum()) == 0:
        raise ValueError("the NC pass saw no tokens; raise lm.nc_tokens")
    ncc = NCCCounts.from_stats(stats, W=weight.to(torch.float32), dtype=torch.float32)
    for h, labels, pred in cached:
        ncc.update(h, labels, decisions=pred)
    if ctx.distributed:
        ncc.all_reduce()
    return LMPass(stats, ncc, weight.to("cpu", torch.float64))


def lm_nc_report(result: LMPass, train_counts, thresholds, min_count: int, prefix: str) -> dict:
    """Every scalar of ``measure`` as ``{prefix}/key`` plus the measured shares: ``token_share`` (tokens of the
    measured classes / tokens in the pass) and ``vocab_share`` (measured classes / vocabulary size)."""
    with warnings.catch_warnings():  # absent and rare tokens are the rule here; the shares below report them
        warnings.simplefilter("ignore")
        report = measure(result.stats, W=result.weight, ncc=result.ncc, group_counts=list(train_counts),
                         group_thresholds=tuple(thresholds), min_count=min_count)
    out = {f"{prefix}/{k}": v for k, v in report.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    seen = int(result.stats.counts.sum())
    out[f"{prefix}/tokens_in_pass"] = seen
    out[f"{prefix}/token_share"] = report["num_samples"] / seen
    out[f"{prefix}/vocab_share"] = report["num_measured_classes"] / report["num_classes"]
    if prefix == "nc":
        out["nc/sigma_b_spectrum"] = report["sigma_b_spectrum"].tolist()
    return out

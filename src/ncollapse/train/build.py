"""A run assembled from a ``Config``: data, model, loss, optimiser, AMP dtype, loaders and decision scores.

``build_run`` puts the pieces together in one fixed order (the order fixes nothing random: the model is built
under its own seed and the global RNG is left untouched), so the trainer, ``ncollapse evaluate`` and the
experiments build a model, a loader or a decision rule the same way. Nothing here trains or writes.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch.nn.parallel import DistributedDataParallel

from ..data import load_dataset, load_longtail
from ..data.loader import TensorLoader
from ..data.longtail import longtail_indices
from ..geometry import class_aware_centers
from ..losses import build_loss, posthoc_logit_adjust
from ..metrics import class_groups
from ..nn import build_model
from ..nn.heads import gcr_scores
from ..resources import check_memory
from .config import Config
from .dist import DistContext

__all__ = ["Run", "build_run", "build_data", "build_model_for", "build_loss_for", "build_optimizer", "amp_dtype",
           "make_loader", "decision_scores", "groups_of"]


def build_data(cfg: Config):
    """(train set, test set): the long-tailed training subset when ``data.imbalance < 1`` or ``data.n_max > 0``;
    a seeded balanced test subset of at most ``data.test_per_class`` images per class when that is > 0."""
    d = cfg.data
    if d.imbalance < 1.0 or d.n_max > 0:
        train_set = load_longtail(d.name, d.root, d.imbalance, n_max=d.n_max or None, profile=d.profile,
                                  seed=d.subset_seed)
    else:
        train_set = load_dataset(d.name, d.root, split=d.train_split)
    test_set = load_dataset(d.name, d.root, split=d.test_split)
    if d.test_per_class:
        keep = [min(d.test_per_class, n) for n in test_set.class_counts()]
        test_set = test_set.subset(longtail_indices(test_set.labels, keep, seed=d.subset_seed))
    return train_set, test_set


def build_model_for(cfg: Config, train_set):
    """The model of ``cfg.model`` for ``train_set``'s classes, channels and image size (seeded by train.seed)."""
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
    options = dict(cfg.loss.options)
    if cfg.loss.name == "dot_regression":
        options.setdefault("frame", model.head.weight)
    if cfg.loss.name in ("ncmc_p", "ncmc_cosine"):
        if not hasattr(model.head, "frame"):
            raise ValueError(f"loss.name = {cfg.loss.name!r} needs model.head = 'multicenter'; got {cfg.model.head!r}")
        options.setdefault("frame", model.head.frame)
    return build_loss(cfg.loss.name, class_counts, **options)


def build_optimizer(cfg: Config, model) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov) or AdamW over all of ``model``'s parameters, as ``[optim]`` says."""
    o = cfg.optim
    if o.name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                               weight_decay=o.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)


def amp_dtype(setting: str, device: torch.device):
    """Autocast dtype: CUDA only (bf16 where supported, else fp16 with a GradScaler); None = full precision."""
    if setting == "off" or (setting == "auto" and device.type != "cuda"):
        return None
    if device.type != "cuda":
        raise ValueError(f"train.amp = {setting!r} needs a CUDA device; got {device.type} (use train.amp = 'off')")
    if setting == "bf16" or (setting == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def make_loader(ds, batch_size, ctx: DistContext, *, train: bool, cfg: Config, seed: int = 0) -> TensorLoader:
    """The training loader (this rank's shuffled, augmented share) or an evaluation loader (a strided shard)."""
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


def groups_of(train_counts, thresholds) -> dict:
    """The head / medium / tail class ids of the training counts (``metrics.class_groups``)."""
    return class_groups(list(train_counts), tuple(thresholds))


@dataclass
class Run:
    """The pieces of one training run on one rank; ``net`` is ``model`` wrapped for DDP when distributed."""

    cfg: Config
    ctx: DistContext
    train_set: object
    counts: list
    groups: dict
    train_loader: TensorLoader
    test_loader: TensorLoader
    nc_loader: TensorLoader
    model: torch.nn.Module
    net: torch.nn.Module
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler
    mix_gen: torch.Generator
    scores: object

    @property
    def num_classes(self) -> int:
        return self.train_set.num_classes

    def autocast(self):
        """The forward pass's precision context: autocast to ``amp_dtype``, or nothing."""
        return torch.autocast(self.ctx.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()


def gram_slots(cfg: Config, counts) -> int:
    """Features kept per class for ``eval.gram_samples``: the setting capped at the largest class count."""
    return min(cfg.eval.gram_samples, max(counts, default=0))


def check_nc_memory(cfg: Config, counts, dim: int, device) -> None:
    """The memory guard of an NC pass, before training: the pass keeps its N × d float32 features and, for
    ``eval.gram_samples``, K × m × d float64 kept samples (m = ``gram_slots``)."""
    kept = len(counts) * gram_slots(cfg, counts) * dim
    check_memory(4 * sum(counts) * dim + 8 * kept, f"an NC pass over {sum(counts)} samples of width {dim} with "
                 f"eval.gram_samples = {cfg.eval.gram_samples}", "lower eval.gram_samples or the feature width",
                 device=device)


def build_run(cfg: Config, ctx: DistContext, data=None) -> Run:
    """Data (``data`` = (train set, test set) replaces ``build_data``), loaders, model, loss, optimiser, precision."""
    device, seed = ctx.device, cfg.train.seed
    train_set, test_set = build_data(cfg) if data is None else data
    counts = train_set.class_counts()
    train_loader = make_loader(train_set, cfg.train.batch_size // ctx.world_size, ctx, train=True, cfg=cfg, seed=seed)
    test_loader = make_loader(test_set, cfg.eval.batch_size, ctx, train=False, cfg=cfg)
    nc_loader = make_loader(train_set, cfg.eval.batch_size, ctx, train=False, cfg=cfg)
    model = build_model_for(cfg, train_set)
    check_nc_memory(cfg, counts, model.head.weight.shape[1], device)
    model = model.to(device)
    if cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = build_loss_for(cfg, model, counts)
    optimizer = build_optimizer(cfg, model)
    dtype = amp_dtype(cfg.train.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if ctx.distributed else model
    mix_gen = torch.Generator().manual_seed(seed * 1_000_003 + 7919 * (ctx.rank + 1))
    return Run(cfg, ctx, train_set, counts, groups_of(counts, cfg.eval.group_thresholds), train_loader, test_loader,
               nc_loader, model, net, loss_fn, optimizer, dtype, scaler, mix_gen,
               decision_scores(cfg, model, counts))

"""Learning-rate schedules as pure functions of the global step (nanoGPT's ``get_lr``).

Linear warm-up over the first ``warmup_epochs`` (in steps: lr·(s+1)/W, Goyal et al. 2017, §2.2), then

* ``multistep``: lr·γ^m with m the number of milestones ≤ the 0-based epoch (He et al. 2016; the CIFAR-LT
  protocol of Cao et al. 2019: 0.1 → 0.01 from epoch index 160, → 0.001 from 180);
* ``cosine``: min_lr + ½(lr − min_lr)(1 + cos(π t)), t = (s − W)/(T − W) (Loshchilov & Hutter 2017, eq. 5);
* ``constant``: lr.

The function depends only on the step, so a resumed run follows the same schedule.
"""

from __future__ import annotations

import bisect
import math

from .config import ScheduleConfig

__all__ = ["lr_at"]


def lr_at(step: int, cfg: ScheduleConfig, base_lr: float, steps_per_epoch: int, epochs: int) -> float:
    """Learning rate of (0-based) optimiser step ``step``."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch == {steps_per_epoch}, must be >= 1 (is the training set empty?)")
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return base_lr * (step + 1) / warmup
    if cfg.name == "multistep":
        return base_lr * cfg.gamma ** bisect.bisect_right(cfg.milestones, step // steps_per_epoch)
    if cfg.name == "cosine":
        total = epochs * steps_per_epoch
        t = min(1.0, (step - warmup) / max(1, total - warmup))
        return cfg.min_lr + 0.5 * (base_lr - cfg.min_lr) * (1.0 + math.cos(math.pi * t))
    return base_lr

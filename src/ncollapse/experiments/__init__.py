"""Generalisation and transfer experiments of the review (§4-5), each a function ``f(cfg, out_dir, params,
device, progress) -> dict`` that trains with ``ncollapse.train.train`` and writes ``results.json``, PNG figures
and a ``report.html`` into ``out_dir``:

============================ =====================================================================
``test-collapse``            NC1 / CDNV of train vs test features, weak vs strong (Hui et al. 2022)
``cdnv-gap``                 CDNV train vs test over epochs vs the generalisation gap (Galanti et al. 2021)
``layerwise-ncc``            NCC accuracy and NC1 per block, ε-effective depth (Galanti et al. 2022)
``random-labels``            NC with shuffled training labels (Zhu et al. 2021, fig. 4)
``transfer``                 source-class CDNV vs few-shot accuracy on unseen classes (Galanti et al. 2021)
``fixed-classifiers``        learnable vs simplex / d-cube / d-orthoplex heads (Pernici et al. 2021)
``lesde-fit``                LE-ODE (α, β) fitted to the class-mean logits over training (Zhang et al. 2021b)
============================ =====================================================================

A config is a training TOML plus an ``[experiment]`` table (keys and defaults: ``EXPERIMENTS[name][1]``);
quick CPU configs live in ``configs/experiments/``. ``ncmc_toy`` (RCR vs GCR on hard features, Yan et al. 2024,
Prop. 3.1) needs no training and runs as ``ncollapse ncmc toy``.
"""

from __future__ import annotations

from ._common import load_experiment_config
from .cdnv import DEFAULTS as _CDNV, cdnv_gap
from .fixed_heads import DEFAULTS as _FIXED, fixed_classifiers
from .layerwise import DEFAULTS as _LAYERWISE, layerwise_depth
from .shuffled import DEFAULTS as _RANDOM, random_labels
from .split_collapse import DEFAULTS as _SPLIT, train_test_collapse
from .fewshot import DEFAULTS as _TRANSFER, transfer
from .lesde_fit import DEFAULTS as _LESDE, lesde_fit

__all__ = ["EXPERIMENTS", "run_experiment", "load_experiment_config", "train_test_collapse", "cdnv_gap",
           "layerwise_depth", "random_labels", "transfer", "fixed_classifiers", "lesde_fit"]

EXPERIMENTS = {
    "test-collapse": (train_test_collapse, _SPLIT),
    "cdnv-gap": (cdnv_gap, _CDNV),
    "layerwise-ncc": (layerwise_depth, _LAYERWISE),
    "random-labels": (random_labels, _RANDOM),
    "transfer": (transfer, _TRANSFER),
    "fixed-classifiers": (fixed_classifiers, _FIXED),
    "lesde-fit": (lesde_fit, _LESDE),
}


def run_experiment(name: str, config=None, out_dir="runs/experiment", overrides=(), device: str = "auto",
                   progress: bool = False) -> dict:
    """Load ``config`` (a TOML path, or None for the defaults) with ``overrides`` and run experiment ``name``."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    func, defaults = EXPERIMENTS[name]
    cfg, params = load_experiment_config(config, overrides, defaults)
    return func(cfg, out_dir, params, device=device, progress=progress)

"""Pieces the experiments share: their config files, one small training loop with a per-epoch hook, feature
passes, figures and the results page.

An experiment config is a training config (``ncollapse.train.config``) plus an ``[experiment]`` table whose keys
each experiment declares with their defaults; ``--set experiment.key=value`` overrides them like any other key.

Training is always ``ncollapse.train.train`` (``train_run``): its ``data`` hook trains on a modified data set
(shuffled labels, a subset of classes) and its ``on_epoch`` hook adds the experiment's per-epoch measurements to
``metrics.jsonl``, so every experiment's run directory follows the rundir contract and ``ncollapse report`` reads it.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import torch

from ..config_check import check_keys, check_type, kind_of
from ..data import Dataset
from ..io_safe import Outputs
from ..nn.modes import eval_mode
from ..report.figures import png_bytes
from ..report.html import claim_page
from ..serialize import to_jsonable
from ..train import train
from ..train.build import build_data, build_model_for, make_loader
from ..train.checkpoint import load_checkpoint
from ..train.config import Config, config_from_dict, parse_override, read_toml
from ..train.dist import DistContext, resolve_device

__all__ = ["load_experiment_config", "train_run", "features_of", "eval_loader", "shuffled_labels", "relabeled",
           "class_subset", "write_results", "claim_outputs", "claims_outputs"]

# ------------------------------------------------------------------------------------------ config files

AT_LEAST_ONE = frozenset({"probe_every", "record_every", "episodes", "queries"})  # checked before training starts

def load_experiment_config(path, overrides=(), defaults: dict | None = None) -> tuple[Config, dict]:
    """(training ``Config``, experiment parameters) from a TOML file (or the defaults when ``path`` is None)
    and ``section.key=value`` overrides; unknown ``[experiment]`` keys are errors with a hint."""
    defaults = dict(defaults or {})
    raw, source = read_toml(path)
    params = raw.pop("experiment", {})
    if not isinstance(params, dict):
        raise TypeError(f"{source}: [experiment] must be a table of keys")
    for text in overrides:
        section, key, value = parse_override(text)
        (params if section == "experiment" else raw.setdefault(section, {}))[key] = value
    cfg = config_from_dict(raw, source if not overrides else f"{source} with --set overrides")
    check_keys(params, defaults, lambda key: f"{source}: unknown key experiment.{key}")
    out = dict(defaults)
    for key, value in params.items():
        try:
            value = check_type(value, kind_of(defaults[key]), f"experiment.{key}")
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{source}: {exc}") from None
        if key in AT_LEAST_ONE and value < 1:
            raise ValueError(f"{source}: experiment.{key} == {value}, must be >= 1 (in epochs or episodes)")
        out[key] = list(value) if isinstance(defaults[key], list) else value
    return cfg, out


# ------------------------------------------------------------------------------------------ training

def train_run(cfg: Config, out_dir, *, data=None, on_epoch=None, device: str = "auto", progress: bool = False,
              command: str | None = None):
    """``ncollapse.train.train`` into ``out_dir`` (with its ``data`` / ``on_epoch`` hooks); returns (summary, model)
    with the model rebuilt from the final checkpoint, in eval mode on ``device``."""
    out = Path(out_dir)
    summary = train(cfg, out, device=device, progress=progress, data=data, on_epoch=on_epoch,
                    command=command if command is not None else " ".join(["ncollapse", *sys.argv[1:]]))
    if summary.get("status") != "finished":
        raise KeyboardInterrupt
    train_set = data[0] if data is not None else build_data(cfg)[0]
    model = build_model_for(cfg, train_set)
    model.load_state_dict(load_checkpoint(out / "checkpoint.pt")["model"])
    return summary, model.to(resolve_device(device)).eval()


def features_of(model, loader) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(features, logits, labels) of every batch of ``loader``, concatenated, in eval mode."""
    with eval_mode(model):
        parts = [(*model(x), y) for x, y in loader]
    return tuple(torch.cat([p[i] for p in parts]).float() if i < 2 else torch.cat([p[i] for p in parts])
                 for i in range(3))


def eval_loader(ds, cfg: Config, device="cpu"):
    """A deterministic loader of ``ds`` (no augmentation, no shuffling) with the data set's normalisation:
    the trainer's evaluation loader for a single process."""
    return make_loader(ds, cfg.eval.batch_size, DistContext(0, 1, torch.device(device)), train=False, cfg=cfg)


def shuffled_labels(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """A seeded permutation of ``labels``: every image gets a random label, the class sizes stay the same."""
    gen = torch.Generator().manual_seed(seed)
    return labels[torch.randperm(len(labels), generator=gen).to(labels.device)]


# ------------------------------------------------------------------------------------------ output

def claim_outputs(outputs: Outputs, out_dir, figures) -> None:
    """Claim an experiment's outputs in ``out_dir``: results.json, report.html with its figure folder and one
    ``<stem>.png`` per figure stem, so that a clash is refused (exit 2) before anything is computed."""
    out = Path(out_dir)
    held = next((name for name in ("checkpoint.pt", "metrics.jsonl") if (out / name).exists()), None)
    if held is not None:  # the trainer would refuse it too, but only after these claims named results.json
        raise ValueError(f"--out {out} already holds a run ({held}); choose another --out for a new experiment")
    outputs.claim(out / "results.json", "experiment results")
    claim_page(outputs, out / "report.html")
    for stem in figures:
        outputs.claim(out / f"{stem}.png", "experiment figure")


def claims_outputs(*figures: str):
    """Decorator of an experiment ``f(cfg, out_dir, params, device, progress, *, outputs)``: its outputs (the PNG
    ``figures`` stems, results.json, report.html) are claimed in ``out_dir`` before it trains, and ``outputs``
    (``io_safe.Outputs``) writes them afterwards; ``f.figures`` lists the stems."""
    def wrap(func):
        @functools.wraps(func)
        def run(cfg, out_dir, params: dict | None = None, device: str = "auto", progress: bool = False) -> dict:
            with Outputs() as outputs:
                claim_outputs(outputs, out_dir, figures)
                return func(cfg, out_dir, params, device, progress, outputs=outputs)
        run.figures = figures
        return run
    return wrap


def write_results(out_dir, name: str, result: dict, figures: dict, outputs: Outputs | None = None) -> dict:
    """Write ``results.json`` and one PNG per figure ({file stem: Figure}) into ``out_dir``; returns ``result``.

    Everything goes through ``io_safe.Outputs``: ``outputs`` holds the claims made before training
    (``claims_outputs``); without it all files are claimed here before the first is written, so a file of the same
    name that ncollapse did not write there is refused (exit 2) instead of replaced."""
    out = Path(out_dir)
    with Outputs() as own:
        if outputs is None:
            outputs = own
            outputs.claim(out / "results.json", "experiment results")
            for stem in figures:
                outputs.claim(out / f"{stem}.png", "experiment figure")
        for stem, fig in figures.items():
            outputs.write_bytes(out / f"{stem}.png", png_bytes(fig))
        result = {"experiment": name, **result, "figures": [f"{stem}.png" for stem in figures],
                  "report": str(out / "report.html")}
        outputs.write_json(out / "results.json", to_jsonable(result))
    return result


def relabeled(ds, labels, classes=None):
    """A copy of the data set ``ds`` with new ``labels`` (and class names), same images and normalisation."""
    return Dataset(ds.images, labels, list(ds.classes if classes is None else classes), ds.name, ds.mean, ds.std)


def class_subset(ds, classes):
    """The images of ``classes`` (a list of class ids) relabelled 0 … len(classes) − 1 in the given order."""
    bad = [c for c in classes if not isinstance(c, int) or not 0 <= c < ds.num_classes]
    if bad or len(set(classes)) != len(classes) or len(classes) < 2:
        raise ValueError(f"classes == {list(classes)}: give at least two distinct class ids in [0, {ds.num_classes})")
    ids = torch.as_tensor(list(classes), dtype=torch.int64)
    lookup = torch.full((ds.num_classes,), -1, dtype=torch.int64)
    lookup[ids] = torch.arange(len(ids))
    keep = lookup[ds.labels] >= 0
    sub = ds.subset(keep)
    return relabeled(sub, lookup[sub.labels], [ds.classes[int(c)] for c in ids])

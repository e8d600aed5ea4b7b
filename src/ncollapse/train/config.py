"""Training configuration: TOML → frozen, validated dataclasses (nanoGPT-style plain data).

A config file has the sections ``data``, ``model``, ``loss``, ``optim``, ``schedule``, ``train`` and
``eval``; every key has a default below, so a file lists only what differs. Unknown sections or keys, and names
outside their registry (data set, augmentation, model, head, loss), are errors with a "did you mean" hint
(``ncollapse.config_check``) when the file is read, before any data loads; a wrong type names the key.
Overrides ``section.key=value`` are parsed as TOML literals (``optim.lr=0.05``, ``data.augment=["flip"]``); a
value that is not a TOML literal is taken as a plain string (``data.root=../shared/data/mnist``).
``model.options`` and ``loss.options`` are free tables passed to ``build_model`` / ``build_loss``, which
validate them.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from ..config_check import check_choice, check_keys, check_type, hint
from ..data.datasets import DATASETS
from ..data.loader import AUGMENTATIONS
from ..losses import LOSSES
from ..nn.build import HEADS, MODELS
from ..resources import SIDE_FILE_LIMIT, read_capped

__all__ = ["Config", "DataConfig", "ModelConfig", "LossConfig", "OptimConfig", "ScheduleConfig",
           "TrainConfig", "EvalConfig", "LMConfig", "load_config", "read_toml", "config_from_dict", "parse_override", "dumps_toml"]


def _choice(*values):
    return {"choices": values}


def _bounds(low=None, high=None, low_open=False):
    return {"low": low, "high": high, "low_open": low_open}


@dataclass(frozen=True)
class DataConfig:
    name: str = field(default="mnist", metadata=_choice(*DATASETS))  #: data set for ``ncollapse.data.load_dataset``
    root: str = "data"  #: folder holding the original files (``ncollapse data fetch NAME --root DIR``)
    train_split: str = "train"  #: split to train on
    test_split: str = "test"  #: split to report test accuracy on
    imbalance: float = field(default=1.0, metadata=_bounds(0.0, 1.0, low_open=True))  #: τ = n_min/n_max; 1 keeps the split as is
    n_max: int = field(default=0, metadata=_bounds(0))  #: head-class size of the LT profile; 0 = the loader's default
    profile: str = field(default="exp", metadata=_choice("exp", "step"))  #: long-tail profile
    subset_seed: int = field(default=0, metadata=_bounds(0))  #: which images the LT subset keeps (fixed across training seeds)
    #: evaluate on this many test images per class (a balanced subset seeded by subset_seed); 0 = the whole split
    test_per_class: int = field(default=0, metadata=_bounds(0))
    #: on-device augmentations of training batches
    augment: tuple[str, ...] = field(default=("crop", "flip"), metadata=_choice(*AUGMENTATIONS))
    pad: int = field(default=4, metadata=_bounds(0))  #: padding of the random crop, pixels
    balanced: bool = False  #: class-balanced resampling of training batches


@dataclass(frozen=True)
class ModelConfig:
    name: str = field(default="resnet32", metadata=_choice(*MODELS))  #: architecture for ``ncollapse.nn.build_model``
    head: str = field(default="linear", metadata=_choice(*HEADS))
    bias: bool = True  #: learnable bias of a linear head
    feature_dim: int = field(default=0, metadata=_bounds(0))  #: width of an extra linear layer; 0 = none
    normalize_features: bool = False  #: L2-normalise the penultimate feature
    centers: str = field(default="uniform", metadata=_choice("uniform", "class_aware"))  #: multicenter: AL or CAL (NCMC §3.5)
    f: int = field(default=1, metadata=_bounds(1))  #: multicenter: centers per class (mean, with class_aware)
    theta: float = field(default=0.2, metadata=_bounds(0.0, math.pi / 2))  #: multicenter: center angle θ, radians
    channels_last: bool = False  #: NHWC memory format for convolutions
    options: dict = field(default_factory=dict)  #: architecture options passed to build_model


@dataclass(frozen=True)
class LossConfig:
    name: str = field(default="ce", metadata=_choice(*LOSSES))  #: loss for ``ncollapse.losses.build_loss``
    options: dict = field(default_factory=dict)  #: loss options (e.g. drw_epoch, scale, tau)


@dataclass(frozen=True)
class OptimConfig:
    name: str = field(default="sgd", metadata=_choice("sgd", "adamw"))
    lr: float = field(default=0.1, metadata=_bounds(0.0, low_open=True))  #: peak learning rate
    momentum: float = field(default=0.9, metadata=_bounds(0.0, 1.0))  #: SGD momentum
    nesterov: bool = False  #: SGD Nesterov momentum
    betas: tuple[float, ...] = (0.9, 0.999)  #: AdamW betas
    weight_decay: float = field(default=2e-4, metadata=_bounds(0.0))


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = field(default="multistep", metadata=_choice("multistep", "cosine", "constant"))
    warmup_epochs: float = field(default=5.0, metadata=_bounds(0.0))  #: linear warm-up length, epochs
    milestones: tuple[int, ...] = (160, 180)  #: multistep: epochs (0-based index) where lr *= gamma
    gamma: float = field(default=0.1, metadata=_bounds(0.0, 1.0, low_open=True))
    min_lr: float = field(default=0.0, metadata=_bounds(0.0))  #: cosine floor


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = field(default=200, metadata=_bounds(1))
    batch_size: int = field(default=128, metadata=_bounds(1))  #: global batch (split over DDP ranks)
    seed: int = field(default=0, metadata=_bounds(0))  #: init, augmentation order, mixup, fixed frames
    mixup_alpha: float = field(default=0.0, metadata=_bounds(0.0))  #: Beta(α, α) mixup; 0 = off
    drop_last: bool = False  #: drop the last incomplete training batch
    amp: str = field(default="auto", metadata=_choice("auto", "off", "bf16", "fp16"))  #: CUDA only; auto = bf16 if supported else fp16
    threads: int = field(default=0, metadata=_bounds(0, 1024))  #: CPU threads (torch.set_num_threads, at most 1024); 0 = leave as is
    task: str = field(default="classify", metadata=_choice("classify", "lm"))  #: "lm": a GPT on text, see [lm]


@dataclass(frozen=True)
class EvalConfig:
    nc_every: int = field(default=10, metadata=_bounds(0))  #: NC metrics every n epochs (and at the last); 0 = last only
    batch_size: int = field(default=1024, metadata=_bounds(1))
    group_thresholds: tuple[int, ...] = (100, 20)  #: head n_k > first, tail n_k < second
    logit_adjust_tau: float = field(default=0.0, metadata=_bounds(0.0))  #: post-hoc logits − τ log π_y; 0 = off
    decision: str = field(default="rcr", metadata=_choice("rcr", "gcr"))  #: NCMC rule: regular (logits) or generalised (max over centers)
    gram_samples: int = field(default=0, metadata=_bounds(0))  #: log the cosine Gram of the smallest class's first n training features at every NC pass (Yan et al. Fig. 7); 0 = off


@dataclass(frozen=True)
class LMConfig:
    """``train.task = "lm"``: text, tokenizer, GPT shape, and budgets counted in tokens (``ncollapse.train.lm``)."""

    text: tuple[str, ...] = ("data/text",)  #: text files or folders (*.txt, *.txt.gz), read as UTF-8
    vocab_size: int = field(default=8192, metadata=_bounds(256, 2 ** 32))  #: byte-level BPE vocabulary = classes K
    val_fraction: float = field(default=0.05, metadata=_bounds(0.0, 0.5, low_open=True))  #: held-out end of each file
    cache_dir: str = ""  #: token-array cache; "" = $XDG_CACHE_HOME/ncollapse/text
    context: int = field(default=128, metadata=_bounds(1))  #: tokens per sequence
    layers: int = field(default=4, metadata=_bounds(1))
    width: int = field(default=256, metadata=_bounds(1))  #: d, the feature dimension
    heads: int = field(default=4, metadata=_bounds(1))
    tied: bool = False  #: share the head with the token embedding (untied keeps NC3's classifier distinct)
    dropout: float = field(default=0.0, metadata=_bounds(0.0, 1.0))
    grad_clip: float = field(default=1.0, metadata=_bounds(0.0))  #: clip the gradient norm to this; 0 = off
    tokens: int = field(default=5_000_000, metadata=_bounds(1))  #: training budget, tokens (steps = tokens / (batch·context))
    warmup_tokens: int = field(default=100_000, metadata=_bounds(0))  #: linear learning-rate warm-up, tokens
    eval_every: int = field(default=500_000, metadata=_bounds(1))  #: validation loss and a checkpoint every n tokens
    val_tokens: int = field(default=131_072, metadata=_bounds(0))  #: held-out tokens for the validation loss; 0 = all
    nc_every: int = field(default=0, metadata=_bounds(0))  #: NC passes every n tokens (at evaluation points) and at the end; 0 = end only
    nc_tokens: int = field(default=131_072, metadata=_bounds(1))  #: N tokens per NC pass (held-out and training)
    min_count: int = field(default=5, metadata=_bounds(1))  #: NC over tokens seen at least this often in the pass
    group_thresholds: tuple[int, ...] = (10_000, 1_000)  #: head: training count > first, tail: < second


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    lm: LMConfig = field(default_factory=LMConfig)

    def to_dict(self) -> dict:
        """Plain nested dict (tuples as lists), the form stored in checkpoints and config.toml."""
        def plain(v):
            if isinstance(v, (tuple, list)):
                return [plain(x) for x in v]
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            return v
        return {s.name: {f.name: plain(getattr(getattr(self, s.name), f.name))
                         for f in dataclasses.fields(getattr(self, s.name))} for s in dataclasses.fields(self)}

    def replace(self, **sections) -> "Config":
        return dataclasses.replace(self, **sections)


_SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(Config)}


def _check_meta(value, meta: dict, key: str) -> None:
    if "choices" in meta:
        check_choice(value, meta["choices"], key)
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (value < low or (meta.get("low_open") and value == low)):
        raise ValueError(f"{key} == {value}, must be {'>' if meta.get('low_open') else '>='} {low}")
    if high is not None and value > high:
        raise ValueError(f"{key} == {value}, must be <= {high}")


def _build_section(name: str, values: dict, source: str):
    cls = type(_SECTIONS[name]())
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    check_keys(values, fields, lambda key: f"{source}: unknown key {name}.{key}")
    kwargs = {}
    for key, value in values.items():
        try:
            converted = check_type(value, hints[key], f"{name}.{key}")
            _check_meta(converted, fields[key].metadata, f"{name}.{key}")
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{source}: {exc}") from None
        kwargs[key] = converted
    return cls(**kwargs)


def _check_cross(cfg: Config, source: str) -> None:
    if len(cfg.eval.group_thresholds) != 2 or cfg.eval.group_thresholds[0] < cfg.eval.group_thresholds[1]:
        raise ValueError(f"{source}: eval.group_thresholds must be [head_min, tail_max] with head_min >= tail_max; "
                         f"got {list(cfg.eval.group_thresholds)}")
    if list(cfg.schedule.milestones) != sorted(cfg.schedule.milestones):
        raise ValueError(f"{source}: schedule.milestones must be increasing; got {list(cfg.schedule.milestones)}")
    if cfg.optim.name == "adamw" and (len(cfg.optim.betas) != 2 or not all(0 <= b < 1 for b in cfg.optim.betas)):
        raise ValueError(f"{source}: optim.betas must be two numbers in [0, 1); got {list(cfg.optim.betas)}")
    if cfg.train.task == "lm":
        _check_lm(cfg, source)
    elif cfg.schedule.warmup_epochs > cfg.train.epochs:
        raise ValueError(f"{source}: schedule.warmup_epochs == {cfg.schedule.warmup_epochs} exceeds "
                         f"train.epochs == {cfg.train.epochs}")


def _check_lm(cfg: Config, source: str) -> None:
    lm = cfg.lm
    if lm.width % lm.heads:
        raise ValueError(f"{source}: lm.width == {lm.width} is not divisible by lm.heads == {lm.heads}")
    if cfg.schedule.name == "multistep":
        raise ValueError(f"{source}: train.task = 'lm' takes schedule.name = 'cosine' or 'constant' (warm-up: "
                         "lm.warmup_tokens); got 'multistep'")
    if len(lm.group_thresholds) != 2 or lm.group_thresholds[0] < lm.group_thresholds[1]:
        raise ValueError(f"{source}: lm.group_thresholds must be [head_min, tail_max] with head_min >= tail_max; "
                         f"got {list(lm.group_thresholds)}")
    if not lm.text:
        raise ValueError(f"{source}: lm.text is empty; give text files or folders")


def config_from_dict(raw: dict, source: str = "config") -> Config:
    """Validate a nested dict (as parsed from TOML) into a ``Config``; ``source`` names it in errors."""
    if not isinstance(raw, dict):
        raise TypeError(f"{source}: a config must be a table of sections; got {type(raw).__name__}")
    sections = {}
    for name, values in raw.items():
        if name not in _SECTIONS:
            raise ValueError(f"{source}: unknown section [{name}]{hint(name, _SECTIONS)}")
        if not isinstance(values, dict):
            raise TypeError(f"{source}: [{name}] must be a table of keys; got {type(values).__name__}")
        sections[name] = _build_section(name, values, source)
    cfg = Config(**sections)
    _check_cross(cfg, source)
    return cfg


def parse_override(text: str) -> tuple[str, str, object]:
    """``"section.key=value"`` → (section, key, value); the value is a TOML literal or else a plain string."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ValueError(f"override {text!r} must look like section.key=value (e.g. optim.lr=0.05)")
    path, literal = text.split("=", 1)
    section, key = path.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {literal}")["v"]
    except tomllib.TOMLDecodeError:
        value = literal
    return section, key.strip(), value


def read_toml(path) -> tuple[dict, str]:
    """(parsed table, source name) of a TOML file; ({}, "config") when ``path`` is None."""
    if path is None:
        return {}, "config"
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"config file {path} is a folder; give a TOML file")
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = read_capped(path, SIDE_FILE_LIMIT, "config file")  # refuses FIFOs and devices
    try:
        return tomllib.loads(text.decode("utf-8")), str(path)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid TOML: {exc}") from None


def load_config(path=None, overrides=()) -> Config:
    """Read a TOML config (or start from the defaults when ``path`` is None) and apply overrides."""
    raw, source = read_toml(path)
    for text in overrides:
        section, key, value = parse_override(text)
        if section not in _SECTIONS:
            raise ValueError(f"--set {text}: unknown section {section!r}{hint(section, _SECTIONS)}")
        raw.setdefault(section, {})[key] = value
    return config_from_dict(raw, source if not overrides else f"{source} with --set overrides")


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else
                                                          ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} to TOML")


def dumps_toml(cfg: Config) -> str:
    """The resolved config as TOML (every key, defaults included); ``load_config`` reads it back unchanged. An image
    run's config (``train.task = "classify"``, the default) leaves out the task key and the ``[lm]`` section, so it
    reads as it did before language models existed."""
    lines = []
    for section, values in cfg.to_dict().items():
        if cfg.train.task == "classify" and section in ("train", "lm"):
            if section == "lm":
                continue
            values = {key: value for key, value in values.items() if key != "task"}
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)

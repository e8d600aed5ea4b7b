"""``NCTracker``: neural-collapse metrics on a schedule inside any training loop.

The tracker attaches one forward pre-hook to the model's classifier (by default the last ``nn.Linear``; its input
is the feature h, its weight and bias the classifier W, b) and measures NC every ``every_n_steps`` optimiser
steps or every ``every_n_epochs`` epochs, in one of two modes:

* ``"eval_pass"`` (default): one pass over a given loader in eval mode under ``torch.no_grad`` (``nn.modes.eval_mode``,
  the model's mode restored), folding the features into a ``ClassStats``; NC4 (``NCCCounts``, Papyan et al. 2020)
  needs the class means first, so it runs over the features cached during the pass while they fit in
  ``cache_mb``, else over a second pass of the loader.
* ``"online"``: the training forward passes' features (``model.training`` only), paired with the labels given to
  ``update(labels)``, accumulate between two measurements at no extra forward (buffered without a device sync,
  folded into ClassStats every ``CHUNK_ROWS`` rows or ``PENDING_BYTES``, whichever comes first). Approximate: the
  features of one window come from a drifting model (docs/tracking.md measures the gap); NC4 is left out.

Sequence models: features (B, T, d) pair with labels (B, T); ``task="next_token"`` pairs position t with label
t + 1 (causal LM, K = vocabulary), and labels equal to ``ignore_index`` (padding, −100) are dropped. Under
``torch.distributed`` the statistics are all-reduced (every rank measures its shard; rank 0 writes). Metrics
come from ``metrics.measure``; the run directory (``_tracking_files.TrackerFiles``) is the trainer's.
"""

from __future__ import annotations

import logging
import time
from numbers import Real

import torch
from torch import nn

from .metrics import measure
from .nn.modes import eval_mode
from .stats import ClassStats, NCCCounts
from .validation import check_scalar

__all__ = ["NCTracker", "find_classifier"]

log = logging.getLogger(__name__)

MODES = ("eval_pass", "online")
TASKS = ("classification", "next_token")
SPLITS = ("train", "test")
STATE_FORMAT = "ncollapse.tracker/1"
CHUNK_ROWS = 16384  # rows folded into ClassStats at once (few large updates, little Python per batch or step)
PENDING_BYTES = 64 * 2**20  # online: fold the buffered features sooner when they hold this much (wide features)


def find_classifier(model: nn.Module, num_classes: int, name: str | None = None) -> tuple[str, nn.Linear]:
    """(name, module) of the classifier: ``name`` when given, else the last ``nn.Linear`` of ``model`` (in module
    order), which must have ``num_classes`` outputs; another ``nn.Linear`` with ``num_classes`` outputs beside it
    (the same parent module: two heads) makes the choice ambiguous, one inside a block (a feed-forward layer that
    happens to be K wide) does not."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    modules = dict(model.named_modules())
    if name is not None:
        if name not in modules:
            linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
            raise ValueError(f"model has no module named {name!r}; its nn.Linear modules are {linears}")
        module = modules[name]
        if not isinstance(module, nn.Linear):
            raise TypeError(f"classifier {name!r} is a {type(module).__name__}, not an nn.Linear; name the linear "
                            "layer whose input is the feature")
    else:
        linears = [(n, m) for n, m in modules.items() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError("model has no nn.Linear to read the features from; pass classifier='module.name'")
        name, module = linears[-1]
        parent = name.rpartition(".")[0]
        heads = [n for n, m in linears if m.out_features == num_classes and n.rpartition(".")[0] == parent]
        if len(heads) > 1:
            raise ValueError(f"ambiguous classifier: nn.Linear modules {heads} all have {num_classes} outputs; "
                             f"pass classifier= one of them")
    if module.out_features != num_classes:
        raise ValueError(f"classifier {name!r} has {module.out_features} outputs, not num_classes={num_classes}; "
                         "pass classifier='module.name' naming the layer that outputs the class scores")
    return name, module


def _chunks(triples, rows: int):
    """(features, labels, decisions) triples concatenated into chunks of at least ``rows`` rows (the last smaller)."""
    pending, held = [], 0
    for triple in triples:
        pending.append(triple)
        held += len(triple[1])
        if held >= rows:
            yield _cat(pending)
            pending, held = [], 0
    if pending:
        yield _cat(pending)


def _cat(triples):
    if len(triples) == 1:
        return triples[0]
    features, labels, decisions = zip(*triples)
    return (torch.cat(features), torch.cat(labels),
            None if any(d is None for d in decisions) else torch.cat(decisions))


def _default_forward(model: nn.Module, batch, device: torch.device):
    inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
    if isinstance(inputs, dict):
        return model(**{k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items() if k != "labels"})
    return model(inputs.to(device))


def _default_labels(batch):
    if isinstance(batch, dict):
        return batch["labels"]
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[1]
    raise TypeError(f"cannot find the labels in a batch of type {type(batch).__name__}; batches must be "
                    "(inputs, labels) pairs or dicts with 'labels', or pass labels=lambda batch: ...")


def _dist_world():
    """The torch.distributed world size (1 when no process group is initialised)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class NCTracker:
    """NC metrics of ``model`` on a schedule (module docstring); three lines in a training loop:
    ``tracker = NCTracker(model, K, loader=...)``, ``tracker.step()`` after each optimiser step and
    ``tracker.epoch_end()`` after each epoch.

    Parameters
    ----------
    model : the network; ``classifier`` names its last linear layer (default: found, see ``find_classifier``).
    num_classes : K (the vocabulary size for ``task="next_token"``).
    loader : batches for ``"eval_pass"``: (inputs, labels) pairs or dicts with ``labels`` (other keys go to the
        model as keyword arguments); ``forward(model, batch)`` and ``labels(batch)`` override both. Under
        torch.distributed give each rank its shard (a ``DistributedSampler``).
    mode : ``"eval_pass"`` or ``"online"`` (then call ``update(labels)`` after each training forward).
    every_n_steps, every_n_epochs : the schedule (0 = off; default every epoch).
    ncc : also measure NC4 (eval_pass only); ``cache_mb`` bounds the features cached for it.
    rare_below, min_count : as in ``ClassStats`` / ``measure`` (large K: measure the classes with ≥ min_count
        samples).
    split : ``"train"`` logs ``nc/*`` and ``train_eval_acc``; ``"test"`` logs ``nc_test/*`` and ``test_acc``.
    class_counts : training class counts (head/medium/tail groups; default: the measured counts).
    run_dir : write the trainer's run directory there (config.toml, run.json, metrics.jsonl, nc_state.pt,
        summary.json) for ``ncollapse report`` / ``table`` / ``compare``; ``method``, ``dataset``, ``seed`` and
        ``config`` (a dict of hyper-parameters) describe the run. ``loggers``: callables given every record.
    """

    def __init__(self, model: nn.Module, num_classes: int, loader=None, *, mode: str = "eval_pass",
                 every_n_steps: int = 0, every_n_epochs: int | None = None, classifier: str | None = None,
                 task: str = "classification", ignore_index: int = -100, forward=None, labels=None,
                 ncc: bool = True, cache_mb: float = 256.0, rare_below: int = 1, min_count: int = 1,
                 split: str = "train", class_counts=None, group_thresholds=(100, 20), sync: bool | None = None,
                 run_dir=None, method: str = "tracked", dataset: str | None = None, seed: int | None = None,
                 config: dict | None = None, loggers=(), tensorboard: bool | None = None):
        check_scalar(num_classes, "num_classes", int, low=2)
        for value, name, allowed in ((mode, "mode", MODES), (task, "task", TASKS), (split, "split", SPLITS)):
            if value not in allowed:
                raise ValueError(f"{name} == {value!r}, must be one of {allowed}")
        check_scalar(every_n_steps, "every_n_steps", int, low=0)
        every_n_epochs = (0 if every_n_steps else 1) if every_n_epochs is None else every_n_epochs
        check_scalar(every_n_epochs, "every_n_epochs", int, low=0)
        if not every_n_steps and not every_n_epochs:
            raise ValueError("no schedule: set every_n_steps or every_n_epochs to a positive number")
        check_scalar(cache_mb, "cache_mb", Real, low=0.0)
        check_scalar(min_count, "min_count", int, low=1)
        check_scalar(rare_below, "rare_below", int, low=1)
        if mode == "eval_pass" and loader is None:
            raise ValueError("mode='eval_pass' needs loader= (batches to measure on); or use mode='online'")
        self.model, self.num_classes, self.loader, self.mode, self.task = model, num_classes, loader, mode, task
        self.classifier_name, self.classifier = find_classifier(model, num_classes, classifier)
        self.every_n_steps, self.every_n_epochs = every_n_steps, every_n_epochs
        self.ignore_index, self.ncc, self.cache_bytes = ignore_index, ncc and mode == "eval_pass", cache_mb * 2**20
        self.rare_below, self.min_count = max(rare_below, min_count), min_count
        self.split, self.class_counts, self.group_thresholds = split, class_counts, tuple(group_thresholds)
        self._forward = forward or (lambda m, batch: _default_forward(m, batch, self._device()))
        self._labels = labels or _default_labels
        self.sync = _dist_world() > 1 if sync is None else sync
        self.loggers = list(loggers)
        self.history: list[dict] = []
        self.step_count = self.epoch_count = self.measurements = 0
        self._features: torch.Tensor | None = None
        self._decisions: torch.Tensor | None = None
        self._in_pass = False
        self._online: ClassStats | None = None
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # online pairs not yet folded in
        self._pending_rows = 0
        self._handle = self.classifier.register_forward_pre_hook(self._capture)
        self.files = None
        if run_dir is not None and _rank() == 0:
            from ._tracking_files import TrackerFiles

            self.files = TrackerFiles(run_dir, self._describe(method, dataset, seed, config), tensorboard)
        self._t0, self._elapsed = time.perf_counter(), 0.0

    # -- hooks and pairing ----------------------------------------------------------------------
    def _capture(self, module: nn.Module, args) -> None:
        if self._in_pass or (self.mode == "online" and module.training):
            self._features = args[0].detach()

    def _device(self) -> torch.device:
        return self.classifier.weight.device

    def _pair(self, features: torch.Tensor, labels, decisions: torch.Tensor | None = None):
        """(n, d) features, (n,) labels and (n,) decisions (or None): sequence positions flattened and shifted for
        next-token (position t predicts label t + 1); no device sync (``_drop_ignored`` comes later)."""
        labels = torch.as_tensor(labels).to(features.device)
        if self.task == "next_token":
            if features.dim() != 3 or labels.dim() != 2:
                raise ValueError(f"task='next_token' needs features (batch, seq, dim) and labels (batch, seq); got "
                                 f"{tuple(features.shape)} and {tuple(labels.shape)}")
            features, labels = features[:, :-1], labels[:, 1:]
            decisions = None if decisions is None else decisions[:, :-1]
        if tuple(features.shape[:-1]) != tuple(labels.shape):
            raise ValueError(f"features of shape {tuple(features.shape)} do not pair with labels of shape "
                             f"{tuple(labels.shape)}: the labels must have the features' leading dimensions")
        features, labels = features.reshape(-1, features.shape[-1]), labels.reshape(-1)
        decisions = None if decisions is None else decisions.reshape(-1)
        return features, labels, decisions

    def _drop_ignored(self, features: torch.Tensor, labels: torch.Tensor, decisions: torch.Tensor | None = None):
        """The samples whose label is not ``ignore_index`` (one device sync: callers apply it per chunk)."""
        keep = labels != self.ignore_index
        if bool(keep.all()):
            return features, labels, decisions
        return features[keep], labels[keep], None if decisions is None else decisions[keep]

    def _new_stats(self) -> ClassStats:
        return ClassStats(self.num_classes, self.classifier.in_features, device=self._device(),
                          rare_below=self.rare_below)

    # -- the loop's calls -------------------------------------------------------------------------
    def update(self, labels) -> None:
        """Online mode: fold the last training forward's features, paired with ``labels``, into the window."""
        if self.mode != "online":
            raise ValueError("update(labels) is for mode='online'; eval_pass measures on its loader by itself")
        if self._features is None:
            raise ValueError("update(labels) found no features: call it after a forward pass of the model in "
                             "training mode (model.train())")
        features, self._features = self._features, None
        features, labels, _ = self._pair(features, labels)  # no device sync in the training step
        self._pending.append((features, labels))
        self._pending_rows += len(labels)
        if self._pending_rows >= CHUNK_ROWS or self._pending_rows * features.shape[-1] * features.element_size() >= \
                PENDING_BYTES:
            self._fold_pending()

    def _fold_pending(self) -> ClassStats | None:
        """Fold the buffered online pairs into the window's ClassStats in one update (little Python per step)."""
        if self._pending:
            if self._online is None:
                self._online = self._new_stats()
            features, labels, _ = self._drop_ignored(*_cat([(f, y, None) for f, y in self._pending]))
            self._online.update(features, labels)
            self._pending, self._pending_rows = [], 0
        return self._online

    def step(self) -> dict | None:
        """Count one optimiser step; measures (and returns the record) when ``every_n_steps`` says so."""
        self.step_count += 1
        if self.every_n_steps and self.step_count % self.every_n_steps == 0:
            return self.measure_now()
        return None

    def epoch_end(self) -> dict | None:
        """Count one finished epoch; measures (and returns the record) when ``every_n_epochs`` says so."""
        self.epoch_count += 1
        if self.every_n_epochs and self.epoch_count % self.every_n_epochs == 0:
            return self.measure_now()
        return None

    # -- measuring --------------------------------------------------------------------------------
    def _eval_pass(self) -> tuple[ClassStats, NCCCounts | None]:
        """One pass: features into ClassStats in chunks of ``CHUNK_ROWS`` rows (few large updates), cached with the
        model's decisions (argmax of the classifier's output) while they fit in ``cache_mb``; then NC4 over the cache,
        or over a second pass."""
        stats, cached, held, dtype = self._new_stats(), [], 0, torch.float32
        self._in_pass = True
        decide = self.classifier.register_forward_hook(self._capture_decisions) if self.ncc else None
        try:
            with eval_mode(self.model):
                for chunk in _chunks(self._batches(), CHUNK_ROWS):
                    features, labels, decisions = self._drop_ignored(*chunk)
                    stats.update(features, labels)
                    dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
                    if self.ncc and cached is not None:
                        held += features.numel() * features.element_size()
                        if held <= self.cache_bytes:
                            cached.append((features, labels, decisions))
                        else:  # too large to hold: NC4 takes a second pass
                            cached = None
                if self.sync:
                    stats.all_reduce()
                counts = None
                if self.ncc:
                    W, b = self._classifier()
                    # the search in the features' precision: float64 only re-ranks ties finer than the input holds
                    counts = NCCCounts.from_stats(stats, W=W, b=b, dtype=dtype)
                    chunks = cached if cached is not None else (self._drop_ignored(*c) for c in self._batches())
                    for features, labels, decisions in chunks:
                        counts.update(features, labels, decisions)
                    if self.sync:
                        counts.all_reduce()
        finally:
            if decide is not None:
                decide.remove()
            self._in_pass, self._features, self._decisions = False, None, None
        return stats, counts

    def _capture_decisions(self, module: nn.Module, args, output) -> None:
        self._decisions = output.detach().argmax(-1)

    def _batches(self):
        """(features, labels, the model's decisions) of every batch of the loader, paired (``_pair``)."""
        for batch in self.loader:
            self._forward(self.model, batch)
            yield self._pair(self._features, self._labels(batch), self._decisions)

    def _classifier(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(W, b) in float64 on the CPU (b None for a bias-free classifier)."""
        bias = self.classifier.bias
        return (self.classifier.weight.detach().to("cpu", torch.float64),
                None if bias is None else bias.detach().to("cpu", torch.float64))

    def measure_now(self) -> dict:
        """Measure now (eval pass, or close the online window); log, write and return the record."""
        t0 = time.perf_counter()
        if self.mode == "eval_pass":
            stats, counts = self._eval_pass()
        else:
            if self._fold_pending() is None and not self.sync:
                raise ValueError("the online window is empty: call tracker.update(labels) after each training forward "
                                 "(or use mode='eval_pass')")
            stats, counts, self._online = self._online or self._new_stats(), None, None
            if self.sync:
                stats.all_reduce()
        W, b = self._classifier()
        report = measure(stats, W=W, b=b, ncc=counts, min_count=self.min_count, group_counts=self.class_counts,
                         group_thresholds=self.group_thresholds)
        self.measurements += 1
        record = self._record(report)
        record["nc_seconds"] = time.perf_counter() - t0
        self.history.append(record)
        if self.files is not None:
            self.files.write(record, stats, W, b, self.epoch_count, self.history)
        for logger in self.loggers:
            logger(record)
        return record

    def _record(self, report: dict) -> dict:
        """The metrics.jsonl line: ``epoch`` (the epoch count; with ``every_n_steps`` the measurement count, so
        every line has its own x), ``step``, ``nc/*`` scalars (``nc_test/*`` for split test), the classifier's
        accuracy on the pass (``train_eval_acc`` / ``test_acc``) and, for the training split, the Σ_B spectrum."""
        by_steps = bool(self.every_n_steps)
        record = {"epoch": self.measurements if by_steps else self.epoch_count, "step": self.step_count,
                  "epochs_done": self.epoch_count}
        prefix = "nc" if self.split == "train" else f"nc_{self.split}"
        record.update({f"{prefix}/{k}": v for k, v in report.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)})
        if self.split == "train":
            record["nc/sigma_b_spectrum"] = report["sigma_b_spectrum"].tolist()
        if "classifier_accuracy" in report:
            record["train_eval_acc" if self.split == "train" else "test_acc"] = report["classifier_accuracy"]
        return record

    def _describe(self, method, dataset, seed, config) -> dict:
        return {"method": method, "dataset": dataset, "seed": seed, "config": dict(config or {}),
                "model": type(self.model).__name__, "num_classes": self.num_classes, "class_counts": self.class_counts,
                "group_thresholds": list(self.group_thresholds),
                "tracker": {"mode": self.mode, "every_n_steps": self.every_n_steps,
                            "every_n_epochs": self.every_n_epochs, "classifier": self.classifier_name,
                            "task": self.task, "split": self.split, "min_count": self.min_count}}

    # -- state contract ---------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the counts, the history and the open online window (the run directory is left as it is)."""
        self.step_count = self.epoch_count = self.measurements = 0
        self.history, self._online, self._features = [], None, None
        self._pending, self._pending_rows = [], 0

    def state_dict(self) -> dict:
        """Counters, history and the open online window: what a resumed training needs to resume its tracking."""
        return {"format": STATE_FORMAT, "step": self.step_count, "epoch": self.epoch_count,
                "measurements": self.measurements, "history": list(self.history),
                "elapsed": self._elapsed + time.perf_counter() - self._t0,
                "online": None if self._fold_pending() is None else {k: v.cpu() if torch.is_tensor(v) else v
                                                                     for k, v in self._online.state_dict().items()}}

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()``; the run directory's metrics.jsonl is cut back to the restored measurements."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"not an NCTracker state (expected a dict from NCTracker.state_dict(), format "
                             f"{STATE_FORMAT!r})")
        self.step_count, self.epoch_count = int(state["step"]), int(state["epoch"])
        self.measurements, self.history = int(state["measurements"]), list(state["history"])
        self._elapsed, self._t0 = float(state["elapsed"]), time.perf_counter()
        self._online, self._pending, self._pending_rows = None, [], 0
        if state["online"] is not None:
            self._online = self._new_stats()
            self._online.load_state_dict(state["online"])
        if self.files is not None:
            self.files.rewind(self.history)

    # -- the end ----------------------------------------------------------------------------------
    def finish(self, **summary) -> dict:
        """Write summary.json (the last record's accuracy and NC scalars, the counts, wall time, ``summary``);
        returns it. Call once after training; reports and tables list only finished runs."""
        last = self.history[-1] if self.history else {}
        out = {"epochs": self.epoch_count, "steps": self.step_count, "measurements": self.measurements,
               "wall_s": self._elapsed + time.perf_counter() - self._t0}
        for key in ("test_acc", "train_eval_acc"):
            if key in last:
                out[f"final_{key}"] = last[key]
        if "test_acc" in last:
            best = max(self.history, key=lambda r: r.get("test_acc", float("-inf")))
            out.update(best_test_acc=best["test_acc"], best_epoch=best["epoch"])
        out.update({k: v for k, v in last.items() if k.startswith(("nc/", "nc_test/")) and not isinstance(v, list)})
        out.update(summary)
        if self.files is not None:
            self.files.finish(out)
        return out

    def close(self) -> None:
        """Remove the hook and close the files (idempotent)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if self.files is not None:
            self.files.close()

    def __enter__(self) -> NCTracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""``NCCallback``: NC tracking in a Lightning ``Trainer`` with one line, ``callbacks=[NCCallback(K, loader)]``.

The callback builds an ``NCTracker`` on the ``LightningModule`` in ``setup``, counts optimiser steps (the
trainer's ``global_step``, so gradient accumulation counts once) and epochs, feeds the online mode the labels of
each training batch (``batch[1]``, or ``labels(batch)``), and sends every record's scalars to the trainer's own
loggers (TensorBoard, CSV, W&B: whatever ``trainer.loggers`` holds). The tracker's state is the callback's
``state_dict``, so it is saved in Lightning checkpoints and restored by ``trainer.fit(..., ckpt_path=...)``.
The run directory defaults to ``<trainer.log_dir>/nc``; ``summary.json`` is written when training ends.
"""

from __future__ import annotations

import os

from . import require, scalars

pl = require("lightning.pytorch", "ncollapse.integrations.lightning")

__all__ = ["NCCallback"]


class NCCallback(pl.Callback):
    """Lightning callback over ``ncollapse.NCTracker``; ``tracker_kwargs`` are the tracker's (mode,
    every_n_steps, every_n_epochs, classifier, task, split, run_dir, method, ...)."""

    def __init__(self, num_classes: int, loader=None, *, labels=None, **tracker_kwargs):
        super().__init__()
        self.num_classes, self.loader, self._labels = num_classes, loader, labels
        self.kwargs = tracker_kwargs
        self.tracker = None

    @property
    def state_key(self) -> str:
        return f"NCCallback[{self.kwargs.get('split', 'train')}]"

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit" or self.tracker is not None:
            return
        from ..tracking import NCTracker

        kwargs = dict(self.kwargs)
        kwargs.setdefault("run_dir", os.path.join(trainer.log_dir or trainer.default_root_dir, "nc"))
        kwargs.setdefault("tensorboard", False)  # the trainer's loggers get every scalar
        if self._labels is not None:
            kwargs["labels"] = self._labels
        kwargs["loggers"] = [*kwargs.get("loggers", ()), lambda record: self._log(trainer, record)]
        self.tracker = NCTracker(pl_module, self.num_classes, self.loader, **kwargs)

    def _log(self, trainer, record: dict) -> None:
        values = scalars(record)
        for logger in trainer.loggers:
            logger.log_metrics(values, step=trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.tracker.mode == "online":
            self.tracker.update((self._labels or _labels_of)(batch))
        while self.tracker.step_count < trainer.global_step:
            self.tracker.step()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.tracker.epoch_end()

    def on_train_end(self, trainer, pl_module) -> None:
        self.tracker.finish()
        self.tracker.close()

    def state_dict(self) -> dict:
        return {} if self.tracker is None else self.tracker.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict:
            self.tracker.load_state_dict(state_dict)


def _labels_of(batch):
    if isinstance(batch, dict):
        return batch["labels"]
    return batch[1]

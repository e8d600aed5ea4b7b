"""``NCCallback``: NC tracking in a Hugging Face ``Trainer`` with one line,
``trainer.add_callback(NCCallback(loader=trainer.get_eval_dataloader(), split="test"))``.

On ``on_train_begin`` the callback builds an ``NCTracker`` on the model: K is ``config.num_labels`` for a
classifier and ``config.vocab_size`` for a causal LM (``*ForCausalLM`` / ``*LMHeadModel``: next-token NC at
K = vocabulary, features = the final hidden states entering ``lm_head``, labels = the next tokens, −100 padding
dropped). ``"eval_pass"`` measures on ``loader`` (``trainer.get_eval_dataloader()`` with ``split="test"``, for one);
``"online"`` takes the ``labels`` keyword of every training forward. Steps are the trainer's optimiser steps.

Records go to ``state.log_history`` (trainer_state.json), to TensorBoard (``_tensorboard_dir``: beside the
trainer's own curves) when ``report_to`` names it, to the active W&B run when ``report_to`` names wandb (offline
with ``WANDB_MODE=offline``), and to the run directory (default ``<output_dir>/nc``). The tracker's state is saved
into every checkpoint folder (``nc_tracker_rank{r}.pt``) and restored by ``trainer.train(resume_from_checkpoint=...)``.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import os

import torch

from .._io import atomic_write_bytes
from . import require, scalars

transformers = require("transformers", "ncollapse.integrations.hf")

__all__ = ["NCCallback"]

log = logging.getLogger(__name__)

_LM_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def _report_to(args) -> set[str]:
    """The integrations ``args.report_to`` names; ``"all"`` means the installed ones among tensorboard and wandb."""
    report = args.report_to
    report = set([report] if isinstance(report, str) else list(report or []))
    if "all" in report:
        report |= {name for name in ("tensorboard", "wandb") if importlib.util.find_spec(name) is not None}
    return report


def _tensorboard_dir(args) -> str:
    """The trainer's TensorBoard folder when it names one (``logging_dir``, ``TENSORBOARD_LOGGING_DIR``), else
    ``<output_dir>/runs/ncollapse``: a run beside the trainer's own ``<output_dir>/runs/<time>_<host>``."""
    named = getattr(args, "logging_dir", None) or os.getenv("TENSORBOARD_LOGGING_DIR")
    return named or os.path.join(args.output_dir, "runs", "ncollapse")


class NCCallback(transformers.TrainerCallback):
    """Hugging Face ``TrainerCallback`` over ``ncollapse.NCTracker``; ``tracker_kwargs`` are the tracker's
    (mode, every_n_steps, every_n_epochs, classifier, split, run_dir, method, dataset, rare_below, min_count, ...)."""

    def __init__(self, num_classes: int | None = None, loader=None, **tracker_kwargs):
        self.num_classes, self.loader, self.kwargs = num_classes, loader, tracker_kwargs
        self.tracker = None
        self._writer = self._handle = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        from ..tracking import NCTracker

        causal = type(model).__name__.endswith(_LM_SUFFIXES)
        config = model.config
        num_classes = self.num_classes or (config.vocab_size if causal else config.num_labels)
        tracker_kwargs = {"task": "next_token" if causal else "classification", "tensorboard": False,
                          "run_dir": os.path.join(args.output_dir, "nc"), "seed": args.seed,
                          "config": {"optim": {"lr": args.learning_rate, "weight_decay": args.weight_decay},
                                     "train": {"epochs": args.num_train_epochs, "max_steps": args.max_steps,
                                               "batch_size": args.per_device_train_batch_size}},
                          **self.kwargs}
        if self.loader is None and tracker_kwargs.get("mode", "eval_pass") == "eval_pass":
            raise ValueError("NCCallback(mode='eval_pass') needs loader=, e.g. "
                             "trainer.add_callback(NCCallback(loader=trainer.get_eval_dataloader(), split='test')); "
                             "or use mode='online'")
        tracker_kwargs["loggers"] = [*tracker_kwargs.get("loggers", ()), lambda r: self._log(args, state, r)]
        if "tensorboard" in _report_to(args) and state.is_world_process_zero:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=_tensorboard_dir(args))
        self.tracker = NCTracker(model, num_classes, self.loader, **tracker_kwargs)
        if self.tracker.mode == "online":
            self._handle = model.register_forward_hook(self._online_labels, with_kwargs=True)
        if state.global_step > 0:
            self._restore(os.path.join(args.output_dir, f"checkpoint-{state.global_step}"))

    def _online_labels(self, module, args, kwargs, output) -> None:
        if module.training and kwargs.get("labels") is not None:
            self.tracker.update(kwargs["labels"])

    def _log(self, args, state, record: dict) -> None:
        values = scalars(record)
        state.log_history.append({**values, "step": state.global_step})
        if self._writer is not None:
            for key, value in values.items():
                self._writer.add_scalar(key, value, global_step=state.global_step)
            self._writer.flush()
        if "wandb" in _report_to(args) and state.is_world_process_zero:
            wandb = require("wandb", "report_to='wandb'")
            if wandb.run is not None:
                wandb.run.log(values)

    def _state_file(self, folder: str) -> str:
        import torch.distributed as dist

        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        return os.path.join(folder, f"nc_tracker_rank{rank}.pt")

    def _restore(self, folder: str) -> None:
        path = self._state_file(folder)
        if not os.path.isfile(path):
            log.warning("resuming at step %s without %s: NC tracking restarts its counts here", folder, path)
            return
        self.tracker.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))

    def on_step_end(self, args, state, control, **kwargs):
        self.tracker.step()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.tracker.epoch_end()

    def on_save(self, args, state, control, **kwargs):
        buffer = io.BytesIO()
        torch.save(self.tracker.state_dict(), buffer)
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        atomic_write_bytes(self._state_file(folder), buffer.getvalue())

    def on_train_end(self, args, state, control, **kwargs):
        self.tracker.finish()
        self.tracker.close()
        if self._handle is not None:
            self._handle.remove()
        if self._writer is not None:
            self._writer.close()

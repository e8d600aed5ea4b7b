"""Training: TOML configs (``config``), the resumable, DDP-ready loop (``trainer``), LR schedules
(``schedule``), evaluation passes with NC tracking (``evaluate``) and process-group set-up (``dist``)."""

from .config import Config, config_from_dict, dumps_toml, load_config
from .trainer import build_data, build_model_for, load_checkpoint, train

__all__ = ["Config", "load_config", "config_from_dict", "dumps_toml", "train", "build_data", "build_model_for",
           "load_checkpoint"]

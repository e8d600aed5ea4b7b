"""Training in layers: TOML configs (``config``) -> a run assembled from a config (``build``) -> the run
directory's checkpoint and files (``checkpoint``) and evaluation passes with NC tracking (``evaluate``) -> the
resumable, DDP-ready loop (``trainer``); LR schedules (``schedule``) and process-group set-up (``dist``)."""

from .build import build_data, build_model_for
from .checkpoint import load_checkpoint
from .config import Config, config_from_dict, dumps_toml, load_config
from .trainer import train

__all__ = ["Config", "load_config", "config_from_dict", "dumps_toml", "train", "build_data", "build_model_for",
           "load_checkpoint"]

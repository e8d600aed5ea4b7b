"""Reading feature files: ``.npz`` with ``features`` (N, d), ``labels`` (N,), optional ``weight`` (K, d), ``bias`` (K,)."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..validation import check_classifier, check_features, check_features_labels

__all__ = ["FeatureFile", "load_features", "load_ood_features"]


@dataclass(frozen=True)
class FeatureFile:
    features: torch.Tensor
    labels: torch.Tensor
    weight: torch.Tensor | None
    bias: torch.Tensor | None

    @property
    def num_classes(self) -> int:
        top = int(self.labels.max()) + 1 if self.labels.numel() else 0
        return max(top, 0 if self.weight is None else self.weight.shape[0])


def _read_npz(path, required: tuple[str, ...]) -> dict:
    """The arrays of an .npz archive holding at least ``required``; a one-line error naming the file otherwise."""
    path = Path(path)
    wanted = " and ".join(repr(key) for key in required)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory; expected an .npz file with arrays {wanted}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file (0 bytes); save one with "
                         f"numpy.savez(path, {', '.join(f'{k}=...' for k in required)})")
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc.__class__.__name__}); "
                         f"save one with numpy.savez(path, {', '.join(f'{k}=...' for k in required)})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: holds a single array, not an .npz archive with {wanted}")
    with archive:
        missing = [key for key in required if key not in archive.files]
        if missing:
            raise ValueError(f"{path}: missing array {missing[0]!r}; found {sorted(archive.files)}")
        return {key: archive[key] for key in archive.files}


def load_features(path) -> FeatureFile:
    """Load and validate a feature file; every problem is a one-line error naming the file."""
    arrays = _read_npz(path, ("features", "labels"))
    try:
        rows = arrays["weight"].shape[0] if "weight" in arrays and arrays["weight"].ndim == 2 else None
        features, labels = check_features_labels(arrays["features"], arrays["labels"], rows)
        weight = bias = None
        if "weight" in arrays:
            weight, bias = check_classifier(arrays["weight"], arrays.get("bias"), dim=features.shape[1])
        elif "bias" in arrays:
            raise ValueError("'bias' given without 'weight'")
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{path}: {exc}") from None
    return FeatureFile(features, labels, weight, bias)


def load_ood_features(path) -> torch.Tensor:
    """Load the (N, d) ``features`` array of an out-of-distribution .npz (other arrays are ignored)."""
    arrays = _read_npz(path, ("features",))
    try:
        return check_features(arrays["features"], name="features")
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{path}: {exc}") from None

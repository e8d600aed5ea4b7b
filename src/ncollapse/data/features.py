"""Reading feature files: ``.npz`` with ``features`` (N, d), ``labels`` (N,), optional ``weight`` (K, d), ``bias`` (K,)."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..validation import check_classifier, check_features_labels

__all__ = ["FeatureFile", "load_features"]


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


def load_features(path) -> FeatureFile:
    """Load and validate a feature file; every problem is a one-line error naming the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory; expected an .npz file with arrays 'features' and 'labels'")
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc.__class__.__name__}); "
                         "save one with numpy.savez(path, features=X, labels=y)") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: holds a single array, not an .npz archive with 'features' and 'labels'")
    with archive:
        missing = [key for key in ("features", "labels") if key not in archive.files]
        if missing:
            raise ValueError(f"{path}: missing array {missing[0]!r}; found {sorted(archive.files)}")
        arrays = {key: archive[key] for key in archive.files}
    try:
        features, labels = check_features_labels(arrays["features"], arrays["labels"])
        weight = bias = None
        if "weight" in arrays:
            weight, bias = check_classifier(arrays["weight"], arrays.get("bias"), dim=features.shape[1])
        elif "bias" in arrays:
            raise ValueError("'bias' given without 'weight'")
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{path}: {exc}") from None
    return FeatureFile(features, labels, weight, bias)

"""The in-memory ``Dataset`` and the registry of named data sets (``load_dataset``, ``load_longtail``).

A ``Dataset`` holds the whole split as one uint8 tensor (N, C, H, W) with int64 labels, the class names and
per-channel normalisation constants. Where the literature fixes those constants they are used as published:

* MNIST (0.1307, 0.3081) and Fashion-MNIST (0.2860, 0.3530): mean / std of the training pixels;
* CIFAR-10 (0.4914, 0.4822, 0.4465) / (0.2023, 0.1994, 0.2010), the values of the LDAM-DRW code
  (Cao et al. 2019) that the CIFAR-LT literature copies (the exact per-pixel std is ≈ 0.247, 0.243, 0.261);
* CIFAR-100 (0.5071, 0.4865, 0.4409) / (0.2673, 0.2564, 0.2762); SVHN (0.4377, 0.4438, 0.4728) / (0.1980, 0.2010,
  0.1970).

STL-10, an image folder and scikit-learn's digits get the exact mean / std of their own pixels
(``pixel_mean_std``; for digits over all 1,797 images, so both splits share them).

``root`` may be the folder that holds a data set's files or its parent (the folder that ``ncollapse data
fetch NAME --root DIR`` fills); a missing data set raises ``DataNotFoundError`` naming that command.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..validation import check_labels
from . import formats
from .longtail import longtail_counts, longtail_indices, make_longtail

__all__ = ["Dataset", "DataNotFoundError", "DATASETS", "load_dataset", "load_longtail", "concat_datasets",
           "pixel_mean_std"]

log = logging.getLogger(__name__)


class DataNotFoundError(FileNotFoundError, ValueError):
    """A data set's files are not under the given root (both a ``FileNotFoundError`` and a ``ValueError``)."""


def pixel_mean_std(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and population std of uint8 images in [0, 1] units, from 256-bin histograms."""
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[1]):
        hist = torch.bincount(images[:, c].reshape(-1).to(torch.int64), minlength=256).to(torch.float64).cpu()
        n = hist.sum()
        mean = float((hist * values).sum() / n)
        var = float((hist * (values - mean) ** 2).sum() / n)
        means.append(mean)
        stds.append(var ** 0.5)
    return tuple(means), tuple(stds)


@dataclass(eq=False)
class Dataset:
    """A whole split in memory: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,), class names, constants."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str = "dataset"
    mean: tuple[float, ...] = field(default=())
    std: tuple[float, ...] = field(default=())

    def __post_init__(self):
        self.images = torch.as_tensor(self.images)
        self.labels = torch.as_tensor(self.labels)
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"{self.name}: images must be uint8 of shape (N, C, H, W); "
                             f"got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dim() != 1 or self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(f"{self.name}: labels must have shape ({self.images.shape[0]},); "
                             f"got {tuple(self.labels.shape)}")
        self.classes = [str(c) for c in self.classes]
        self.labels = check_labels(self.labels, len(self.classes), name=f"{self.name}: labels")
        if not self.mean or not self.std:
            self.mean, self.std = pixel_mean_std(self.images)
        self.mean, self.std = tuple(float(m) for m in self.mean), tuple(float(s) for s in self.std)
        channels = self.images.shape[1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"{self.name}: mean and std need {channels} entries (one per channel); "
                             f"got {len(self.mean)} and {len(self.std)}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, {len(self)} images of shape {tuple(self.images.shape[1:])}, "
                f"{self.num_classes} classes)")

    def subset(self, indices) -> "Dataset":
        """The images at ``indices`` (an index tensor/array or a boolean mask), same classes and constants."""
        idx = torch.as_tensor(indices)
        if idx.dtype != torch.bool:
            idx = idx.to(torch.int64)
        return Dataset(self.images[idx], self.labels[idx], list(self.classes), self.name, self.mean, self.std)

    def class_counts(self) -> list[int]:
        """Samples per class, ``bincount`` of the labels with one entry per class."""
        return torch.bincount(self.labels, minlength=self.num_classes).tolist()


def concat_datasets(parts: list[Dataset], name: str | None = None) -> Dataset:
    """Several splits of one data set as one (same classes and image shape required)."""
    first = parts[0]
    for p in parts[1:]:
        if p.classes != first.classes or p.images.shape[1:] != first.images.shape[1:]:
            raise ValueError(f"cannot concatenate {p.name} {tuple(p.images.shape[1:])} with {first.name} "
                             f"{tuple(first.images.shape[1:])}: classes or image shapes differ")
    return Dataset(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]), list(first.classes),
                   name or first.name, first.mean, first.std)


# --------------------------------------------------------------------------------------------- locating files

def _missing(name: str, root: Path, looked: list[Path], what: str) -> DataNotFoundError:
    places = ", ".join(str(p) for p in looked)
    return DataNotFoundError(f"no {name} data under {root} (looked for {what} in {places}); "
                             f"fetch it with: ncollapse data fetch {name} --root {root}")


def _find(root: Path, subdirs: tuple[str, ...], names: list[str], gz: bool = False) -> tuple[Path | None, list[Path]]:
    """The first of root, root/sub, ... holding every file in ``names`` (with ``gz``, also ``name.gz``)."""
    looked = [root] + [root / s for s in subdirs]
    for d in looked:
        if all((d / n).is_file() or (gz and (d / f"{n}.gz").is_file()) for n in names):
            return d, looked
    return None, looked


def _pick(d: Path, name: str) -> Path:
    return d / name if (d / name).is_file() else d / f"{name}.gz"


def _root(root) -> Path:
    if root is None:
        raise TypeError("root must be a folder path; got None")
    return Path(root).expanduser()


# ------------------------------------------------------------------------------------------------- readers

def _idx_reader(name: str, subdirs: tuple[str, ...], classes: list[str]):
    def read(root: Path, split: str):
        prefix = "train" if split == "train" else "t10k"
        files = [f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"]
        d, looked = _find(root, subdirs, files, gz=True)
        if d is None:
            raise _missing(name, root, looked, " and ".join(f"{f}[.gz]" for f in files))
        images, labels = formats.read_idx_pair(_pick(d, files[0]), _pick(d, files[1]), len(classes))
        return images, labels, classes
    return read


def _cifar_reader(name: str, subdir: str, train_files: list[str], test_files: list[str], meta: str,
                  label_key: str, names_key: str):
    def read(root: Path, split: str):
        files = (train_files if split == "train" else test_files) + [meta]
        d, looked = _find(root, (subdir,), files)
        if d is None:
            raise _missing(name, root, looked, ", ".join(files))
        return formats.read_cifar([d / f for f in files[:-1]], d / meta, label_key, names_key)
    return read


def _read_svhn(root: Path, split: str):
    file = f"{split}_32x32.mat"
    d, looked = _find(root, ("svhn",), [file])
    if d is None:
        raise _missing("svhn", root, looked, file)
    return formats.read_svhn_mat(d / file)


def _read_stl10(root: Path, split: str):
    files = [f"{split}_X.bin", f"{split}_y.bin"]
    d, looked = _find(root, ("stl10_binary",), files)
    if d is None:
        raise _missing("stl10", root, looked, " and ".join(files))
    return formats.read_stl10(d / files[0], d / files[1], d / "class_names.txt")


def _read_folder(root: Path, split: str):
    d = root / split
    if not d.is_dir():
        if split != "train" or not root.is_dir():
            raise DataNotFoundError(f"no image folder {d}; give a root holding one sub-folder per class "
                                    f"(or {root}/train and {root}/test, each with one sub-folder per class)")
        d = root
    return formats.read_image_folder(d)


def _read_digits(root: Path, split: str):
    """scikit-learn digits, split 80/20 per class: class k's test part is its ⌊n_k/5⌋ smallest splitmix64 keys."""
    images, labels, classes = formats.read_sklearn_digits()
    counts = np.bincount(labels, minlength=len(classes)) // 5
    test = np.zeros(len(labels), dtype=bool)
    test[longtail_indices(labels, counts, seed=0).numpy()] = True
    keep = test if split == "test" else ~test
    return images[keep], labels[keep], classes


@dataclass(frozen=True)
class _Spec:
    read: object
    splits: tuple[str, ...]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()


_DIGITS = [str(k) for k in range(10)]
_FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

DATASETS: dict[str, _Spec] = {
    "mnist": _Spec(_idx_reader("mnist", ("mnist", "MNIST/raw"), _DIGITS), ("train", "test"), (0.1307,), (0.3081,)),
    "fashion-mnist": _Spec(_idx_reader("fashion-mnist", ("fashion-mnist", "FashionMNIST/raw"), _FASHION),
                           ("train", "test"), (0.2860,), (0.3530,)),
    "cifar10": _Spec(_cifar_reader("cifar10", "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)],
                                   ["test_batch"], "batches.meta", "labels", "label_names"),
                     ("train", "test"), (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": _Spec(_cifar_reader("cifar100", "cifar-100-python", ["train"], ["test"], "meta", "fine_labels",
                                    "fine_label_names"),
                      ("train", "test"), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": _Spec(_read_svhn, ("train", "test", "extra"), (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "stl10": _Spec(_read_stl10, ("train", "test")),
    "digits": _Spec(_read_digits, ("train", "test")),
    "folder": _Spec(_read_folder, ("train", "test")),
}


def _spec(name: str, split: str) -> _Spec:
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    spec = DATASETS[name]
    if split not in spec.splits:
        raise ValueError(f"{name} has no split {split!r}; choose one of {', '.join(spec.splits)}")
    return spec


def load_dataset(name: str, root=None, split: str = "train") -> Dataset:
    """Read one split of a named data set from its original files under ``root`` (ignored for ``digits``)."""
    spec = _spec(name, split)
    images, labels, classes = spec.read(Path() if name == "digits" else _root(root), split)
    mean, std = spec.mean, spec.std
    if name == "digits":
        mean, std = pixel_mean_std(torch.from_numpy(formats.read_sklearn_digits()[0]))
    return Dataset(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels), classes, name, mean, std)


def _svhn_longtail(root, imbalance: float, profile: str, seed: int) -> Dataset:
    """SVHN-LT as in SETF (Yang et al. 2022, code ``datasets/svhn.py``): the profile is applied to train and to
    extra separately with n_max = len(split)/K, a class short of its quota keeps all it has, and the two
    subsets are concatenated."""
    parts = []
    for split in ("train", "extra"):
        ds = load_dataset("svhn", root, split)
        have = ds.class_counts()
        want = longtail_counts(len(ds) / ds.num_classes, ds.num_classes, imbalance, profile)
        short = [k for k, (w, h) in enumerate(zip(want, have)) if w > h]
        if short:
            log.info("svhn %s: classes %s hold fewer images than the profile asks; all of them are kept (SETF)",
                     split, short)
        parts.append(ds.subset(longtail_indices(ds.labels, [min(w, h) for w, h in zip(want, have)], seed)))
    return concat_datasets(parts)


def load_longtail(name: str, root=None, imbalance: float = 0.01, n_max: int | None = None, profile: str = "exp",
                  seed: int = 0) -> Dataset:
    """The long-tailed training set of the literature protocol for ``name``.

    ``svhn``: SETF's SVHN-LT from train ∪ extra (``n_max`` must be None). ``stl10``: SETF's STL-10-LT, the profile
    applied to the 5,000 labelled training images (n_max = 500 per class). Every other name: ``make_longtail``
    of the training split (CIFAR-10/100-LT as in LDAM-DRW when the split is the full one).
    """
    _spec(name, "train")
    if name == "svhn":
        if n_max is not None:
            raise ValueError("svhn: SVHN-LT (SETF) derives n_max from each split's size; leave n_max unset")
        return _svhn_longtail(root, imbalance, profile, seed)
    return make_longtail(load_dataset(name, root, "train"), imbalance, n_max=n_max, profile=profile, seed=seed)

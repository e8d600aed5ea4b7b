"""Feature files: ``.npz`` with ``features`` (N, d), ``labels`` (N,), optional ``weight`` (K, d), ``bias`` (K,).

``open_features`` first checks every member: its ``.npy`` header against its byte size, then its CRC-32 and deflate
stream (read through once, in chunks), so a corrupt file fails with one line naming the member before any pass.
It then reads the labels and the classifier (small) and only the header of ``features``; its
``batches`` then stream the features from the archive (stored or deflate-compressed) a block of rows at a time,
so a file larger than memory can be measured (``metrics.measure_stream``). Every problem is a one-line error
naming the file.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..resources import check_input_file, check_npy_header, read_npy_header
from ..validation import check_classifier, check_features, check_features_labels, check_scalar

__all__ = ["FeatureSource", "open_features"]


@dataclass(frozen=True)
class FeatureSource:
    """An opened feature file: ``labels`` (None for features-only files), ``weight``/``bias`` in memory,
    ``features`` read from disk by ``batches``."""

    path: Path
    num_samples: int
    dim: int
    labels: torch.Tensor | None
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    _dtype: np.dtype
    _fortran: bool

    @property
    def num_classes(self) -> int:
        top = int(self.labels.max()) + 1 if self.labels is not None and self.labels.numel() else 0
        return max(top, 0 if self.weight is None else self.weight.shape[0])

    @property
    def max_count(self) -> int | None:
        """The largest class count (None for features-only files)."""
        if self.labels is None:
            return None
        return int(torch.bincount(self.labels).max()) if self.labels.numel() else 0

    def batches(self, batch_size: int = 16384) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """(features, labels) blocks of ``batch_size`` rows in file order, each checked (NaN/Inf, overflow) with
        its rows numbered from the start of the file."""
        check_scalar(batch_size, "batch_size", int, low=1)
        try:
            yield from self._read(batch_size)
        except _MEMBER_ERRORS as exc:  # the file changed after open_features checked it
            raise ValueError(f"{self.path}: member 'features.npy' is corrupt ({exc}); write the file again") from None

    def _read(self, batch_size: int):
        with np.load(self.path, allow_pickle=False) as archive:
            if self._fortran:  # column-major rows are not contiguous on disk: read the array whole
                whole = archive["features"]
                blocks = (whole[i:i + batch_size] for i in range(0, self.num_samples, batch_size))
                yield from self._checked(blocks, batch_size)
                return
            with archive.zip.open("features.npy") as fp:
                read_npy_header(fp)
                yield from self._checked(_blocks(fp, self.num_samples, self.dim, self._dtype, batch_size), batch_size)

    def _checked(self, blocks, batch_size):
        for i, block in enumerate(blocks):
            start = i * batch_size
            try:
                x = check_features(np.ascontiguousarray(block), first_row=start)
            except ValueError as exc:
                raise ValueError(f"{self.path}: {exc}") from None
            yield x, None if self.labels is None else self.labels[start:start + len(x)]


_MEMBER_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError)  # bad CRC, bad deflate block, truncation


def _check_members(zf: zipfile.ZipFile) -> None:
    """Every ``.npy`` member's header against the member's byte size (shape, dtype), then every member's
    CRC-32 and deflate stream, read through once in 1 MiB chunks, before any array is loaded or measured."""
    for info in zf.infolist():
        try:
            with zf.open(info) as fp:
                shape, _, dtype = read_npy_header(fp)
                offset = fp.tell()
        except _MEMBER_ERRORS as exc:
            raise ValueError(f"member {info.filename!r} is corrupt ({exc}); write the file again") from None
        except ValueError as exc:
            raise ValueError(f"member {info.filename!r} has no readable .npy header ({exc})") from None
        check_npy_header(shape, dtype, info.file_size - offset, f"member {info.filename!r}")
    for info in zf.infolist():
        try:
            with zf.open(info) as fp:
                while fp.read(1 << 20):
                    pass
        except _MEMBER_ERRORS as exc:
            raise ValueError(f"member {info.filename!r} is corrupt ({exc}); write the file again") from None


def _blocks(fp, rows: int, dim: int, dtype: np.dtype, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, rows, batch_size):
        block = np.empty((min(batch_size, rows - start), dim), dtype=dtype)
        view, filled = memoryview(block).cast("B"), 0
        while filled < view.nbytes:
            got = fp.readinto(view[filled:])
            if not got:
                raise ValueError(f"features ends after {start + filled // (dim * dtype.itemsize)} of {rows} rows "
                                 "(truncated file)")
            filled += got
        yield block


def _archive(path: Path, required: tuple[str, ...]) -> np.lib.npyio.NpzFile:
    wanted = " and ".join(repr(key) for key in required)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory; expected an .npz file with arrays {wanted}")
    check_input_file(path, "feature file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file (0 bytes); save one with "
                         f"numpy.savez(path, {', '.join(f'{k}=...' for k in required)})")
    if not zipfile.is_zipfile(path):  # never load a bare .npy whole: its header could ask for any size
        raise ValueError(f"{path}: not a readable .npz file (no zip directory: a single .npy array or another "
                         f"format); save one with "
                         f"numpy.savez(path, {', '.join(f'{k}=...' for k in required)})")
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc.__class__.__name__}); "
                         f"save one with numpy.savez(path, {', '.join(f'{k}=...' for k in required)})") from None
    missing = [key for key in required if key not in archive.files]
    if missing:
        archive.close()
        raise ValueError(f"{path}: missing array {missing[0]!r}; found {sorted(archive.files)}")
    return archive


def _stand_in(shape: tuple[int, ...], dtype: np.dtype) -> torch.Tensor:
    """A zero-stride tensor with the header's shape and the dtype the features are measured in (no memory), so
    the usual checks name the real shape and dtype."""
    try:
        tdtype = torch.from_numpy(np.empty(0, dtype=dtype)).dtype
    except TypeError:
        raise ValueError(f"features has dtype {dtype}; expected a real floating or integer array") from None
    if not (tdtype.is_floating_point or tdtype.is_complex):
        tdtype = torch.float64  # integer features are measured in float64
    return torch.zeros((), dtype=tdtype).expand(shape)


def open_features(path, labels: bool = True) -> FeatureSource:
    """Open a feature file: ``features`` and (with ``labels``) ``labels``, optional ``weight``/``bias``.
    Shapes, dtypes, labels and the classifier are checked here; values batch by batch in ``batches``."""
    path = Path(path)
    with _archive(path, ("features", "labels") if labels else ("features",)) as archive:
        try:
            _check_members(archive.zip)
            with archive.zip.open("features.npy") as fp:
                shape, fortran, dtype = read_npy_header(fp)
            stand_in = _stand_in(tuple(shape), dtype)
            if not labels:
                check_features(stand_in, finite=False)
                return FeatureSource(path, shape[0], shape[1], None, None, None, dtype, fortran)
            arrays = {key: archive[key] for key in ("labels", "weight", "bias") if key in archive.files}
            rows = arrays["weight"].shape[0] if "weight" in arrays and arrays["weight"].ndim == 2 else None
            _, y = check_features_labels(stand_in, arrays["labels"], rows, finite=False)
            weight = bias = None
            if "weight" in arrays:
                weight, bias = check_classifier(arrays["weight"], arrays.get("bias"), dim=shape[1])
            elif "bias" in arrays:
                raise ValueError("'bias' given without 'weight'")
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"{path}: {exc}") from None
    return FeatureSource(path, shape[0], shape[1], y, weight, bias, dtype, fortran)

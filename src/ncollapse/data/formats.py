"""Readers for the original distribution formats of the image data sets.

Every reader returns ``(images, labels, classes)``: a uint8 numpy array (N, C, H, W), an int64 array (N,)
and the class names. Each one checks what it reads (magic numbers, sizes, dtypes, keys, label range) and
raises a one-line ``ValueError`` naming the file and the problem.

Formats
-------
* IDX (LeCun et al. 1998; MNIST, Fashion-MNIST): big-endian header ``0 0 type ndim`` then ndim uint32 sizes.
* CIFAR python pickles (Krizhevsky 2009): dicts with ``data`` (N, 3072) uint8 and ``labels`` or
  ``fine_labels``; read with an unpickler that only admits the numpy classes the files use.
* SVHN cropped digits ``*_32x32.mat`` (Netzer et al. 2011): ``X`` (32, 32, 3, N) uint8, ``y`` (N, 1) in 1..10
  where 10 stands for the digit 0.
* STL-10 binary (Coates et al. 2011): ``*_X.bin`` raw uint8, 3×96×96 per image in column-major order;
  ``*_y.bin`` one byte per image in 1..10.
* An image folder: one sub-folder per class (sorted names), every image the same size.
* scikit-learn's bundled digits: 8×8 grey levels 0..16, scaled to 0..255.
"""

from __future__ import annotations

import gzip
import math
import pickle
import zlib
from pathlib import Path

import numpy as np

from ..resources import SIDE_FILE_LIMIT, check_input_file, check_memory, read_capped
from ..validation import check_labels

__all__ = [
    "read_idx",
    "read_idx_pair",
    "read_cifar",
    "read_svhn_mat",
    "read_stl10",
    "read_image_folder",
    "read_sklearn_digits",
]

_IDX_DTYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".webp"}


_GZIP_MAGIC = b"\x1f\x8b"
_DEFLATE_MAX_RATIO = 1032  # deflate expands at most about 1032:1 (RFC 1951 length codes: 258 bytes per 2 bits)


def _open_idx(raw):
    """A stream over the IDX bytes of ``raw``: gunzipped in a stream when the file starts with the gzip magic."""
    gzipped = raw.read(2) == _GZIP_MAGIC
    raw.seek(0)
    return (gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw), gzipped


def _read_exact(stream, count: int, path: Path) -> bytes:
    try:
        return stream.read(count)
    except (EOFError, OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: corrupt or truncated gzip data ({exc}); delete it and fetch it again") from None


def read_idx(path) -> np.ndarray:
    """One IDX array (gzip or not), e.g. MNIST images (N, 28, 28) or labels (N,).

    The header is read first; the data is then read (gzip: decompressed in a stream) up to exactly the size
    the header implies, after a memory check, so a file that expands beyond it is refused without reading on."""
    path = check_input_file(path, "IDX file")
    on_disk = path.stat().st_size
    with path.open("rb") as raw:
        stream, gzipped = _open_idx(raw)
        head = _read_exact(stream, 4, path)
        if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
            raise ValueError(f"{path}: not an IDX file (bad magic number {head.hex() or 'empty'}); "
                             "expected 0000 08 01 for labels or 0000 08 03 for images")
        dtype, ndim = _IDX_DTYPES[head[2]], head[3]
        sizes = _read_exact(stream, 4 * ndim, path)
        if len(sizes) < 4 * ndim:
            raise ValueError(f"{path}: truncated IDX header ({4 + len(sizes)} bytes, need {4 + 4 * ndim})")
        shape = tuple(int(s) for s in np.frombuffer(sizes, dtype=">u4"))
        need = math.prod(shape) * dtype.itemsize
        held = _DEFLATE_MAX_RATIO * on_disk if gzipped else on_disk - 4 - 4 * ndim
        if need > held or (not gzipped and need != held):
            bound = "at most " if gzipped else ""
            raise ValueError(f"{path}: IDX header promises shape {shape} ({need} bytes) but the file holds "
                             f"{bound}{held} bytes of data; the file is truncated or corrupt")
        check_memory(need, f"{path}: IDX array of shape {shape}", "free memory or check the file")
        data = _read_exact(stream, need, path)
        extra = _read_exact(stream, 1, path) if gzipped else b""
    if len(data) != need or extra:
        got = f"{len(data)} bytes" if len(data) != need else "more bytes"
        raise ValueError(f"{path}: IDX header promises shape {shape} ({need} bytes) but the file holds "
                         f"{got} of data; the file is truncated or corrupt")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx_pair(images_path, labels_path, num_classes: int = 10):
    """IDX images (N, H, W) and labels (N,) → uint8 (N, 1, H, W), int64 (N,), checked against each other."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{images_path}: expected uint8 images of shape (N, H, W); got {images.dtype} {images.shape}")
    if labels.ndim != 1:
        raise ValueError(f"{labels_path}: expected labels of shape (N,); got {labels.shape}")
    if len(labels) != len(images):
        raise ValueError(f"{labels_path} holds {len(labels)} labels but {images_path} holds {len(images)} images")
    labels = check_labels(labels, num_classes, name=f"{labels_path}: labels").numpy()
    return images[:, None], labels


def _check_label_range(labels: np.ndarray, num_classes: int, path) -> np.ndarray:
    check_labels(labels, num_classes, name=f"{path}: labels")
    return labels


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy globals used by the CIFAR files (no arbitrary code)."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        if name == "_reconstruct":  # numpy 2 moved numpy.core to numpy._core
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # numpy < 2
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        return super().find_class(module, name)


def _load_pickle(path: Path) -> dict:
    path = check_input_file(path, "CIFAR file")
    try:
        with path.open("rb") as fh:
            obj = _NumpyOnlyUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise ValueError(f"{path}: not a readable CIFAR pickle ({type(exc).__name__}: {exc}); "
                         "the file is truncated or corrupt") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict; got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _pickle_key(d: dict, key: str, path: Path):
    if key not in d:
        raise ValueError(f"{path}: missing key {key!r}; found keys {sorted(d)}")
    return d[key]


def read_cifar(batch_paths, meta_path, label_key: str = "labels", names_key: str = "label_names"):
    """CIFAR-10 (``labels``/``label_names``) or CIFAR-100 (``fine_labels``/``fine_label_names``) batches."""
    meta_path = Path(meta_path)
    names = _pickle_key(_load_pickle(meta_path), names_key, meta_path)
    if not isinstance(names, list) or not names:
        raise ValueError(f"{meta_path}: {names_key!r} must be a non-empty list of names")
    classes = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]
    images, labels = [], []
    for path in map(Path, batch_paths):
        d = _load_pickle(path)
        data = _pickle_key(d, "data", path)
        y = np.asarray(_pickle_key(d, label_key, path))
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise ValueError(f"{path}: 'data' must be uint8 of shape (N, 3072); got {got}")
        if y.ndim != 1 or len(y) != len(data) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{path}: {label_key!r} must hold {len(data)} integer labels; got {y.dtype} {y.shape}")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(_check_label_range(y.astype(np.int64), len(classes), path))
    return np.concatenate(images), np.concatenate(labels), classes


def read_svhn_mat(path):
    """SVHN ``{train,test,extra}_32x32.mat``; the label 10 (digit 0) becomes 0."""
    import scipy.io

    path = check_input_file(path, "SVHN file")
    try:
        mat = scipy.io.loadmat(path, variable_names=["X", "y"])
    except Exception as exc:  # scipy raises a zoo of types (ValueError, TypeError, OSError, ...) on bad files
        raise ValueError(f"{path}: not a readable MATLAB file ({type(exc).__name__}: {exc})") from None
    for key in ("X", "y"):
        if key not in mat:
            raise ValueError(f"{path}: missing variable {key!r}; an SVHN file holds 'X' and 'y'")
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[2] != 3:
        raise ValueError(f"{path}: 'X' must be uint8 of shape (H, W, 3, N); got {x.dtype} {x.shape}")
    if len(y) != x.shape[3]:
        raise ValueError(f"{path}: 'y' holds {len(y)} labels but 'X' holds {x.shape[3]} images")
    y = y.astype(np.int64)
    if y.size and (y.min() < 1 or y.max() > 10):
        raise ValueError(f"{path}: labels outside 1..10: min={int(y.min())}, max={int(y.max())}")
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y % 10, [str(k) for k in range(10)]


def read_stl10(x_path, y_path, names_path=None, size: int = 96):
    """STL-10 ``*_X.bin`` / ``*_y.bin`` (labels 1..10 become 0..9) and optional ``class_names.txt``."""
    x_path, y_path = check_input_file(x_path, "STL-10 images file"), check_input_file(y_path, "STL-10 labels file")
    check_memory(2 * x_path.stat().st_size, f"STL-10 images file {x_path}", "check that this is the STL-10 file")
    raw = np.fromfile(x_path, dtype=np.uint8)
    per_image = 3 * size * size
    if raw.size == 0 or raw.size % per_image:
        raise ValueError(f"{x_path}: {raw.size} bytes is not a whole number of {3}x{size}x{size} images; "
                         "the file is truncated or corrupt")
    images = raw.reshape(-1, 3, size, size).transpose(0, 1, 3, 2)  # column-major per image
    y = np.fromfile(y_path, dtype=np.uint8).astype(np.int64)
    if len(y) != len(images):
        raise ValueError(f"{y_path} holds {len(y)} labels but {x_path} holds {len(images)} images")
    if y.size and (y.min() < 1 or y.max() > 10):
        raise ValueError(f"{y_path}: labels outside 1..10: min={int(y.min())}, max={int(y.max())}")
    classes = [str(k) for k in range(10)]
    if names_path is not None and (Path(names_path).exists() or Path(names_path).is_symlink()):
        text = read_capped(names_path, SIDE_FILE_LIMIT, "STL-10 class names file").decode("utf-8", errors="replace")
        names = [n.strip() for n in text.splitlines() if n.strip()]
        if len(names) != 10:
            raise ValueError(f"{names_path}: expected 10 class names, one per line; got {len(names)}")
        classes = names
    return np.ascontiguousarray(images), y - 1, classes


def read_image_folder(root):
    """Images in ``root/<class>/*`` (classes = sorted sub-folder names); grey if every image is grey, else RGB."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise ValueError(f"{root}: no class sub-folders; an image folder holds one sub-folder per class")
    files, labels = [], []
    for k, d in enumerate(class_dirs):
        found = sorted(p for p in d.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not found:
            raise ValueError(f"{d}: class folder holds no images ({', '.join(sorted(_IMAGE_SUFFIXES))})")
        files += found
        labels += [k] * len(found)
    arrays = []
    for f in files:
        check_input_file(f, "image file")
        try:
            with Image.open(f) as im:
                arrays.append(np.asarray(im.convert("L" if im.mode in ("1", "L", "I;16", "I") else "RGB")))
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"{f}: unreadable image ({exc})") from None
    channels = 1 if all(a.ndim == 2 for a in arrays) else 3
    arrays = [np.broadcast_to(a[None], (channels, *a.shape)) if a.ndim == 2 else a.transpose(2, 0, 1)
              for a in arrays]
    shape = arrays[0].shape
    for f, a in zip(files, arrays):
        if a.shape != shape:
            raise ValueError(f"{f}: image of shape {a.shape[1:]} but {files[0]} is {shape[1:]}; "
                             "resize the images to one size first")
    return np.stack(arrays).astype(np.uint8), np.asarray(labels, dtype=np.int64), [d.name for d in class_dirs]


def read_sklearn_digits():
    """scikit-learn's bundled 8×8 digits (1,797 images); grey levels 0..16 scaled by 255/16 and rounded."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return images, bunch.target.astype(np.int64), [str(k) for k in bunch.target_names]


"""Readers of the original formats, the registry and the normalisation constants."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from ncollapse.data import DataNotFoundError, Dataset, load_dataset
from ncollapse.data import formats
from ncollapse.data.datasets import pixel_mean_std

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "mnist").is_dir(), reason=f"real data not found at {DATA}")


# ----------------------------------------------------------------------------------------------------- IDX

def _idx_bytes(array: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def test_idx_roundtrip_plain_and_gzip(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    labels = np.array([0, 3, 9, 1, 2], dtype=np.uint8)
    (tmp_path / "i").write_bytes(_idx_bytes(images))
    (tmp_path / "l.gz").write_bytes(gzip.compress(_idx_bytes(labels)))
    x, y = formats.read_idx_pair(tmp_path / "i", tmp_path / "l.gz")
    assert x.shape == (5, 1, 4, 3) and x.dtype == np.uint8 and np.array_equal(x[:, 0], images)
    assert y.dtype == np.int64 and y.tolist() == [0, 3, 9, 1, 2]


def test_idx_rejects_bad_magic_truncation_and_labels(tmp_path):
    good = _idx_bytes(np.zeros((3, 2, 2), np.uint8))
    (tmp_path / "magic").write_bytes(b"\x01\x02" + good[2:])
    with pytest.raises(ValueError, match=r"magic.*magic|bad magic"):
        formats.read_idx(tmp_path / "magic")
    (tmp_path / "short").write_bytes(good[:-3])
    with pytest.raises(ValueError, match=r"short.*truncated"):
        formats.read_idx(tmp_path / "short")
    (tmp_path / "short.gz").write_bytes(gzip.compress(good)[:-6])
    with pytest.raises(ValueError, match=r"short\.gz: corrupt or truncated gzip"):
        formats.read_idx(tmp_path / "short.gz")
    (tmp_path / "img").write_bytes(good)
    (tmp_path / "lab").write_bytes(_idx_bytes(np.array([0, 1, 12], np.uint8)))
    with pytest.raises(ValueError, match=r"lab: labels outside \[0, 10\): min=0, max=12"):
        formats.read_idx_pair(tmp_path / "img", tmp_path / "lab")
    (tmp_path / "lab2").write_bytes(_idx_bytes(np.array([0, 1], np.uint8)))
    with pytest.raises(ValueError, match="2 labels but .* 3 images"):
        formats.read_idx_pair(tmp_path / "img", tmp_path / "lab2")


@needs_data
def test_mnist_real_files_and_parent_root():
    train = load_dataset("mnist", DATA, "train")  # parent folder
    test = load_dataset("mnist", DATA / "mnist", "test")  # the folder itself
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.class_counts() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert train.labels[:5].tolist() == [5, 0, 4, 1, 9]  # the well-known first MNIST labels
    # literature constants equal the exact training-pixel statistics (Fashion checked in the same way)
    mean, std = pixel_mean_std(train.images)
    assert train.mean == (0.1307,) and abs(mean[0] - 0.1307) < 5e-5 and abs(std[0] - 0.3081) < 5e-5
    fashion = load_dataset("fashion-mnist", DATA, "train")
    mean, std = pixel_mean_std(fashion.images)
    assert fashion.class_counts() == [6000] * 10 and fashion.classes[0] == "T-shirt/top"
    assert abs(mean[0] - fashion.mean[0]) < 5e-5 and abs(std[0] - fashion.std[0]) < 5e-5


def test_pixel_mean_std_matches_float64_reference():
    images = torch.randint(0, 256, (7, 3, 5, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    mean, std = pixel_mean_std(images)
    ref = images.to(torch.float64) / 255
    assert np.allclose(mean, ref.mean((0, 2, 3)).numpy(), atol=1e-12)
    assert np.allclose(std, ref.std((0, 2, 3), unbiased=False).numpy(), atol=1e-12)


# --------------------------------------------------------------------------------------------------- CIFAR

@needs_data
def test_cifar_real_subsets_match_direct_unpickling():
    root = DATA / "cifar-10-subset"
    train, test = load_dataset("cifar10", root, "train"), load_dataset("cifar10", root / "cifar-10-batches-py", "test")
    assert len(train) == 5438 and len(test) == 1017 and train.images.shape[1:] == (3, 32, 32)
    assert train.classes[:3] == ["airplane", "automobile", "bird"] and train.num_classes == 10
    with open(root / "cifar-10-batches-py" / "data_batch_1", "rb") as fh:  # independent reference read
        ref = pickle.load(fh, encoding="bytes")
    n = len(ref[b"labels"])
    assert np.array_equal(train.images[:n].numpy().reshape(n, -1), ref[b"data"])
    assert train.labels[:n].tolist() == ref[b"labels"]
    c100 = load_dataset("cifar100", DATA / "cifar-100-subset", "train")
    assert len(c100) == 1117 and c100.num_classes == 100 and min(c100.class_counts()) >= 1
    assert len(load_dataset("cifar100", DATA / "cifar-100-subset", "test")) == 916


def _write_pickle(path, obj):
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)


def test_cifar_rejects_wrong_keys_labels_truncation_and_code(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    _write_pickle(d / "batches.meta", {b"label_names": [b"a", b"b"]})
    data = np.zeros((3, 3072), np.uint8)
    _write_pickle(d / "bad_key", {b"pixels": data, b"labels": [0, 1, 1]})
    with pytest.raises(ValueError, match=r"bad_key: missing key 'data'"):
        formats.read_cifar([d / "bad_key"], d / "batches.meta")
    _write_pickle(d / "bad_label", {b"data": data, b"labels": [0, 1, 2]})
    with pytest.raises(ValueError, match=r"bad_label: labels outside \[0, 2\)"):
        formats.read_cifar([d / "bad_label"], d / "batches.meta")
    _write_pickle(d / "bad_shape", {b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 1]})
    with pytest.raises(ValueError, match=r"bad_shape: 'data' must be uint8 of shape \(N, 3072\)"):
        formats.read_cifar([d / "bad_shape"], d / "batches.meta")
    _write_pickle(d / "good", {b"data": data, b"labels": [0, 1, 1]})
    (d / "cut").write_bytes((d / "good").read_bytes()[:500])
    with pytest.raises(ValueError, match=r"cut: not a readable CIFAR pickle"):
        formats.read_cifar([d / "cut"], d / "batches.meta")

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, ("echo pwned",))

    _write_pickle(d / "evil", {b"data": Evil(), b"labels": [0]})
    with pytest.raises(ValueError, match=r"evil: .*refusing to load global"):
        formats.read_cifar([d / "evil"], d / "batches.meta")


# ---------------------------------------------------------------------------------------------------- SVHN

def _write_svhn(path: Path, n: int, seed: int = 0, labels=None):
    import scipy.io

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = rng.integers(1, 11, (n, 1)).astype(np.uint8) if labels is None else np.asarray(labels, np.uint8)[:, None]
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"X": x, "y": y})
    return x, y[:, 0]


def test_svhn_mat_layout_and_label_ten(tmp_path):
    x, y = _write_svhn(tmp_path / "svhn" / "train_32x32.mat", 6, labels=[10, 1, 2, 10, 9, 5])
    ds = load_dataset("svhn", tmp_path, "train")
    assert ds.images.shape == (6, 3, 32, 32) and ds.labels.tolist() == [0, 1, 2, 0, 9, 5]
    assert int(ds.images[4, 2, 7, 3]) == int(x[7, 3, 2, 4])  # images[n, c, h, w] = X[h, w, c, n]
    assert ds.mean == (0.4377, 0.4438, 0.4728)
    import scipy.io
    scipy.io.savemat(tmp_path / "nolabels.mat", {"X": x})
    with pytest.raises(ValueError, match=r"nolabels\.mat: missing variable 'y'"):
        formats.read_svhn_mat(tmp_path / "nolabels.mat")
    _write_svhn(tmp_path / "bad.mat", 2, labels=[0, 11])
    with pytest.raises(ValueError, match=r"bad\.mat: labels outside 1\.\.10"):
        formats.read_svhn_mat(tmp_path / "bad.mat")
    (tmp_path / "cut.mat").write_bytes((tmp_path / "svhn" / "train_32x32.mat").read_bytes()[:3000])
    with pytest.raises(ValueError, match=r"cut\.mat"):
        formats.read_svhn_mat(tmp_path / "cut.mat")


# -------------------------------------------------------------------------------------------------- STL-10

def _write_stl(folder: Path, split: str, images: np.ndarray, labels1: np.ndarray, names=True):
    folder.mkdir(parents=True, exist_ok=True)
    images.transpose(0, 1, 3, 2).tofile(folder / f"{split}_X.bin")  # column-major per image
    labels1.astype(np.uint8).tofile(folder / f"{split}_y.bin")
    if names:
        (folder / "class_names.txt").write_text("\n".join(f"c{k}" for k in range(10)) + "\n")


def test_stl10_binary_layout(tmp_path):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (4, 3, 96, 96), dtype=np.uint8)
    _write_stl(tmp_path / "stl10_binary", "test", images, np.array([1, 10, 5, 2]))
    ds = load_dataset("stl10", tmp_path, "test")
    assert np.array_equal(ds.images.numpy(), images) and ds.labels.tolist() == [0, 9, 4, 1]
    assert ds.classes[9] == "c9"
    raw = (tmp_path / "stl10_binary" / "test_X.bin").read_bytes()
    (tmp_path / "stl10_binary" / "test_X.bin").write_bytes(raw[:-10])
    with pytest.raises(ValueError, match=r"test_X\.bin: .*not a whole number"):
        load_dataset("stl10", tmp_path, "test")
    (tmp_path / "stl10_binary" / "test_X.bin").write_bytes(raw)
    np.array([1, 11, 5, 2], np.uint8).tofile(tmp_path / "stl10_binary" / "test_y.bin")
    with pytest.raises(ValueError, match=r"test_y\.bin: labels outside 1\.\.10"):
        load_dataset("stl10", tmp_path, "test")


# ---------------------------------------------------------------------------------------- folder, digits

def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = {}
    for cls, n in (("cat", 2), ("dog", 3)):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(n):
            a = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
            Image.fromarray(a).save(tmp_path / "train" / cls / f"{i}.png")
            pixels[(cls, i)] = a
    ds = load_dataset("folder", tmp_path, "train")
    assert ds.classes == ["cat", "dog"] and ds.labels.tolist() == [0, 0, 1, 1, 1]
    assert np.array_equal(ds.images[3].numpy(), pixels[("dog", 1)].transpose(2, 0, 1))
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "train" / "dog" / "9.png")
    with pytest.raises(ValueError, match=r"9\.png: image of shape \(4, 4\)"):
        load_dataset("folder", tmp_path, "train")
    with pytest.raises(DataNotFoundError, match="no image folder"):
        load_dataset("folder", tmp_path, "test")


def test_digits_split_is_stratified_deterministic_and_disjoint():
    train, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    assert len(train) + len(test) == 1797 and train.images.shape[1:] == (1, 8, 8)
    full = np.bincount(np.concatenate([train.labels.numpy(), test.labels.numpy()]), minlength=10)
    assert test.class_counts() == (full // 5).tolist()
    assert torch.equal(load_dataset("digits", "/ignored", split="test").images, test.images)
    assert train.mean == test.mean and int(test.images.max()) == 255  # 16 grey levels scaled to 255
    from sklearn.datasets import load_digits
    ref = np.rint(load_digits().images * 255 / 16).astype(np.uint8)
    assert np.array_equal(np.sort(ref.reshape(1797, -1).sum(1)),
                          np.sort(torch.cat([train.images, test.images]).reshape(1797, -1).sum(1).numpy()))


# ---------------------------------------------------------------------------------------- Dataset, registry

def test_dataset_validation_subset_and_registry_errors(tmp_path):
    ds = Dataset(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 1, 2]), ["a", "b", "c"], "toy")
    sub = ds.subset(torch.tensor([1, 2]))
    assert sub.class_counts() == [0, 2, 0] and sub.classes == ["a", "b", "c"] and sub.num_classes == 3
    assert ds.subset(ds.labels == 1).labels.tolist() == [1, 1]
    with pytest.raises(ValueError, match=r"toy: labels outside \[0, 2\)"):
        Dataset(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 2]), ["a", "b"], "toy")
    with pytest.raises(ValueError, match="images must be uint8"):
        Dataset(torch.zeros(2, 1, 2, 2), torch.tensor([0, 1]), ["a", "b"])
    with pytest.raises(ValueError, match="unknown data set 'cifar11'"):
        load_dataset("cifar11", tmp_path)
    with pytest.raises(ValueError, match="stl10 has no split 'extra'"):
        load_dataset("stl10", tmp_path, "extra")
    with pytest.raises(DataNotFoundError, match=rf"ncollapse data fetch cifar100 --root {tmp_path}"):
        load_dataset("cifar100", tmp_path)

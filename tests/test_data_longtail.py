"""Long-tail profiles, seeded selection, make_longtail and the SETF SVHN-LT / STL-10-LT protocols."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ncollapse.data import Dataset, format_counts, load_dataset, load_longtail, make_longtail
from ncollapse.data.longtail import longtail_counts, longtail_indices, max_feasible_n_max, selection_keys

from test_data_formats import _write_stl, _write_svhn

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _splitmix64_ref(x: int) -> int:
    """splitmix64 (Steele et al. 2014) with Python integers, as an independent reference."""
    m = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def test_literature_totals_and_step_profile():
    assert sum(longtail_counts(5000, 10, 0.01)) == 12406  # CIFAR-10-LT, LDAM-DRW
    assert sum(longtail_counts(500, 100, 0.01)) == 10847  # CIFAR-100-LT
    assert longtail_counts(5000, 10, 0.01)[-1] == 50
    assert longtail_counts(5000, 10, 0.1, "step") == [5000] * 5 + [500] * 5
    # fractional n_max (SETF's SVHN train: 73,257/10) rounds the product, not n_max
    assert longtail_counts(7325.7, 10, 0.01)[6] == 340 and longtail_counts(7325, 10, 0.01)[6] == 339


def test_selection_keys_are_splitmix64_of_seed_and_index():
    seed = 7
    keys = selection_keys(5, seed)
    ref = [_splitmix64_ref((seed * 0x9E3779B97F4A7C15 + i) & ((1 << 64) - 1)) for i in range(5)]
    assert keys.tolist() == ref


def test_selection_keeps_smallest_keys_per_class():
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 0, 2])
    keep = longtail_indices(labels, [2, 1, 1], seed=3)
    keys = selection_keys(8, 3)
    expected = sorted(sorted(np.nonzero(labels.numpy() == k)[0], key=lambda i: keys[i])[:n]
                      for k, n in enumerate([2, 1, 1]))
    assert keep.tolist() == sorted(i for group in expected for i in group)
    assert torch.equal(keep, longtail_indices(labels, [2, 1, 1], seed=3))
    assert not torch.equal(longtail_indices(torch.zeros(100, dtype=torch.long), [50], seed=1),
                           longtail_indices(torch.zeros(100, dtype=torch.long), [50], seed=2))


def test_max_feasible_n_max_is_the_largest_that_fits():
    have = [100, 80, 90, 5]
    n = max_feasible_n_max(have, 0.1)
    fits = lambda m: all(w <= h for w, h in zip(longtail_counts(m, 4, 0.1), have))  # noqa: E731
    assert fits(n) and not fits(n + 1)
    assert max_feasible_n_max([500] * 10, 0.01) == 500


def _toy(counts, name="toy"):
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    images = (torch.arange(len(labels)) % 256).to(torch.uint8).reshape(-1, 1, 1, 1)
    return Dataset(images, labels, [f"c{k}" for k in range(len(counts))], name, (0.5,), (0.25,))


def test_make_longtail_counts_seed_and_errors():
    ds = _toy([300, 320, 310, 305])
    lt = make_longtail(ds, 0.1, seed=4)
    assert lt.class_counts() == longtail_counts(300, 4, 0.1) == [300, 139, 64, 30]
    assert lt.mean == (0.5,) and lt.name == "toy"
    assert torch.equal(make_longtail(ds, 0.1, seed=4).images, lt.images)
    assert make_longtail(ds, 0.1, n_max=200, profile="step").class_counts() == [200, 200, 20, 20]
    with pytest.raises(ValueError, match="class 0 has 300 samples but the long-tail profile asks for 310"):
        make_longtail(ds, 0.1, n_max=310)


def test_format_counts_summary():
    text = format_counts([50, 5], ["head", "tail"])
    assert text.splitlines() == ["2 classes, 55 samples, n_min/n_max = 0.1", "  head       50", "  tail        5"]


@pytest.mark.skipif(not (DATA / "fashion-mnist").is_dir(), reason=f"real data not found at {DATA}")
def test_fashion_mnist_lt_full_profile():
    lt = load_longtail("fashion-mnist", DATA, 0.01)
    assert lt.class_counts() == longtail_counts(6000, 10, 0.01) and lt.class_counts()[-1] == 60


def test_svhn_lt_follows_setf_train_plus_extra(tmp_path):
    rng = np.random.default_rng(0)
    train_labels = np.repeat(np.r_[10, 1:10], [3, 40, 30, 20, 20, 20, 20, 20, 20, 20])  # 213 images
    extra_labels = np.repeat(np.r_[10, 1:10], 50)  # 500 images
    _write_svhn(tmp_path / "svhn" / "train_32x32.mat", len(train_labels), labels=rng.permutation(train_labels))
    _write_svhn(tmp_path / "svhn" / "extra_32x32.mat", len(extra_labels), 1, labels=extra_labels)
    lt = load_longtail("svhn", tmp_path, 0.1)
    want_train = [min(w, h) for w, h in zip(longtail_counts(21.3, 10, 0.1), [3, 40, 30] + [20] * 7)]
    want_extra = longtail_counts(50.0, 10, 0.1)
    assert want_train[0] == 3  # class 0 (digit 0) is short of its quota and keeps all it has, as in SETF
    assert lt.class_counts() == [a + b for a, b in zip(want_train, want_extra)]
    with pytest.raises(ValueError, match="leave n_max unset"):
        load_longtail("svhn", tmp_path, 0.1, n_max=10)


def test_stl10_lt_from_labelled_train(tmp_path):
    labels = np.repeat(np.arange(1, 11), 20)
    _write_stl(tmp_path / "stl10_binary", "train", np.zeros((200, 3, 96, 96), np.uint8), labels, names=False)
    lt = load_longtail("stl10", tmp_path, 0.1)
    assert lt.class_counts() == longtail_counts(20, 10, 0.1)
    assert load_dataset("stl10", tmp_path).classes == [str(k) for k in range(10)]

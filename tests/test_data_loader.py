"""TensorLoader: batched augmentation, normalisation, shuffling, balancing, sharding, resume; mixup."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ncollapse.data.loader import TensorLoader, mixup, random_crop_flip


def _images(n, c=1, h=6, w=6, seed=0):
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _candidates(image: torch.Tensor, pad: int) -> list[torch.Tensor]:
    """Every zero-padded crop of one image, flipped and not (independent reference)."""
    _, h, w = image.shape
    padded = F.pad(image, (pad, pad, pad, pad))
    crops = [padded[:, i:i + h, j:j + w] for i in range(2 * pad + 1) for j in range(2 * pad + 1)]
    return crops + [c.flip(-1) for c in crops]


def test_crop_flip_outputs_are_padded_crops_and_cover_all_shifts():
    x = _images(64, c=2, h=5, w=7)
    out = random_crop_flip(x, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == x.shape and out.dtype == torch.uint8
    hits = set()
    for img, res in zip(x, out):
        matches = [k for k, c in enumerate(_candidates(img, 2)) if torch.equal(c, res)]
        assert matches, "output is not a padded crop (or its mirror) of the input"
        hits.add(matches[0])
    assert len(hits) > 25  # 50 possible (25 shifts x 2 flips); 64 draws reach most of them
    flip_only = random_crop_flip(x, torch.Generator().manual_seed(1), pad=2, crop=False)
    flipped = torch.tensor([torch.equal(a, b.flip(-1)) for a, b in zip(flip_only, x)])
    same = torch.tensor([torch.equal(a, b) for a, b in zip(flip_only, x)])
    assert bool((flipped | same).all()) and 10 < int(flipped.sum()) < 54


def test_normalisation_order_and_len_without_augmentation():
    x, y = _images(10, c=3, h=4, w=4), torch.arange(10) % 3
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    loader = TensorLoader(x, y, 4, shuffle=False, augment=(), mean=mean, std=std)
    batches = list(loader)
    assert len(loader) == 3 == len(batches) and [len(b[1]) for b in batches] == [4, 4, 2]
    xs = torch.cat([b[0] for b in batches])
    ref = (x.double() / 255 - torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(
        std, dtype=torch.float64).view(1, 3, 1, 1)
    assert xs.dtype == torch.float32 and torch.allclose(xs.double(), ref, atol=1e-5)
    assert torch.equal(torch.cat([b[1] for b in batches]), y)
    assert len(TensorLoader(x, y, 4, drop_last=True)) == 2


def test_each_epoch_is_a_new_seeded_permutation():
    y = torch.arange(50)
    loader = TensorLoader(_images(50), y, 8, augment=(), seed=3)
    e0 = torch.cat([b for _, b in loader])
    e1 = torch.cat([b for _, b in loader])
    assert sorted(e0.tolist()) == list(range(50)) == sorted(e1.tolist()) and not torch.equal(e0, e1)
    again = torch.cat([b for _, b in TensorLoader(_images(50), y, 8, augment=(), seed=3)])
    assert torch.equal(e0, again)


def test_ddp_shards_cover_everything_with_equal_batches():
    n, world = 11, 3
    y = torch.arange(n)
    shards = [TensorLoader(_images(n), y, 2, augment=(), seed=5, rank=r, world_size=world) for r in range(world)]
    lengths = {len(s) for s in shards}
    seen = [torch.cat([b for _, b in s]) for s in shards]
    assert lengths == {2} and all(len(s) == 4 for s in seen)  # ceil(11/3) = 4 samples per rank
    assert set(torch.cat(seen).tolist()) == set(range(n)) and len(torch.cat(seen)) == 12  # one repeated (padding)


def test_balanced_sampling_equalises_classes():
    y = torch.cat([torch.zeros(900, dtype=torch.long), torch.ones(100, dtype=torch.long)])
    loader = TensorLoader(_images(1000, h=2, w=2), y, 250, augment=(), balanced=True, seed=0)
    drawn = torch.cat([b for _ in range(4) for _, b in loader])
    assert len(drawn) == 4000 and abs(float(drawn.float().mean()) - 0.5) < 0.04
    minority = drawn[drawn == 1]
    assert len(minority) > 1800


def test_resume_mid_epoch_sees_the_same_batches():
    x, y = _images(40, c=1, h=8, w=8), torch.arange(40) % 4
    full = TensorLoader(x, y, 6, seed=9, mean=(0.5,), std=(0.5,))
    reference = [b for _ in range(3) for b in full]
    first = TensorLoader(x, y, 6, seed=9, mean=(0.5,), std=(0.5,))
    got = list(first)
    it = iter(first)
    got += [next(it) for _ in range(3)]
    state = first.state_dict()
    resumed = TensorLoader(x, y, 6, seed=9, mean=(0.5,), std=(0.5,))
    resumed.load_state_dict(state)
    got += list(resumed) + list(resumed)
    assert len(got) == len(reference) == 21
    for (xa, ya), (xb, yb) in zip(got, reference):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    with pytest.raises(ValueError, match="seed 9 but this loader has seed 1"):
        TensorLoader(x, y, 6, seed=1).load_state_dict(state)


def test_loader_input_errors():
    x, y = _images(4), torch.arange(4)
    with pytest.raises(ValueError, match="unknown augmentation 'cutout'; allowed: crop, flip"):
        TensorLoader(x, y, 2, augment=("crop", "cutout"))
    with pytest.raises(ValueError, match="mean and std need 1 entries"):
        TensorLoader(x, y, 2, mean=(0.1, 0.2, 0.3), std=(1, 1, 1))
    with pytest.raises(ValueError, match="rank == 2, must be <= 1"):
        TensorLoader(x, y, 2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="images must be uint8"):
        TensorLoader(x.float(), y, 2)
    with pytest.raises(ValueError, match="inconsistent numbers of samples: 4 and 3"):
        TensorLoader(x, y[:3], 2)


def test_mixup_formula_and_beta_distribution():
    from scipy import stats

    y = torch.tensor([0, 1, 2, 3, 4])
    x = F.one_hot(y, 5).float()
    g = torch.Generator().manual_seed(0)
    x_mix, y_a, y_b, lam = mixup(x, y, 0.4, g)
    assert torch.equal(y_a, y) and sorted(y_b.tolist()) == [0, 1, 2, 3, 4]
    assert torch.allclose(x_mix, lam * F.one_hot(y_a, 5) + (1 - lam) * F.one_hot(y_b, 5))
    lams = np.array([mixup(x, y, 0.4, g)[3] for _ in range(1500)])
    assert stats.kstest(lams, stats.beta(0.4, 0.4).cdf).pvalue > 1e-3
    assert abs(lams.var() - 1 / (4 * (2 * 0.4 + 1))) < 0.01  # Var Beta(a, a) = 1 / (4 (2a + 1))
    with pytest.raises(ValueError, match="alpha == 0"):
        mixup(x, y, 0.0, g)


def test_loader_augmented_batches_are_padded_crops_of_their_images():
    x = _images(12, c=3, h=5, w=5, seed=2)
    y = torch.arange(12)
    loader = TensorLoader(x, y, 5, shuffle=True, pad=1, seed=4)  # mean 0, std 1: x = u / 255
    for xb, yb in loader:
        pixels = torch.round(xb * 255).to(torch.uint8)
        for img, label in zip(pixels, yb):
            assert any(torch.equal(c, img) for c in _candidates(x[label], 1))

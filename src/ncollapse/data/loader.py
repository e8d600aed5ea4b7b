"""A tensor-resident loader: the whole split lives on the device as uint8, batches are slices of an index.

Per batch the loader gathers the images, applies the augmentations as batched tensor ops on the device and
normalises: random crop with zero padding (He et al. 2016, §4.2: pad 4, crop 32) and horizontal flip are one
``gather`` with per-image row/column offsets (the flip is a ``torch.where`` on the column index), then
x = (u/255 − mean)/std. There is no PIL and no per-image Python.

Randomness is a pure function of (seed, epoch, batch, rank): each epoch's order comes from a generator seeded
with splitmix64(seed, epoch), each batch's augmentation from one seeded with splitmix64(seed, epoch, batch,
rank). ``state_dict`` therefore needs only the epoch and the position inside it, and a resumed run sees
exactly the batches an uninterrupted one would.

DDP: every rank draws the same order, pads it to a multiple of ``world_size`` by repeating its start (as
``torch.utils.data.DistributedSampler``) and takes every ``world_size``-th index from ``rank``, so every rank
has the same number of batches. ``balanced=True`` replaces the permutation by N draws with replacement,
class k drawn with probability 1/K and uniformly inside the class (class-balanced sampling, Kang et al. 2020).
"""

from __future__ import annotations

import math
from numbers import Integral

import torch

from ..validation import check_labels, check_scalar

__all__ = ["TensorLoader", "mixup", "random_crop_flip", "AUGMENTATIONS"]

AUGMENTATIONS = ("crop", "flip")
_MASK64 = (1 << 64) - 1


def _splitmix64(*values: int) -> int:
    """A 63-bit seed from integers, folded through splitmix64 (Steele et al. 2014) one value at a time."""
    z = 0
    for v in values:
        z = (z + (int(v) & _MASK64) + 0x9E3779B97F4A7C15) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        z ^= z >> 31
    return z >> 1


def _crop_flip_offsets(batch: int, height: int, width: int, pad: int, generator: torch.Generator, device,
                       crop: bool, flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Source rows (B, H) and columns (B, W) of each output pixel in the zero-padded images.

    Output pixel (i, j) of image b reads padded pixel (i + dy_b, j' + dx_b) with dy, dx uniform in [0, 2·pad]
    (pad when not cropping) and j' = W−1−j when image b is flipped, j otherwise.
    """
    rows = torch.arange(height, device=device).expand(batch, height)
    cols = torch.arange(width, device=device).expand(batch, width)
    if flip:
        mirror = torch.randint(0, 2, (batch, 1), generator=generator, device=generator.device).to(device).bool()
        cols = torch.where(mirror, width - 1 - cols, cols)
    if crop and pad > 0:
        shift = torch.randint(0, 2 * pad + 1, (2, batch, 1), generator=generator, device=generator.device).to(device)
    else:
        shift = torch.full((2, batch, 1), pad, device=device)
    return rows + shift[0], cols + shift[1]


def _take(padded: torch.Tensor, index: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Images ``index`` of ``padded`` (N, C, Hp, Wp) read at ``rows``/``cols``: a row gather, then a pixel gather."""
    _, C, Hp, Wp = padded.shape
    B, H, W = index.shape[0], rows.shape[1], cols.shape[1]
    pixels = (rows * Wp).unsqueeze(2) + cols.unsqueeze(1)  # (B, H, W) positions in the padded image
    batch = padded.index_select(0, index).view(B, C, Hp * Wp)
    return batch.gather(2, pixels.view(B, 1, H * W).expand(B, C, H * W)).view(B, C, H, W)


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, pad: int = 4, crop: bool = True,
                     flip: bool = True) -> torch.Tensor:
    """Zero-padded random crop and horizontal flip of a batch (B, C, H, W), any dtype, as one ``gather``.

    Output pixel (i, j) of image b is input pixel (i + dy_b − pad, j' + dx_b − pad), 0 outside the image,
    with j' = W−1−j for flipped images (He et al. 2016, §4.2: pad 4, random 32×32 crop, horizontal flip).
    """
    B, _, H, W = images.shape
    rows, cols = _crop_flip_offsets(B, H, W, pad, generator, images.device, crop, flip)
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    return _take(padded, torch.arange(B, device=images.device), rows, cols)


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float, generator: torch.Generator):
    """Mixup (Zhang et al. 2018, eq. 1): x̃ = λ x + (1−λ) x[π], λ ~ Beta(α, α), π a random permutation.

    λ is drawn by inverting the Beta CDF at one uniform from ``generator`` (a CUDA generator costs one device
    sync; pass a CPU one to avoid it). Returns ``(x_mix, y, y[π], λ)``; train on λ·loss(y) + (1−λ)·loss(y[π]).
    """
    from scipy.special import betaincinv  # deliberately lazy: scipy is a heavy import only mixup needs

    check_scalar(alpha, "alpha", low=0.0, low_open=True)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator; got {type(generator).__name__}")
    u = float(torch.rand((), generator=generator, device=generator.device))
    lam = float(betaincinv(alpha, alpha, u))
    perm = torch.randperm(x.shape[0], generator=generator, device=generator.device).to(x.device)
    return lam * x + (1.0 - lam) * x[perm], y, y[perm], lam


class TensorLoader:
    """Batches ``(x, y)`` of a uint8 image tensor kept on ``device``: x float32 normalised, y int64.

    ``augment`` names a subset of ``AUGMENTATIONS``; ``mean``/``std`` are per-channel constants in [0, 1]
    units (``None``: only scale to [0, 1]). ``len(loader)`` is the number of batches per epoch on this rank.
    Iterating walks a cursor (epoch, batch): a finished pass moves to the next epoch, an abandoned one
    continues where it stopped; ``set_epoch`` and ``load_state_dict`` move the cursor.
    """

    def __init__(self, images, labels, batch_size: int, *, device="cpu", shuffle: bool = True,
                 drop_last: bool = False, augment=("crop", "flip"), pad: int = 4, mean=None, std=None,
                 seed: int = 0, balanced: bool = False, rank: int = 0, world_size: int = 1):
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 of shape (N, C, H, W); got {images.dtype} {tuple(images.shape)}")
        labels = check_labels(labels)
        if labels.shape[0] != images.shape[0]:
            raise ValueError(f"images and labels have inconsistent numbers of samples: "
                             f"{images.shape[0]} and {labels.shape[0]}")
        if images.shape[0] == 0:
            raise ValueError("images is empty; the loader needs at least one sample")
        check_scalar(batch_size, "batch_size", Integral, low=1)
        check_scalar(pad, "pad", Integral, low=0)
        check_scalar(seed, "seed", Integral, low=0)
        check_scalar(world_size, "world_size", Integral, low=1)
        check_scalar(rank, "rank", Integral, low=0, high=world_size - 1)
        augment = tuple(augment or ())
        unknown = sorted(set(augment) - set(AUGMENTATIONS))
        if unknown:
            raise ValueError(f"unknown augmentation {unknown[0]!r}; allowed: {', '.join(AUGMENTATIONS)}")
        self.device = torch.device(device)
        self.augment, self.pad = augment, int(pad)
        self._stored_pad = p = self.pad if "crop" in augment else 0  # kept zero-padded once, not per batch
        self._padded = images.to(self.device)
        if p:
            self._padded = torch.nn.functional.pad(self._padded, (p, p, p, p))
        self.images = self._padded[:, :, p:p + images.shape[2], p:p + images.shape[3]]
        self.labels = labels.to(self.device)
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), bool(shuffle), bool(drop_last)
        self.seed = int(seed)
        self.balanced, self.rank, self.world_size = bool(balanced), int(rank), int(world_size)
        self._scale, self._shift = self._affine(mean, std, images.shape[1])
        self._class_weight = None
        if self.balanced:
            counts = torch.bincount(self.labels).to(torch.float64)
            self._class_weight = torch.where(counts > 0, 1.0 / counts.clamp(min=1), 0.0)[self.labels]
        self.epoch, self._batch = 0, 0
        self._generator = torch.Generator(device=self.device)

    def _affine(self, mean, std, channels: int):
        """(scale, shift) with x = u·scale + shift = (u/255 − mean)/std, shaped (1, C, 1, 1)."""
        mean = (0.0,) * channels if mean is None else tuple(float(m) for m in mean)
        std = (1.0,) * channels if std is None else tuple(float(s) for s in std)
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean and std need {channels} entries (one per channel); got {len(mean)} and {len(std)}")
        if min(std) <= 0:
            raise ValueError(f"std must be positive; got {std}")
        m = torch.tensor(mean, dtype=torch.float32, device=self.device).reshape(1, -1, 1, 1)
        s = torch.tensor(std, dtype=torch.float32, device=self.device).reshape(1, -1, 1, 1)
        return 1.0 / (255.0 * s), -m / s

    @property
    def num_samples(self) -> int:
        """Samples per epoch on this rank (the padded order divided by ``world_size``)."""
        return math.ceil(self.images.shape[0] / self.world_size)

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Start the next iteration at the first batch of ``epoch``."""
        check_scalar(epoch, "epoch", Integral, low=0)
        self.epoch, self._batch = int(epoch), 0

    def state_dict(self) -> dict:
        """Everything needed to continue the batch sequence: the seed, the epoch and the batch inside it."""
        return {"seed": self.seed, "epoch": self.epoch, "batch": self._batch, "rank": self.rank,
                "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "epoch", "batch"):
            if key not in state:
                raise ValueError(f"loader state is missing key {key!r}; expected a TensorLoader.state_dict()")
        if int(state["seed"]) != self.seed:
            raise ValueError(f"loader state has seed {state['seed']} but this loader has seed {self.seed}; "
                             "use the seed of the run being resumed")
        self.epoch, self._batch = int(state["epoch"]), int(state["batch"])

    def _order(self, epoch: int) -> torch.Tensor:
        """This rank's sample indices for ``epoch``."""
        n = self.images.shape[0]
        if not self.shuffle and not self.balanced:
            order = torch.arange(n, device=self.device)
        else:
            self._generator.manual_seed(_splitmix64(self.seed, epoch))
            if self.balanced:
                order = torch.multinomial(self._class_weight, n, replacement=True, generator=self._generator)
            else:
                order = torch.randperm(n, generator=self._generator, device=self.device)
        total = self.num_samples * self.world_size
        if total > n:
            order = torch.cat([order, order[: total - n]])
        return order[self.rank::self.world_size]

    def __iter__(self):
        epoch, start = self.epoch, self._batch
        order = self._order(epoch)
        for b in range(start, len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            if self.augment:
                self._generator.manual_seed(_splitmix64(self.seed, epoch, b + 1, self.rank))
                rows, cols = _crop_flip_offsets(len(idx), self.images.shape[2], self.images.shape[3], self._stored_pad,
                                                self._generator, self.device, "crop" in self.augment,
                                                "flip" in self.augment)
                x = _take(self._padded, idx, rows, cols)
            else:
                x = self._padded.index_select(0, idx)
            x = x.to(torch.float32).mul_(self._scale).add_(self._shift)
            self._batch = b + 1
            yield x, self.labels[idx]
        self.epoch, self._batch = epoch + 1, 0


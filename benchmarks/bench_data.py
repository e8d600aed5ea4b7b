"""Tensor-resident loader vs a per-item ``torch.utils.data.DataLoader`` doing the same work.

Both produce float32 normalised CIFAR batches with zero-padded random crop (pad 4) and horizontal flip. The
baseline is the usual map-style dataset whose ``__getitem__`` augments one image, collated by a DataLoader
with 0 and 2 workers (persistent workers, one warm-up epoch, so process start-up is not counted against it).
Each loader's rate is its best epoch of ``--epochs``, which filters out noise from other processes; the main
process runs one torch thread by default (``--threads``), so the tensor loader uses one core.
Reads the CIFAR-10 subset in ``../shared/data`` (or ``--root``); prints one JSON line last with images/s and
the ratios ``tensor / dataloader``. Target: ratio ≥ 1.5.

    python benchmarks/bench_data.py [--root DIR] [--epochs 5] [--batch-size 128] [--device cpu] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ncollapse.data import load_dataset
from ncollapse.data.loader import TensorLoader

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar-10-subset"


class PerItemCifar(torch.utils.data.Dataset):
    """The per-item baseline: pad, crop, flip and normalise one image per call."""

    def __init__(self, images, labels, mean, std, pad=4):
        self.images, self.labels, self.pad = images, labels, pad
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        img = self.images[i]
        _, h, w = img.shape
        padded = F.pad(img, (self.pad,) * 4)
        top, left = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
        img = padded[:, top:top + h, left:left + w]
        if torch.rand(()) < 0.5:
            img = img.flip(-1)
        return (img.float() / 255 - self.mean) / self.std, self.labels[i]


def images_per_second(loader, epochs: int, device) -> float:
    """The best epoch rate over ``epochs`` timed epochs after one warm-up (robust on a shared machine)."""
    for x, y in loader:
        pass
    best = 0.0
    for _ in range(epochs):
        count, start = 0, time.perf_counter()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            count += y.shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, count / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(DEFAULT_ROOT))
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs; the best one counts")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the main process (1: one core against one core or two workers)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ds = load_dataset("cifar10", args.root, "train")
    result = {"benchmark": "data_loader", "dataset": f"cifar10 ({len(ds)} train images)",
              "batch_size": args.batch_size, "device": str(device), "torch_threads": torch.get_num_threads()}
    tensor = TensorLoader(ds.images, ds.labels, args.batch_size, device=device, mean=ds.mean, std=ds.std)
    result["tensor_images_per_s"] = round(images_per_second(tensor, args.epochs, device), 1)
    per_item = PerItemCifar(ds.images, ds.labels, ds.mean, ds.std)
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(per_item, batch_size=args.batch_size, shuffle=True, num_workers=workers,
                                             persistent_workers=workers > 0, pin_memory=device.type == "cuda")
        ips = images_per_second(loader, args.epochs, device)
        result[f"dataloader_{workers}w_images_per_s"] = round(ips, 1)
        result[f"ratio_vs_{workers}w"] = round(result["tensor_images_per_s"] / ips, 2)
        print(f"DataLoader, {workers} workers: {ips:,.0f} images/s")
    print(f"tensor-resident loader: {result['tensor_images_per_s']:,.0f} images/s")
    result["target_ratio"] = 1.5
    result["meets_target"] = min(result["ratio_vs_0w"], result["ratio_vs_2w"]) >= 1.5
    print(json.dumps(result))


if __name__ == "__main__":
    main()

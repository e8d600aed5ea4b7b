"""Training throughput of ResNet-32 on CIFAR-shaped images, and the share of a step spent on data.

Uses the trainer's pieces: the tensor-resident ``TensorLoader`` (crop + flip on the device), ``build_model``,
SGD with the CIFAR-LT protocol's settings, CUDA autocast where the trainer would use it. Measures, after a
warm-up, the wall time of producing each batch (data) and of forward + backward + step (compute), with a
device sync around each on CUDA. On a GPU it also times whole epochs of 12,406 images (CIFAR-10-LT, τ 0.01).

    python benchmarks/bench_train.py                 # CPU: a few steps
    python benchmarks/bench_train.py --device cuda   # GPU: + epoch time of CIFAR-10-LT's size

Prints a readable summary on stderr and one JSON line last on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext

import torch

from ncollapse.data.loader import TensorLoader
from ncollapse.losses import build_loss
from ncollapse.nn import build_model
from ncollapse.train.dist import resolve_device
from ncollapse.train.build import amp_dtype

CIFAR10_LT_SIZE = 12_406  # Cao et al. 2019: CIFAR-10, n_max 5,000, τ 0.01


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(device: torch.device, batch_size: int, steps: int, warmup: int, num_images: int, channels_last: bool):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (num_images, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (num_images,), generator=gen)
    loader = TensorLoader(images, labels, batch_size, device=device, shuffle=True, drop_last=True,
                          augment=("crop", "flip"), pad=4, mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010))
    model = build_model("resnet32", 10, seed=0).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = build_loss("ce", [1] * 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    amp = amp_dtype("auto", device)
    autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp else nullcontext
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)

    def batches():
        while True:
            yield from loader

    it = batches()
    data_s = compute_s = 0.0
    for i in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        x, y = next(it)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        _sync(device)
        t1 = time.perf_counter()
        with autocast():
            features, logits = model(x)
        loss = loss_fn(features, logits, y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        _sync(device)
        t2 = time.perf_counter()
        if i >= warmup:
            data_s += t1 - t0
            compute_s += t2 - t1
    total = data_s + compute_s
    return {"images_per_s": steps * batch_size / total, "data_share": data_s / total,
            "step_ms": 1000 * total / steps, "amp": str(amp).replace("torch.", "") if amp else "off"}


def epoch_time(device, batch_size, channels_last, epochs=3) -> float:
    """Median wall time of a full epoch over CIFAR-10-LT's number of images (GPU only)."""
    n = CIFAR10_LT_SIZE
    steps = -(-n // batch_size)
    times = []
    for _ in range(epochs):
        r = measure(device, batch_size, steps, 0 if times else 10, n, channels_last)
        times.append(steps * batch_size / r["images_per_s"])
    return sorted(times)[len(times) // 2]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--channels-last", action="store_true")
    args = p.parse_args()
    device = resolve_device(args.device)
    r = measure(device, args.batch_size, args.steps, args.warmup, 4 * args.batch_size, args.channels_last)
    result = {"benchmark": "train", "model": "resnet32", "device": str(device), "threads": torch.get_num_threads(),
              "batch_size": args.batch_size, "channels_last": args.channels_last, **r,
              "target_data_share": 0.10, "meets_target": r["data_share"] <= 0.10,
              "epoch_s_cifar10_lt_estimate": CIFAR10_LT_SIZE / r["images_per_s"]}
    if device.type == "cuda":
        result["epoch_s_cifar10_lt"] = epoch_time(device, args.batch_size, args.channels_last)
    print(f"ResNet-32, batch {args.batch_size} on {device}: {r['images_per_s']:.0f} images/s, "
          f"{r['step_ms']:.1f} ms/step, data share {100 * r['data_share']:.1f}% (target <= 10%)", file=sys.stderr)
    print(json.dumps(result))
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

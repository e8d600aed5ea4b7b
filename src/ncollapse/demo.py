"""The embedded demo: train a small MLP on scikit-learn's digits made long-tailed and watch NC.

Digits (1,797 images, 8×8) are split 80/20 by seeded keys, the training part is made long-tailed with the
exponential profile (imbalance 0.1), and an MLP is trained full-batch-ish with SGD; every few epochs the
penultimate features are probed (``probe.collect_stats``) and measured (``metrics.measure``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._io import atomic_write_json
from .data.longtail import longtail_counts, longtail_indices, selection_keys
from .metrics import measure, to_jsonable
from .probe import collect_stats, layerwise_ncc
from .stats import NCCCounts

TRAJECTORY_KEYS = ("nc1", "cdnv", "etf_error_means", "etf_error_weights", "self_duality", "ncc_mismatch")


def digits_split(seed: int = 0, test_fraction: float = 0.2):
    """Digits as float tensors in [0, 1] (N, 64) with a seeded train/test split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.data / 16.0, dtype=torch.float32)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    keys = selection_keys(len(y), seed)
    test = torch.from_numpy(keys < np.quantile(keys, test_fraction))
    return (x[~test], y[~test]), (x[test], y[test])


def _batches(x, y, batch_size, generator=None):
    order = torch.randperm(len(y), generator=generator) if generator is not None else torch.arange(len(y))
    for start in range(0, len(y), batch_size):
        idx = order[start:start + batch_size]
        yield x[idx], y[idx]


def run_demo(out_dir="runs/demo", epochs: int = 60, measure_every: int = 5, seed: int = 0,
             imbalance: float = 0.1, log=print) -> dict:
    """Train, measure NC along the way, write ``trajectory.json``; returns the trajectory dict."""
    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    (x_train, y_train), (x_test, y_test) = digits_split(seed)
    num_classes = int(y_train.max()) + 1
    have = torch.bincount(y_train, minlength=num_classes)
    counts = longtail_counts(int(have.min()), num_classes, imbalance)
    keep = longtail_indices(y_train, counts, seed=seed)
    x_train, y_train = x_train[keep], y_train[keep]
    log(f"digits-LT: {len(y_train)} training images, class counts {counts}")

    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, num_classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    trajectory = []
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        for xb, yb in _batches(x_train, y_train, 64, generator):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(xb), yb).backward()
            optimizer.step()
        if epoch % measure_every and epoch != epochs:
            continue
        train_loader = list(_batches(x_train, y_train, 256))
        stats = collect_stats(model, train_loader, ["3"], num_classes)["3"]
        head = model[4]
        ncc = NCCCounts.from_stats(stats, W=head.weight, b=head.bias)
        feats = model[:4](x_train).detach()
        ncc.update(feats, y_train)
        report = measure(stats, W=head.weight, b=head.bias, ncc=ncc)
        with torch.no_grad():
            test_acc = float((model(x_test).argmax(1) == y_test).float().mean())
        row = {"epoch": epoch, "test_acc": test_acc, **{k: report.get(k) for k in TRAJECTORY_KEYS}}
        trajectory.append(row)
    layer_ncc = layerwise_ncc(model, train_loader, collect_stats(model, train_loader, ["1", "3"], num_classes))
    result = {"dataset": "digits-lt", "imbalance": imbalance, "class_counts": counts, "trajectory": trajectory,
              "layer_ncc_accuracy": layer_ncc, "wall_s": time.perf_counter() - start}
    atomic_write_json(out_dir / "trajectory.json", to_jsonable(result))
    return result


def format_trajectory(trajectory: list[dict]) -> str:
    header = f"{'epoch':>5} {'test_acc':>8} " + " ".join(f"{k:>17}" for k in TRAJECTORY_KEYS)
    rows = [f"{r['epoch']:>5} {r['test_acc']:>8.3f} " + " ".join(f"{r[k]:>17.4g}" for k in TRAJECTORY_KEYS)
            for r in trajectory]
    return "\n".join([header, *rows])

"""Benchmark: streaming ClassStats + measure vs a per-sample loop and vs one float64 GEMM pass.

N=50,000, d=512, K=100 synthetic float32 features in batches of 1,024. The per-sample loop (one outer
product per sample, as in public NC scripts) is timed on a subsample and scaled linearly to N; the GEMM
lower bound is one float64 pass of Xᵀ X over the same batches. Prints one JSON line last.
Targets: speedup_vs_loop >= 20, ratio_to_gemm <= 3.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ncollapse import ClassStats, measure


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--loop-samples", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    g = torch.Generator().manual_seed(0)
    means = 10 * torch.randn(args.classes, args.dim, generator=g)
    labels = torch.randint(0, args.classes, (args.n,), generator=g)
    features = (means[labels] + torch.randn(args.n, args.dim, generator=g)).float()
    batches = [(features[i:i + args.batch], labels[i:i + args.batch]) for i in range(0, args.n, args.batch)]

    def ncollapse_pass():
        stats = ClassStats(args.classes, args.dim)
        for x, y in batches:
            stats.update(x, y)
        return measure(stats)

    def gemm_pass():
        acc = torch.zeros(args.dim, args.dim, dtype=torch.float64)
        for x, _ in batches:
            x64 = x.double()
            acc += x64.T @ x64
        return acc

    def loop_pass():
        m = args.loop_samples
        x, y = features[:m].double(), labels[:m]
        mean = torch.zeros(args.classes, args.dim, dtype=torch.float64)
        count = torch.zeros(args.classes, dtype=torch.float64)
        for i in range(m):  # the naive reference: per-sample means, then one outer product per sample
            mean[y[i]] += x[i]
            count[y[i]] += 1
        mean /= count.clamp(min=1)[:, None]
        sw = torch.zeros(args.dim, args.dim, dtype=torch.float64)
        for i in range(m):
            diff = (x[i] - mean[y[i]])[:, None]
            sw += diff @ diff.T
        return sw

    ncollapse_s = best_of(ncollapse_pass, args.repeats)
    gemm_s = best_of(gemm_pass, args.repeats)
    loop_s = best_of(loop_pass, 1) * args.n / args.loop_samples
    result = {"n": args.n, "dim": args.dim, "classes": args.classes, "threads": torch.get_num_threads(),
              "ncollapse_s": round(ncollapse_s, 4), "loop_s": round(loop_s, 4), "gemm_s": round(gemm_s, 4),
              "loop_note": f"per-sample loop timed on {args.loop_samples} samples and scaled linearly to {args.n}",
              "speedup_vs_loop": round(loop_s / ncollapse_s, 2), "ratio_to_gemm": round(ncollapse_s / gemm_s, 3)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()

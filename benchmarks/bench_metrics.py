"""Benchmark of the measurement core; every ratio is against a baseline timed in the same run.

(a) N = 50,000, d = 512, K = 100 float32 features in batches of 1,024: ClassStats + measure against the
    float32 bound (per batch: one-hot class sums and the centred scatter GEMM, both float32, means known)
    and against a per-sample loop (timed on a subsample, scaled linearly to N).
    Targets: ratio_to_bound <= 1.3, speedup_vs_loop >= 10.
(b) K = 32,768, d = 512, 4 samples per class streamed in batches of 4,096 (in a child process, so its peak
    RSS is measured alone): ClassStats + measure, without and with W, against one tiled float32 Gram pass
    (K x d)(d x K), all timed in the same child. Run twice: as the machine is ("idle": no process of ours beside
    it; the 1-minute load average is printed) and "loaded", with --busy (default 2) busy-loop processes started
    beside the child by this script. Targets: ratio_to_gram and ratio_with_W_to_gram <= 4 in both, peak RSS <= 3 GB.
(c) The same at K = 3,000 with float64 features: the tiled measure against a direct float64 computation
    with K x K matrices (numpy); every metric agrees to 1e-10 (relative).
(d) Out of core: `ncollapse measure` on a 1 GB feature file (N = 2,000,000, d = 128, float32, K = 1,000, written
    block by block) read in blocks of 16,384 rows, in a child process: its peak RSS against the file's size and
    against a process that only imports ncollapse (torch included).
Prints one JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ncollapse import ClassStats, measure

COMPARED = ("nc1", "nc1_quotient", "cdnv", "equinorm_means", "equiangularity_means", "max_angle_means",
            "etf_error_means", "orth_error_means", "gnc2_log_mean", "gnc2_log_var", "gnc2_riesz_mean", "nc5_ood",
            "equiangularity_weights", "max_angle_weights", "etf_error_weights", "orth_error_weights", "self_duality",
            "duality_cos_mean", "unc3")


def best_of(fns: dict, repeats: int) -> dict:
    """Best wall-clock and best CPU (process) time of each function over ``repeats`` interleaved rounds.

    On a shared machine the wall clock also counts the time other processes hold the cores; the CPU time
    counts only this process's work, so both are reported and their ratios compared."""
    wall = {name: [] for name in fns}
    cpu = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {name: (min(wall[name]), min(cpu[name])) for name in fns}


def ratios(best: dict, ours: str, base: str, prefix: str) -> dict:
    """Wall and CPU seconds of ``ours`` and ``base`` and their ratios."""
    (w1, c1), (w2, c2) = best[ours], best[base]
    return {f"{ours}_s": round(w1, 3), f"{ours}_cpu_s": round(c1, 3), f"{base}_s": round(w2, 3),
            f"{base}_cpu_s": round(c2, 3), f"{prefix}": round(w1 / w2, 3), f"{prefix}_cpu": round(c1 / c2, 3)}


def peak_rss_gb() -> float:
    """This process's peak resident set (GB): VmHWM of /proc/self/status where there is one (it starts afresh
    at exec, while ru_maxrss also keeps the parent's resident set at fork on Linux), else ru_maxrss."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def synthetic(k, d, per_class, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = 10 * torch.randn(k, d, generator=g, dtype=torch.float64)
    labels = torch.arange(k).repeat_interleave(per_class)[torch.randperm(k * per_class, generator=g)]
    features = (means[labels] + torch.randn(k * per_class, d, generator=g, dtype=torch.float64)).to(dtype)
    return features, labels


def stream(k, d, batches, **kwargs):
    stats = ClassStats(k, d, **kwargs)
    for x, y in batches:
        stats.update(x, y)
    return stats


def part_a(args):
    g = torch.Generator().manual_seed(0)
    k, d = args.classes, args.dim
    means = 10 * torch.randn(k, d, generator=g)
    labels = torch.randint(0, k, (args.n,), generator=g)
    features = (means[labels] + torch.randn(args.n, d, generator=g)).float()
    batches = [(features[i:i + args.batch], labels[i:i + args.batch]) for i in range(0, args.n, args.batch)]
    known = torch.stack([features[labels == c].mean(0) for c in range(k)])

    def bound():
        sums = torch.zeros(k, d)
        scatter = torch.zeros(d, d)
        for x, y in batches:
            sums += torch.nn.functional.one_hot(y, k).float().T @ x
            z = x - known[y]
            scatter += z.T @ z
        return sums, scatter

    def loop():
        m = args.loop_samples
        x, y = features[:m].double(), labels[:m]
        mean = torch.zeros(k, d, dtype=torch.float64)
        count = torch.zeros(k, dtype=torch.float64)
        for i in range(m):  # the naive reference: per-sample means, then one outer product per sample
            mean[y[i]] += x[i]
            count[y[i]] += 1
        mean /= count.clamp(min=1)[:, None]
        sw = torch.zeros(d, d, dtype=torch.float64)
        for i in range(m):
            diff = (x[i] - mean[y[i]])[:, None]
            sw += diff @ diff.T
        return sw

    best = best_of({"ncollapse": lambda: measure(stream(k, d, batches)), "bound": bound,
                    "float64_path": lambda: measure(stream(k, d, batches, precision="float64"))}, args.repeats)
    loop_s, loop_cpu = best_of({"loop": loop}, 1)["loop"]
    scale = args.n / args.loop_samples
    out = {"n": args.n, "dim": d, "classes": k, **ratios(best, "ncollapse", "bound", "ratio_to_bound"),
           "float64_path_s": round(best["float64_path"][0], 3), "loop_s": round(loop_s * scale, 2),
           "speedup_vs_loop": round(loop_s * scale / best["ncollapse"][0], 1),
           "speedup_vs_loop_cpu": round(loop_cpu * scale / best["ncollapse"][1], 1),
           "loop_note": f"per-sample loop timed on {args.loop_samples} samples, scaled linearly to {args.n}"}
    return out


def part_b_child(args):
    """Runs in its own process: measure first (peak RSS read right after), then the float32 Gram baseline."""
    k, d, tile = args.large_k, args.dim, args.tile
    features, labels = synthetic(k, d, args.per_class, torch.float32)
    batches = [(features[i:i + args.large_batch], labels[i:i + args.large_batch])
               for i in range(0, len(labels), args.large_batch)]
    report = measure(stream(k, d, batches))
    rss_gb = peak_rss_gb()  # peak so far: data + one measure
    stats = stream(k, d, batches)
    means = stats.means.float()
    W = torch.randn(k, d, generator=torch.Generator().manual_seed(1))

    def gram():
        total = torch.zeros(())
        for i in range(0, k, tile):
            for j in range(0, k, tile):
                total += (means[i:i + tile] @ means[j:j + tile].T).sum()
        return total

    best = best_of({"measure": lambda: measure(stream(k, d, batches)), "gram_f32": gram,
                    "measure_with_W": lambda: measure(stream(k, d, batches), W=W)}, args.rounds)
    out = {"classes": k, "dim": d, "per_class": args.per_class, "gram_tile": tile,
           **ratios(best, "measure", "gram_f32", "ratio_to_gram"),
           "measure_with_W_s": round(best["measure_with_W"][0], 3),
           "ratio_with_W_to_gram": round(best["measure_with_W"][0] / best["gram_f32"][0], 3),
           "ratio_with_W_to_gram_cpu": round(best["measure_with_W"][1] / best["gram_f32"][1], 3),
           "peak_rss_gb": round(rss_gb, 3), "rank": report["rank"]}
    print(json.dumps(out))


def part_b(args):
    cmd = [sys.executable, __file__, "--child-b", "--large-k", str(args.large_k), "--dim", str(args.dim),
           "--per-class", str(args.per_class), "--large-batch", str(args.large_batch), "--tile", str(args.tile),
           "--rounds", str(args.rounds), "--threads", str(torch.get_num_threads())]
    out = {}
    for name, busy in (("idle", 0), ("loaded", args.busy)):
        loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
        try:
            load = os.getloadavg()[0]
            result = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        finally:
            for loop in loops:
                loop.kill()
                loop.wait()
        out[name] = {"busy_loops": busy, "loadavg_1min_at_start": round(load, 2),
                     **json.loads(result.strip().splitlines()[-1])}
        print(f"(b, {name}) {json.dumps(out[name])}", file=sys.stderr)
    return out


def direct(x, y, k, W, ood):
    """Every compared metric with full K x K float64 matrices (numpy), straight from the features."""
    x, y, W, ood = x.numpy(), y.numpy(), W.numpy(), ood.numpy()
    n, d = x.shape
    counts = np.bincount(y, minlength=k)
    means = np.zeros((k, d))
    np.add.at(means, y, x)
    means /= counts[:, None]
    mu = means.mean(0)
    c = means - mu
    z = x - means[y]
    sw = z.T @ z / n
    sb = c.T @ c / k
    var = np.bincount(y, weights=(z ** 2).sum(1), minlength=k) / counts
    g = c @ c.T
    norms = np.linalg.norm(c, axis=1)
    iu = np.triu_indices(k, 1)
    dist2 = (norms[:, None] ** 2 + norms[None, :] ** 2 - 2 * g)[iu]
    cos = (g / np.outer(norms, norms))[iu]
    etf = np.eye(k) - 1.0 / k

    def fro_err(mat, target):
        return np.linalg.norm(mat / np.linalg.norm(mat) - target / np.linalg.norm(target))

    udist = np.sqrt(2 - 2 * cos)
    wn = np.linalg.norm(W, axis=1)
    gw = W @ W.T
    cos_w = (gw / np.outer(wn, wn))[iu]
    sims = (W * c).sum(1)
    ood_dir = ood.mean(0) - mu
    return {
        "nc1": np.trace(sw @ np.linalg.pinv(sb, rcond=1e-10, hermitian=True)) / k,
        "nc1_quotient": np.trace(sw) / np.trace(sb),
        "cdnv": np.mean((var[iu[0]] + var[iu[1]]) / (2 * dist2)),
        "equinorm_means": norms.std(ddof=1) / norms.mean(),
        "equiangularity_means": cos.std(), "max_angle_means": np.abs(cos + 1 / (k - 1)).mean(),
        "etf_error_means": fro_err(g, etf), "orth_error_means": fro_err(means @ means.T, np.eye(k)),
        "gnc2_log_mean": np.mean(-np.log(udist)), "gnc2_log_var": np.var(-np.log(udist)),
        "gnc2_riesz_mean": np.mean(np.exp(-(d - 2) * np.log(udist))),
        "nc5_ood": np.mean(np.abs(c @ ood_dir) / (norms * np.linalg.norm(ood_dir))),
        "equiangularity_weights": cos_w.std(), "max_angle_weights": np.abs(cos_w + 1 / (k - 1)).mean(),
        "etf_error_weights": fro_err(gw, etf), "orth_error_weights": fro_err(gw, np.eye(k)),
        "self_duality": fro_err(W @ c.T, etf), "duality_cos_mean": np.mean(sims / (wn * norms)),
        "unc3": sims.std(ddof=1) / sims.mean(),
    }


def part_c(args):
    k, d = args.check_k, args.dim
    x, y = synthetic(k, d, args.per_class, torch.float64, seed=2)
    g = torch.Generator().manual_seed(3)
    W, ood = torch.randn(k, d, generator=g, dtype=torch.float64), torch.randn(500, d, generator=g, dtype=torch.float64)
    batches = [(x[i:i + args.large_batch], y[i:i + args.large_batch]) for i in range(0, len(y), args.large_batch)]
    start = time.perf_counter()
    tiled = measure(stream(k, d, batches), W=W, ood=ood, tile_size=args.check_tile)
    tiled_s = time.perf_counter() - start
    start = time.perf_counter()
    want = direct(x, y, k, W, ood)
    direct_s = time.perf_counter() - start
    diffs = {key: abs(tiled[key] - want[key]) / max(abs(want[key]), 1e-300) for key in COMPARED}
    worst = max(diffs, key=diffs.get)
    return {"classes": k, "dim": d, "tile": args.check_tile, "tiled_s": round(tiled_s, 2),
            "direct_s": round(direct_s, 2), "max_rel_diff": float(f"{diffs[worst]:.3g}"), "worst_key": worst,
            "agree_1e-10": bool(diffs[worst] <= 1e-10)}


def write_feature_file(path, n, d, k, block=65_536):
    """An .npz (stored) with float32 'features' (n, d) and 'labels', written block by block (never whole)."""
    import tempfile
    import zipfile

    g = torch.Generator().manual_seed(4)
    means = 3 * torch.randn(k, d, generator=g)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        feats = np.lib.format.open_memmap(f"{tmp}/features.npy", mode="w+", dtype=np.float32, shape=(n, d))
        labels = np.empty(n, dtype=np.int64)
        for i in range(0, n, block):
            y = torch.randint(0, k, (min(block, n - i),), generator=g)
            feats[i:i + len(y)] = (means[y] + torch.randn(len(y), d, generator=g)).numpy()
            labels[i:i + len(y)] = y.numpy()
        feats.flush()
        del feats
        np.save(f"{tmp}/labels.npy", labels)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            zf.write(f"{tmp}/features.npy", "features.npy")
            zf.write(f"{tmp}/labels.npy", "labels.npy")


def part_d_child(args):
    """Runs in its own process: `ncollapse measure` on --file (or only the imports), then the peak RSS."""
    import contextlib
    import io

    from ncollapse.cli import main as cli

    start = time.perf_counter()
    if args.file:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            code = cli(["measure", "--features", args.file, "--json", "--batch-size", str(args.file_batch)])
        report = json.loads(out.getvalue())
        extra = {"exit": code, "nc1": report["nc1"], "num_samples": report["num_samples"]}
    else:
        extra = {}
    print(json.dumps({"peak_rss_gb": peak_rss_gb(),
                      "seconds": time.perf_counter() - start, **extra}))


def part_d(args):
    import tempfile

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        path = Path(tmp) / "features.npz"
        start = time.perf_counter()
        write_feature_file(path, args.file_n, args.file_dim, args.file_k)
        write_s = time.perf_counter() - start
        runs = {}
        for name, extra in (("imports_only", []), ("measure", ["--file", str(path)])):
            cmd = [sys.executable, __file__, "--child-d", "--file-batch", str(args.file_batch),
                   "--threads", str(torch.get_num_threads()), *extra]
            runs[name] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
                                    .splitlines()[-1])
        file_gb = path.stat().st_size / 2**30
    m, base = runs["measure"], runs["imports_only"]
    return {"n": args.file_n, "dim": args.file_dim, "classes": args.file_k, "batch": args.file_batch,
            "file_gb": round(file_gb, 3), "write_s": round(write_s, 1), "measure_s": round(m["seconds"], 1),
            "peak_rss_gb": round(m["peak_rss_gb"], 3), "imports_rss_gb": round(base["peak_rss_gb"], 3),
            "rss_over_imports_gb": round(m["peak_rss_gb"] - base["peak_rss_gb"], 3),
            "rss_over_file": round(m["peak_rss_gb"] / file_gb, 3), "nc1": m["nc1"],
            "num_samples": m["num_samples"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--loop-samples", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds of (a)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of (b)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--large-k", type=int, default=32_768)
    parser.add_argument("--per-class", type=int, default=4)
    parser.add_argument("--large-batch", type=int, default=4096)
    parser.add_argument("--tile", type=int, default=2048, help="tile of the float32 Gram baseline in (b)")
    parser.add_argument("--busy", type=int, default=2, help="busy-loop processes beside the loaded run of (b)")
    parser.add_argument("--check-k", type=int, default=3_000)
    parser.add_argument("--check-tile", type=int, default=512)
    parser.add_argument("--file-n", type=int, default=2_000_000)
    parser.add_argument("--file-dim", type=int, default=128)
    parser.add_argument("--file-k", type=int, default=1_000)
    parser.add_argument("--file-batch", type=int, default=16_384)
    parser.add_argument("--tmp", default=None, help="folder for (d)'s temporary file (default: the system's)")
    parser.add_argument("--parts", default="abcd", help="which parts to run (default abcd)")
    parser.add_argument("--child-b", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-d", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--file", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child_b:
        part_b_child(args)
        return
    if args.child_d:
        part_d_child(args)
        return
    result = {"threads": torch.get_num_threads(), "command": " ".join(sys.argv)}
    for name, part in (("a", part_a), ("b", part_b), ("c", part_c), ("d", part_d)):
        if name in args.parts:
            result[name] = part(args)
            print(f"({name}) {json.dumps(result[name])}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

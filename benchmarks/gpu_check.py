"""One-command GPU check (issue 11, item 6): the CUDA paths no CPU-only CI can run, in one JSON file.

    python benchmarks/gpu_check.py --data ../shared/data --out gpu_check.json

Checks, each recorded with ok / seconds / detail (or the error) and run even if an earlier one failed:

* ``train_<amp>``: ``ncollapse.train`` on CUDA with AMP (bf16, and fp16 with its GradScaler) and channels-last,
  a CIFAR-style ResNet-8 with the NCMC head (CAL) on scikit-learn's digits (no data folder), NC measured every
  epoch; then ``evaluate_run`` on CUDA must reproduce the logged test accuracy;
* ``measure``: streaming ``ClassStats`` + ``measure`` on CUDA float32 against CPU float64;
* ``ddp_nccl``: a process group with the nccl backend at world size 1, a DistributedDataParallel model taking
  SGD steps, and ``ClassStats.all_reduce`` over nccl;
* ``bench_metrics``, ``bench_ufm --device cuda`` and ``bench_train --device cuda --channels-last`` (ResNet-32
  images/s and the epoch time of CIFAR-10-LT's 12,406 images): their last JSON line;
* ``cifar10_lt_resnet32``: two epochs of configs/baselines/cifar10_lt_ce.toml (ResNet-32) on the real CIFAR-10
  subset at n_max 500 on CUDA, with the logged epoch times. **Data folder to bring along:
  ``<data>/cifar-10-subset`` (19 MB, ``../shared/data/cifar-10-subset`` beside the checkout)**; without it the
  check is recorded as skipped, naming the folder.

Not part of CI. Without CUDA it writes nothing and exits 2 with one line saying so. Exit 0 when every check
passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from ncollapse._io import atomic_write_text  # noqa: E402

TINY = ["data.name=\"digits\"", "data.imbalance=0.1", "data.augment=[]", "model.name=\"resnet8\"",
        "model.head=\"multicenter\"", "model.centers=\"class_aware\"", "model.f=2", "model.feature_dim=64",
        "model.channels_last=true", "loss.name=\"ncmc_cosine\"", "train.epochs=2", "train.batch_size=64",
        "schedule.warmup_epochs=1", "eval.nc_every=1", "eval.group_thresholds=[60, 15]"]


def check_train(amp: str) -> dict:
    from ncollapse.train import load_config, train
    from ncollapse.train.evaluate import evaluate_run

    with tempfile.TemporaryDirectory() as tmp:
        summary = train(load_config(None, [*TINY, f"train.amp=\"{amp}\""]), Path(tmp) / "run", device="cuda")
        report = evaluate_run(Path(tmp) / "run", device="cuda")
    if abs(report["acc"] - summary["final_test_acc"]) > 1e-6:
        raise AssertionError(f"evaluate gives {report['acc']}, training logged {summary['final_test_acc']}")
    return {"final_test_acc": summary["final_test_acc"], "wall_s": summary["wall_s"],
            "ncmc_collapse_mean": report.get("ncmc/collapse_mean"), "nc1": report.get("nc/nc1")}


def check_measure() -> dict:
    from ncollapse.metrics import measure
    from ncollapse.stats import ClassStats

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(20_000, 256, generator=gen), torch.randint(0, 50, (20_000,), generator=gen)
    cuda = ClassStats(50, 256, dtype=torch.float32, device="cuda")
    for i in range(0, len(y), 4096):
        cuda.update(x[i:i + 4096].cuda(), y[i:i + 4096].cuda())
    ref = measure(ClassStats.from_features(x.double(), y, 50))
    got = measure(cuda)
    worst = max(abs(got[k] - ref[k]) / max(abs(ref[k]), 1e-12) for k in ("nc1", "cdnv", "etf_error_means"))
    if worst > 1e-3:
        raise AssertionError(f"CUDA float32 NC metrics differ from CPU float64 by {worst:.2e} (relative)")
    return {"max_relative_difference": worst}


def check_ddp_nccl() -> dict:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from ncollapse.nn import build_model
    from ncollapse.stats import ClassStats

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        model = build_model("resnet8", 10).cuda()
        net = DistributedDataParallel(model, device_ids=[0])
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        x, y = torch.randn(32, 3, 32, 32, device="cuda"), torch.randint(0, 10, (32,), device="cuda")
        for _ in range(3):
            _, logits = net(x)
            loss = torch.nn.functional.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        stats = ClassStats(10, model.backbone.out_dim, device="cuda")
        with torch.no_grad():
            stats.update(model(x)[0].float(), y)
        before = stats.finalize().means.clone()
        stats.all_reduce()
        if not torch.allclose(stats.finalize().means, before):
            raise AssertionError("ClassStats.all_reduce at world size 1 changed the statistics")
        return {"backend": dist.get_backend(), "world_size": dist.get_world_size(), "loss": float(loss)}
    finally:
        dist.destroy_process_group()


def run_script(*args: str) -> dict:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode} without a JSON line: "
                           f"{proc.stderr.strip()[-300:]}")
    return {"exit_code": proc.returncode, **json.loads(lines[-1])}


def check_cifar(data: Path) -> dict:
    folder = data / "cifar-10-subset"
    if not folder.is_dir():
        return {"skipped": f"no {folder}: bring the cifar-10-subset folder of ../shared/data and pass --data"}
    with tempfile.TemporaryDirectory() as tmp:
        result = run_script("-m", "ncollapse", "train", "--config", "configs/baselines/cifar10_lt_ce.toml",
                            "--set", f"data.root={folder}", "--set", "data.n_max=500", "--set", "train.epochs=2",
                            "--set", "schedule.warmup_epochs=1", "--set", "model.channels_last=true",
                            "--out", f"{tmp}/run", "--device", "cuda", "--quiet", "--json")
        epochs = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    return {**result, "epoch_time_s": [e["time_s"] for e in epochs]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="the JSON file to write")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data",
                   help="folder holding cifar-10-subset (default ../shared/data beside the checkout)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device (torch.cuda.is_available() is False); run it on a machine with an NVIDIA "
              "GPU and a CUDA build of torch", file=sys.stderr)
        return 2
    checks = [("train_bf16", lambda: check_train("bf16")), ("train_fp16", lambda: check_train("fp16")),
              ("measure", check_measure), ("ddp_nccl", check_ddp_nccl),
              ("bench_metrics", lambda: run_script("benchmarks/bench_metrics.py")),
              ("bench_ufm", lambda: run_script("benchmarks/bench_ufm.py", "--device", "cuda")),
              ("bench_train", lambda: run_script("benchmarks/bench_train.py", "--device", "cuda", "--channels-last")),
              ("cifar10_lt_resnet32", lambda: check_cifar(args.data))]
    results = []
    for name, fn in checks:
        t0 = time.perf_counter()
        try:
            results.append({"name": name, "ok": True, "detail": fn()})
        except Exception as exc:  # noqa: BLE001 - every failure is recorded, the next check still runs
            results.append({"name": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
        results[-1]["seconds"] = round(time.perf_counter() - t0, 2)
        print(f"{name}: {'ok' if results[-1]['ok'] else results[-1]['error']}", file=sys.stderr, flush=True)
    report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
              "ok": all(r["ok"] for r in results), "checks": results}
    atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}: {sum(r['ok'] for r in results)} of {len(results)} checks passed", file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

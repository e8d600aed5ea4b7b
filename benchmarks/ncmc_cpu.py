"""NCMC at CPU scale: MNIST-LT and Fashion-MNIST-LT, LeNet-5, CE vs SETF vs AL vs CAL vs LDAM-DRW, and an f × θ grid.

The evidence for issue 6 item 7 that fits a 2-core machine: every run is a real ``ncollapse train`` run directory
under ``--out`` (git-ignored ``runs/``); the tables are rendered from them with ``ncollapse.report.tables`` and written,
with the seeds, the timings and the exact commands, to ``docs/results/ncmc_cpu.md``.

    python benchmarks/ncmc_cpu.py                      # train what is missing (2 jobs), render, write the doc
    python benchmarks/ncmc_cpu.py --render-only        # re-render from the existing run directories
    python benchmarks/ncmc_cpu.py --epochs 3 --seeds 0 --out runs/ncmc_cpu_smoke --doc /tmp/smoke.md

Runs that already hold a ``summary.json`` are kept, so an interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ncollapse._io import atomic_write_text  # noqa: E402
from ncollapse.train.config import config_from_dict, dumps_toml  # noqa: E402

DATASETS = {"mnist": ("mnist", ["crop"]), "fashion-mnist": ("fashion-mnist", ["crop", "flip"])}
TAUS = (0.005, 0.01)
F, THETA, WIDTH = 20, 0.2, 256  # NCMC's f and θ; extra layer width >= (f+1)K = 210
GRID_F = (2, 5, 20)
GRID_THETA = (0.0, 0.2, 0.5, math.pi / 2)
GRID_TAU = 0.005


def base(dataset: str, tau: float, epochs: int) -> dict:
    folder, augment = DATASETS[dataset]
    return {
        "data": {"name": dataset, "root": f"../shared/data/{folder}", "imbalance": tau, "augment": augment, "pad": 2},
        "model": {"name": "lenet"},
        "loss": {"name": "ce"},
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
        "schedule": {"name": "cosine", "warmup_epochs": 1},
        "train": {"epochs": epochs, "batch_size": 128, "threads": 1},
        "eval": {"nc_every": 0, "group_thresholds": [1000, 200]},
    }


def method(cfg: dict, name: str, epochs: int, f: int = F, theta: float = THETA) -> dict:
    """Set the head and loss of ``cfg`` for one of CE, SETF, AL, CAL, LDAM-DRW (no mixup anywhere)."""
    model, loss = cfg["model"], cfg["loss"]
    if name == "setf":
        model["head"], loss["name"] = "etf", "dot_regression"
    elif name in ("al", "cal"):
        model.update(head="multicenter", centers="uniform" if name == "al" else "class_aware", f=f, theta=theta,
                     feature_dim=max(WIDTH, 64 * math.ceil((f + 1) * 10 / 64)))
        loss["name"] = "ncmc_cosine"
    elif name == "ldam_drw":
        model["head"] = "normed"
        loss.update(name="ldam", options={"max_m": 0.5, "s": 30.0, "drw_epoch": int(0.75 * epochs)})
    elif name != "ce":
        raise ValueError(f"unknown method {name!r}")
    return cfg


def plan(epochs: int, seeds: list[int], grid_seeds: list[int]) -> list[tuple[str, dict, int]]:
    """(config name, config dict, seed) of every run: the main comparison, then the f × θ grid."""
    runs = []
    for dataset in DATASETS:
        for tau in TAUS:
            for m in ("ce", "setf", "al", "cal", "ldam_drw"):
                name = f"{dataset.replace('-', '_')}_lt_{tau:g}_{m}"
                runs += [(name, method(base(dataset, tau, epochs), m, epochs), s) for s in seeds]
    for f in GRID_F:
        for theta in GRID_THETA:
            if (f, theta) == (F, THETA):
                continue  # the main comparison's CAL run is this cell
            name = f"fashion_mnist_lt_{GRID_TAU:g}_cal_f{f}_t{theta:.3g}"
            cfg = method(base("fashion-mnist", GRID_TAU, epochs), "cal", epochs, f=f, theta=theta)
            runs += [(name, cfg, s) for s in grid_seeds]
    return runs


def command(config_path: Path, seed: int, out: Path) -> list[str]:
    return [sys.executable, "-m", "ncollapse", "train", "--config", str(config_path), "--set", f"train.seed={seed}",
            "--out", str(out), "--quiet"]


def train_all(runs, out: Path, jobs: int) -> list[dict]:
    """Train every run without a summary.json, ``jobs`` at a time; returns one record per run."""
    (out / "configs").mkdir(parents=True, exist_ok=True)
    todo, records = [], []
    for name, cfg, seed in runs:
        config_path = out / "configs" / f"{name}.toml"
        atomic_write_text(config_path, dumps_toml(config_from_dict(cfg, name)))
        run_dir = out / f"{name}_s{seed}"
        rec = {"name": name, "seed": seed, "dir": run_dir, "cmd": command(config_path.relative_to(ROOT), seed,
                                                                        run_dir.relative_to(ROOT))}
        records.append(rec)
        if not (run_dir / "summary.json").is_file():
            if run_dir.exists():
                rec["cmd"] = rec["cmd"] + ["--resume"]
            todo.append(rec)

    def one(rec):
        t0 = time.perf_counter()
        proc = subprocess.run(rec["cmd"], cwd=ROOT, capture_output=True, text=True)
        status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"
        if proc.returncode != 0 and rec["dir"].is_dir():
            atomic_write_text(rec["dir"] / "failure.txt", proc.stderr.strip().splitlines()[-1] + "\n")
        print(f"[{time.strftime('%H:%M:%S')}] {rec['dir'].name}: {status} ({time.perf_counter() - t0:.0f} s)",
              file=sys.stderr, flush=True)
        return proc.returncode

    print(f"{len(todo)} of {len(records)} runs to train, {jobs} at a time", file=sys.stderr, flush=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        failures = sum(1 for rc in pool.map(one, todo) if rc != 0)
    if failures:
        print(f"{failures} run(s) failed; their cells render as '–'", file=sys.stderr)
    return records


def _wall(records) -> float:
    total = 0.0
    for rec in records:
        path = rec["dir"] / "summary.json"
        if path.is_file():
            total += json.loads(path.read_text())["wall_s"]
    return total


def _wins(comparison: str) -> str:
    """"k of n settings" with a positive difference in a ``tables.compare_methods`` string."""
    diffs = [part.rsplit(": ", 1)[1] for part in comparison.split("; ")]
    measured = [d for d in diffs if d != "n/a"]
    return f"{sum(d.startswith('+') for d in measured)} of {len(measured)} settings"


def _leaders(table) -> str:
    """"column: best row" for every column of a rendered ``tables.Table``."""
    return "; ".join(f"{col.label}: " + ", ".join(row.label for row, line in zip(table.layout.rows, table.cells)
                                                  if line[j].rank == 1)
                     for j, col in enumerate(table.layout.columns))


def _failed(records) -> str:
    """Runs with epochs logged but no summary.json, with their last logged test accuracy and train loss."""
    out = []
    for rec in records:
        path = rec["dir"] / "metrics.jsonl"
        if path.is_file() and not (rec["dir"] / "summary.json").is_file():
            lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip().endswith("}")]
            last = lines[-1] if lines else {}
            why = rec["dir"] / "failure.txt"
            reason = f", then `{why.read_text().strip()}`" if why.is_file() else ""
            out.append(f"`{rec['dir'].name}` (stopped after epoch {last.get('epoch', 0)}: test accuracy "
                       f"{last.get('test_acc', math.nan):.3f}, train loss {last.get('train_loss', math.nan):.4f}"
                       f"{reason})")
    return "; ".join(out) if out else "none"


def _at_chance(records) -> str:
    """Finished runs whose final test accuracy is at chance (≤ 1.5/K): training broke down (e.g. dead ReLUs)."""
    out = []
    for rec in records:
        summary, info = rec["dir"] / "summary.json", rec["dir"] / "run.json"
        if summary.is_file() and info.is_file():
            acc = json.loads(summary.read_text())["final_test_acc"]
            if acc <= 1.5 / json.loads(info.read_text())["num_classes"]:
                out.append(f"`{rec['dir'].name}` (final test accuracy {acc:.3f})")
    return "; ".join(out) if out else "none"


def _span(records) -> float:
    """Seconds from the earliest run.json (written at a run's start) to the latest summary.json (its end)."""
    starts = [(r["dir"] / "run.json").stat().st_mtime for r in records if (r["dir"] / "run.json").is_file()]
    ends = [(r["dir"] / "summary.json").stat().st_mtime for r in records if (r["dir"] / "summary.json").is_file()]
    return max(ends) - min(starts) if starts and ends else math.nan


def render(records, out: Path, doc: Path, epochs: int, seeds, grid_seeds) -> str:
    import warnings

    from ncollapse.report import tables

    warnings.filterwarnings("ignore", message=".*match no cell")  # each table shows a part of the runs

    dirs = [rec["dir"] for rec in records if rec["dir"].is_dir()]
    runs = tables.load_runs(dirs)
    parts = []
    for metric, what in (("final", "overall (last epoch)"), ("best", "overall (best epoch)"),
                         ("head", "head classes"), ("medium", "medium classes"), ("tail", "tail classes")):
        table = tables.build_table("cpu", runs, metric)
        parts.append(f"### Test accuracy (%), {what}\n\n" + tables.render(table, "markdown"))
    for metric, what in (("collapse", "NCMC collapse mean ‖ĥ − w̄^(k)/‖w̄^(k)‖‖² (training set, last epoch)"),
                         ("variability", "NCMC variability mean 1 − ĥ·ŵ_k (training set, last epoch)")):
        table = tables.build_table("cpu-ncmc", runs, metric)
        parts.append(f"### {what}\n\n" + tables.render(table, "markdown"))
    grid = [tables.render(tables.build_table("cpu-grid", runs, m), "markdown") for m in ("final", "tail")]
    cal_vs_ce = tables.compare_methods(runs, "CAL", "CE", "tail")
    cal_vs_ce_all = tables.compare_methods(runs, "CAL", "CE", "final")
    failed = _failed(records)
    first = records[0]["cmd"]
    text = f"""# NCMC at CPU scale: MNIST-LT and Fashion-MNIST-LT

Produced by `python benchmarks/ncmc_cpu.py` (this file is rewritten by it). Every number below is measured from
the run directories under `{out.relative_to(ROOT)}/` (git-ignored); mean ± sample std (ddof 1) over the seeds.

## Setup

- Data: MNIST and Fashion-MNIST training splits made long-tailed with the exponential profile
  (τ = n_min/n_max ∈ {{{', '.join(f'{t:g}' for t in TAUS)}}}, n_max = the largest size every class can supply,
  `max_feasible_n_max`, subset seed 0); full balanced test splits (10,000 images). Groups: head n_k > 1000,
  tail n_k < 200, medium otherwise.
- Model: LeNet-5; SGD lr 0.05, momentum 0.9, weight decay 5e-4, batch 128, cosine schedule with 1 warm-up epoch,
  **{epochs} epochs**, no mixup, 1 CPU thread per run (2 runs at a time on a shared 2-core machine).
- Methods: CE (linear head); SETF (fixed simplex ETF after BatchNorm + L2, dot-regression loss); AL and CAL
  (extra linear layer to width {WIDTH} ≥ (f+1)K = {(F + 1) * 10}, BatchNorm, fixed multi-center frame with f = {F},
  θ = {THETA}; f_k = f (AL) or class-aware (CAL); weighted cosine loss, λ = 6e-4; RCR prediction); LDAM-DRW
  (cosine classifier, s = 30, max margin 0.5, DRW from epoch index {int(0.75 * epochs)}).
- Seeds {', '.join(map(str, seeds))} (training seed: initialisation, frame, batch order); the f × θ grid uses seed(s)
  {', '.join(map(str, grid_seeds))} on Fashion-MNIST-LT τ = {GRID_TAU:g}, f ∈ {{{', '.join(map(str, GRID_F))}}},
  θ ∈ {{0, 0.2, 0.5, π/2}}.
- Scale: these are {epochs}-epoch LeNet runs, not the paper's 200-epoch ResNet-50 protocol; they test the
  direction of the paper's claims, not its numbers.

## What was measured

- CAL − CE, tail-class accuracy (last epoch), per setting: {cal_vs_ce} (CAL higher in {_wins(cal_vs_ce)}).
- CAL − CE, overall accuracy (last epoch), per setting: {cal_vs_ce_all} (CAL higher in {_wins(cal_vs_ce_all)}).
- CAL − AL, tail-class accuracy (last epoch): {tables.compare_methods(runs, "CAL", "AL", "tail")}.
- Best method per setting (overall, last epoch): {_leaders(tables.build_table("cpu", runs, "final"))};
  (tail classes): {_leaders(tables.build_table("cpu", runs, "tail"))}.
- Runs that ended without a summary.json (their cells average the remaining seeds): {failed}
- Finished runs at chance level (training broke down; they are kept in the means and stds): {_at_chance(records)}

{chr(10).join(parts)}
## f × θ grid (CAL, Fashion-MNIST-LT τ = {GRID_TAU:g})

The f = {F}, θ = {THETA} cell reuses the main comparison's CAL runs (every seed that finished); the other cells
are single runs.

### Overall test accuracy (%), last epoch

{grid[0]}
### Tail-class test accuracy (%), last epoch

{grid[1]}
## Commands

Every run was trained with one command of this form (its config is written to `{out.relative_to(ROOT)}/configs/`):

```bash
{shlex.join(['python' if a == sys.executable else a for a in first])}
```

and the tables above were rendered with

```bash
ncollapse table --layout cpu --runs {out.relative_to(ROOT)} --metric final --format markdown
ncollapse table --layout cpu --runs {out.relative_to(ROOT)} --metric tail
ncollapse table --layout cpu-ncmc --runs {out.relative_to(ROOT)} --metric collapse
ncollapse table --layout cpu-grid --runs {out.relative_to(ROOT)} --metric final
```

Training time summed over runs: {_wall(records) / 60:.1f} min; wall time from the first run's start to the last
run's end: {_span(records) / 60:.1f} min (2 runs at a time).
"""
    atomic_write_text(doc, text)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "ncmc_cpu")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "results" / "ncmc_cpu.md")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--grid-seeds", type=int, nargs="+", default=[0])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--render-only", action="store_true")
    args = p.parse_args(argv)
    out = args.out.resolve()
    runs = plan(args.epochs, args.seeds, args.grid_seeds)
    if args.render_only:
        records = [{"name": n, "seed": s, "dir": out / f"{n}_s{s}",
                    "cmd": command((out / "configs" / f"{n}.toml").relative_to(ROOT), s,
                                   (out / f"{n}_s{s}").relative_to(ROOT))} for n, _, s in runs]
    else:
        records = train_all(runs, out, args.jobs)
    render(records, out, args.doc.resolve(), args.epochs, args.seeds, args.grid_seeds)
    print(f"wrote {args.doc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

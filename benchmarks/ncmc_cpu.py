"""NCMC at CPU scale (issue 11): LeNet-5 with BatchNorm on MNIST-LT, Fashion-MNIST-LT and a long-tailed
CIFAR-10 subset; CE, balanced softmax, LDAM-DRW, SETF, Loss P, AL and CAL under one optimiser and budget; the
f × θ grid; the paper's figures at CPU scale.

    python benchmarks/ncmc_cpu.py                    # train what is missing (2 jobs x 1 thread), write page + jsonl
    python benchmarks/ncmc_cpu.py --render-only      # page + jsonl from the finished run directories
    python benchmarks/ncmc_cpu.py --write-configs    # regenerate configs/ncmc_cpu/*.toml from the protocol below
    python benchmarks/ncmc_cpu.py --verify NAME --root /work/main   # rerun one jsonl line there, compare exactly

Every run is ``ncollapse train --config configs/ncmc_cpu/<config>.toml --set train.seed=<s>`` run from the repo
root with the data under ``../shared/data`` (``--data DIR`` adds ``--set data.root=DIR/<folder>`` for a checkout
without ../shared beside it; the data root does not change a number). Runs that hold a ``summary.json`` are kept
and an interrupted one resumes, so a second invocation only trains what is missing. The page
(docs/results/ncmc_cpu.md), its figures (docs/results/ncmc_cpu/) and docs/results/ncmc_cpu_runs.jsonl are
rewritten from the run directories on every invocation.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from scipy import stats  # noqa: E402

from ncollapse._io import atomic_write_bytes, atomic_write_text  # noqa: E402
from ncollapse.train.config import config_from_dict, dumps_toml, load_config  # noqa: E402

CONFIGS = Path("configs/ncmc_cpu")
EPOCHS = 30
SEEDS = (0, 1, 2)
FEATURE_DIM = 256  # extra linear layer of the multi-center head: >= (f+1)K = 210
F, THETA = 20, 0.2
SETTINGS = {  # config prefix: data set, folder under ../shared/data, τ, n_max, test images per class, groups
    "mnist_lt_0.01": ("mnist", "mnist", 0.01, 1000, 100, (200, 50)),
    "fashion_mnist_lt_0.01": ("fashion-mnist", "fashion-mnist", 0.01, 1000, 100, (200, 50)),
    "fashion_mnist_lt_0.005": ("fashion-mnist", "fashion-mnist", 0.005, 1000, 100, (200, 50)),
    "cifar10_lt_0.01": ("cifar10", "cifar-10-subset", 0.01, 500, 0, (100, 25)),
}
LABELS = {"MNIST": "mnist_lt_0.01", "F-MNIST 0.01": "fashion_mnist_lt_0.01", "F-MNIST 0.005": "fashion_mnist_lt_0.005",
          "CIFAR-10 0.01": "cifar10_lt_0.01"}
METHODS = {"ce": "CE", "bs": "BS", "ldam_drw": "LDAM-DRW", "setf": "SETF", "lossp": "Loss P", "al": "AL", "cal": "CAL"}
COMPARE = ("ce", "al", "setf", "ldam_drw", "bs", "lossp")  # CAL − each, paired by seed
GRID_SETTING, GRID_F, GRID_THETA = "fashion_mnist_lt_0.005", (2, 5, 20), (0.0, 0.2, 0.5, math.pi / 2)


# ------------------------------------------------------------------------------------------ the protocol

def config(setting: str, method: str, f: int = F, theta: float = THETA, penalty: float = 5e-4) -> dict:
    """The config of one (setting, method): same backbone, optimiser, schedule and budget for every method."""
    name, folder, tau, n_max, per_class, thresholds = SETTINGS[setting]
    cfg = {
        "data": {"name": name, "root": f"../shared/data/{folder}", "imbalance": tau, "n_max": n_max,
                 "test_per_class": per_class, "augment": []},
        "model": {"name": "lenet", "options": {"batch_norm": True}},
        "loss": {"name": "ce"},
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
        "schedule": {"name": "cosine", "warmup_epochs": 1},
        "train": {"epochs": EPOCHS, "batch_size": 64, "threads": 1},
        "eval": {"nc_every": 3, "batch_size": 256, "group_thresholds": list(thresholds)},
    }
    model, loss = cfg["model"], cfg["loss"]
    if method in ("lossp", "al", "cal"):
        model.update(head="multicenter", centers="uniform" if method == "al" else "class_aware", f=f, theta=theta,
                     feature_dim=FEATURE_DIM)
        loss["name"] = "ncmc_p" if method == "lossp" else "ncmc_cosine"
        if method == "lossp":
            loss["options"] = {"feature_penalty": penalty}
        if theta == 0:
            cfg["eval"]["decision"] = "gcr"  # θ = 0: every center ⊥ W_0, RCR has no signal (§4.1)
    elif method == "setf":
        model["head"], loss["name"] = "etf", "dot_regression"
    elif method == "ldam_drw":
        model["head"] = "normed"
        loss.update(name="ldam", options={"max_m": 0.5, "s": 30.0, "drw_epoch": int(0.8 * EPOCHS)})
    elif method == "bs":
        loss["name"] = "balanced_softmax"
    elif method != "ce":
        raise ValueError(f"unknown method {method!r}")
    return cfg


def configs() -> dict[str, tuple[str, str, dict]]:
    """stem -> (setting, method, config) of every config of the page: the main comparison, the f × θ grid and
    Loss P without its feature penalty (Fig. 4)."""
    out = {f"{s}_{m}": (s, m, config(s, m)) for s in SETTINGS for m in METHODS}
    for f in GRID_F:
        for theta in GRID_THETA:
            if (f, theta) != (F, THETA):
                out[f"{GRID_SETTING}_cal_f{f}_t{theta:.3g}"] = (GRID_SETTING, "cal", config(GRID_SETTING, "cal", f, theta))
    for s in SETTINGS:
        out[f"{s}_lossp_noreg"] = (s, "lossp", config(s, "lossp", penalty=0.0))
    return out


def plan() -> list[dict]:
    """Every run in training order: seeds 0 and 1 of the main comparison, the single-seed extras, then the
    remaining seeds; CIFAR runs (the slowest) first within each block so the two jobs end together."""
    table = configs()
    main = sorted((stem for stem in table if table[stem][1] in METHODS and stem == f"{table[stem][0]}_{table[stem][1]}"),
                  key=lambda stem: not stem.startswith("cifar"))
    extras = [stem for stem in table if stem not in main]
    order = [(stem, seed) for seed in SEEDS[:2] for stem in main] + [(stem, SEEDS[0]) for stem in extras]
    order += [(stem, seed) for seed in SEEDS[2:] for stem in main]
    return [{"name": f"{stem}_s{seed}", "config": stem, "seed": seed, "setting": table[stem][0],
             "method": table[stem][1], "main": stem in main} for stem, seed in order]


def argv_of(run: dict) -> list[str]:
    """The ``ncollapse`` arguments of a run (repo root, data under ../shared/data, no --out)."""
    return ["train", "--config", str(CONFIGS / f"{run['config']}.toml"), "--set", f"train.seed={run['seed']}"]


def write_configs() -> None:
    for stem, (_, _, cfg) in configs().items():
        text = dumps_toml(config_from_dict(cfg, stem))
        atomic_write_text(ROOT / CONFIGS / f"{stem}.toml", f"# generated by benchmarks/ncmc_cpu.py --write-configs\n{text}")


# ------------------------------------------------------------------------------------------ training

def train_all(runs, out: Path, jobs: int, data: Path | None) -> None:
    """Train every run without a summary.json, ``jobs`` at a time (1 thread each), resuming interrupted ones."""
    todo = [r for r in runs if not (out / r["name"] / "summary.json").is_file()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}

    def one(run):
        run_dir = out / run["name"]
        cmd = [sys.executable, "-m", "ncollapse", *argv_of(run)]
        if data is not None:
            cmd += ["--set", f"data.root={data / SETTINGS[run['setting']][1]}"]
        cmd += ["--out", str(run_dir), "--quiet"] + (["--resume"] if run_dir.exists() else [])
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
        status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"
        print(f"[{time.strftime('%H:%M:%S')}] {run['name']}: {status} ({time.perf_counter() - t0:.0f} s)",
              file=sys.stderr, flush=True)
        return proc.returncode

    print(f"{len(todo)} of {len(runs)} runs to train, {jobs} at a time", file=sys.stderr, flush=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        failures = sum(1 for rc in pool.map(one, todo) if rc != 0)
    if failures:
        print(f"{failures} run(s) failed; the page lists them as missing", file=sys.stderr)


# ------------------------------------------------------------------------------------------ reading runs

def load(runs, out: Path) -> dict[str, dict]:
    """name -> {run, metrics (list of epoch records), summary, info} for every finished run."""
    done = {}
    for run in runs:
        d = out / run["name"]
        if not (d / "summary.json").is_file():
            continue
        metrics = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if line.strip()]
        done[run["name"]] = {"run": run, "metrics": metrics, "dir": d,
                             "summary": json.loads((d / "summary.json").read_text()),
                             "info": json.loads((d / "run.json").read_text())}
    return done


def jsonl_lines(runs, done) -> str:
    lines = []
    for run in runs:
        if run["name"] in done:
            r = done[run["name"]]
            last = r["metrics"][-1]
            lines.append(json.dumps({"name": run["name"], "method": METHODS.get(run["method"], run["method"]),
                                     "argv": argv_of(run), "threads": r["info"]["environment"]["threads"],
                                     "seconds": round(r["summary"]["wall_s"], 1), "final_test_acc": last["test_acc"],
                                     "final_tail_acc": last["test_acc_tail"]}))
    return "".join(f"{line}\n" for line in lines)


def value(rec: dict, metric: str) -> float:
    """Last-epoch ``test_acc`` / ``test_acc_<group>`` (metric "overall"/"head"/"medium"/"tail") of a run."""
    key = "test_acc" if metric == "overall" else f"test_acc_{metric}"
    v = rec["metrics"][-1].get(key)
    return math.nan if v is None else float(v)


def per_seed(done, stem: str, metric: str) -> dict[int, float]:
    return {r["run"]["seed"]: value(r, metric) for r in done.values() if r["run"]["config"] == stem}


def mean_std(values) -> tuple[float, float]:
    """Mean and sample std (ddof 1; NaN for one value)."""
    v = [x for x in values if not math.isnan(x)]
    if not v:
        return math.nan, math.nan
    m = sum(v) / len(v)
    return m, math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else math.nan


def paired(a: dict[int, float], b: dict[int, float]) -> tuple[float, float, float, int]:
    """Mean of a − b over the seeds both have, and its 95% t-interval (Student t, n − 1 degrees of freedom)."""
    diffs = [a[s] - b[s] for s in sorted(set(a) & set(b)) if not (math.isnan(a[s]) or math.isnan(b[s]))]
    m, sd = mean_std(diffs)
    if len(diffs) < 2:
        return m, math.nan, math.nan, len(diffs)
    half = stats.t.ppf(0.975, len(diffs) - 1) * sd / math.sqrt(len(diffs))
    return m, m - half, m + half, len(diffs)


def pct(x: float, sign: bool = False) -> str:
    return "–" if math.isnan(x) else f"{100 * x:+.1f}" if sign else f"{100 * x:.1f}"


def cell(values) -> str:
    m, sd = mean_std(values)
    n = sum(not math.isnan(v) for v in values)
    if n == 0:
        return "–"
    text = pct(m) if n == 1 else f"{pct(m)} ± {100 * sd:.1f}"
    return text if n == len(SEEDS) else f"{text} (n={n})"


def interval(d) -> str:
    m, lo, hi, n = d
    if n == 0:
        return "–"
    if n < 2:
        return f"{pct(m, True)} (1 seed)"
    mark = " ▲" if lo > 0 else " ▼" if hi < 0 else ""
    return f"{pct(m, True)} [{pct(lo, True)}, {pct(hi, True)}]{mark}"


# ------------------------------------------------------------------------------------------ page sections

def accuracy_tables(done) -> str:
    parts = []
    for metric in ("overall", "head", "medium", "tail"):
        rows = [f"| Method | {' | '.join(LABELS)} |", "|---" * (len(LABELS) + 1) + "|"]
        for m, label in METHODS.items():
            cells = [cell(list(per_seed(done, f"{s}_{m}", metric).values())) for s in LABELS.values()]
            rows.append(f"| {label} | {' | '.join(cells)} |")
        parts.append(f"**Test accuracy (%), {metric}, last epoch**\n\n" + "\n".join(rows) + "\n")
    return "\n".join(parts)


def differences(done) -> tuple[str, dict]:
    """The CAL − X table and {(x, setting, metric): (mean, lo, hi, n)}."""
    result, rows = {}, []
    head = " | ".join(f"{lab} {metric}" for lab in LABELS for metric in ("overall", "head", "tail"))
    rows += [f"| CAL − | {head} |", "|---" * (3 * len(LABELS) + 1) + "|"]
    for x in COMPARE:
        cells = []
        for setting in LABELS.values():
            for metric in ("overall", "head", "tail"):
                d = paired(per_seed(done, f"{setting}_cal", metric), per_seed(done, f"{setting}_{x}", metric))
                result[(x, setting, metric)] = d
                cells.append(interval(d))
        rows.append(f"| {METHODS[x]} | {' | '.join(cells)} |")
    return "\n".join(rows) + "\n", result


def verdict(result, x: str, metric: str) -> tuple[list, list, list]:
    """Settings where CAL − x on ``metric`` has its 95% interval above 0, below 0, or across 0 / unmeasured."""
    up, down, open_ = [], [], []
    for label, setting in LABELS.items():
        m, lo, hi, n = result[(x, setting, metric)]
        (up if n >= 2 and lo > 0 else down if n >= 2 and hi < 0 else open_).append(label)
    return up, down, open_


def said(result, x: str, metric: str) -> str:
    up, down, open_ = verdict(result, x, metric)
    parts = [f"CAL higher in {', '.join(up)}" if up else "", f"CAL lower in {', '.join(down)}" if down else "",
             f"no difference resolved in {', '.join(open_)}" if open_ else ""]
    return "; ".join(p for p in parts if p)


def claims(done, result, grid) -> str:
    """The paper's claims, each with what the intervals (or, for single-seed panels, the numbers) say."""
    lines = []

    def holds(x, metric, want):
        up, down, open_ = verdict(result, x, metric)
        if want == "better":
            return "holds" if up and not down and not open_ else "does not hold" if down else (
                "holds in part" if up else "not resolved at this scale")
        return "does not hold" if down else "holds"  # "comparable or better": never significantly worse

    lines.append(f"1. *CAL improves on the plain CE model on long-tailed data* (Tables 2–3): overall accuracy "
                 f"{holds('ce', 'overall', 'better')} — {said(result, 'ce', 'overall')}; tail: "
                 f"{said(result, 'ce', 'tail')}.")
    lines.append(f"2. *Class-aware centers beat the same number of centers per class (CAL vs AL; Fig. 1, §3.5)*: tail "
                 f"accuracy {holds('al', 'tail', 'better')} — {said(result, 'al', 'tail')}; overall: "
                 f"{said(result, 'al', 'overall')}.")
    for x, table in (("setf", "Tables 2–3"), ("ldam_drw", "Table 3")):
        lines.append(f"{len(lines) + 1}. *CAL is comparable to or better than {METHODS[x]}* ({table}): overall "
                     f"{holds(x, 'overall', 'comparable')} — {said(result, x, 'overall')}; tail: "
                     f"{said(result, x, 'tail')}.")
    lines.append(f"{len(lines) + 1}. *Loss P is inferior to CAL* (Table 4): overall "
                 f"{holds('lossp', 'overall', 'better')} — {said(result, 'lossp', 'overall')}.")
    lines.append(f"{len(lines) + 1}. *θ = 0 learns nothing under RCR; θ = π/2 behaves like SETF; accuracy peaks at a θ "
                 f"between* (Table 6, Fig. 5): single-seed grid, descriptive only — {grid}")
    return "\n".join(lines)


def grid_table(done) -> tuple[str, str, list]:
    """The f × θ grid (RCR, or GCR at θ = 0, named in each cell), a one-line description, and the heatmap panel."""
    import numpy as np

    thetas = [f"{t:.3g}" for t in GRID_THETA]
    acc = np.full((len(GRID_F), len(GRID_THETA)), np.nan)
    texts = [["–"] * len(GRID_THETA) for _ in GRID_F]
    rows = ["| f \\ θ | " + " | ".join(("0", "0.2", "0.5", "π/2")) + " |", "|---" * (len(GRID_THETA) + 1) + "|"]
    for i, f in enumerate(GRID_F):
        cells = []
        for j, theta in enumerate(GRID_THETA):
            stem = (f"{GRID_SETTING}_cal" if (f, theta) == (F, THETA)
                    else f"{GRID_SETTING}_cal_f{f}_t{thetas[j]}")
            rec = done.get(f"{stem}_s0")
            rule = "GCR" if theta == 0 else "RCR"
            if rec is None:
                cells.append("–")
                continue
            acc[i, j] = value(rec, "overall")
            tail = value(rec, "tail")
            texts[i][j] = f"{pct(acc[i, j])}\n{rule}"
            cells.append(f"{pct(acc[i, j])} / {pct(tail)} ({rule})")
        rows.append(f"| {f} | {' | '.join(cells)} |")
    finite = np.isfinite(acc)
    if finite.any():
        i, j = np.unravel_index(np.nanargmax(acc), acc.shape)
        said_ = f"the best cell is f = {GRID_F[i]}, θ = {thetas[j]} ({pct(acc[i, j])}%)"
        pi2 = [pct(a) for a in acc[:, -1]]
        setf = per_seed(done, f"{GRID_SETTING}_setf", "overall").get(0, math.nan)
        said_ += f"; θ = π/2 gives {', '.join(pi2)}% for f = {', '.join(map(str, GRID_F))} (SETF seed 0: {pct(setf)}%)"
        gcr = [pct(a) for a in acc[:, 0]]
        said_ += f"; θ = 0 scored with GCR gives {', '.join(gcr)}%."
    else:
        said_ = "no grid run finished."
    panel = ("CAL, F-MNIST-LT 0.005, seed 0: overall accuracy", acc, [f"f={f}" for f in GRID_F],
             ["0", "0.2", "0.5", "π/2"], texts)
    return "\n".join(rows) + "\n", said_, panel


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "ncmc_cpu", help="folder of the run directories")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "results" / "ncmc_cpu.md")
    p.add_argument("--data", type=Path, default=None,
                   help="data folder when ../shared/data is not beside the checkout (recorded argv omits it)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--render-only", action="store_true")
    p.add_argument("--write-configs", action="store_true")
    args = p.parse_args(argv)
    if args.write_configs:
        write_configs()
        return 0
    runs = plan()
    out = args.out.resolve()
    if not args.render_only:
        train_all(runs, out, args.jobs, args.data.resolve() if args.data else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())

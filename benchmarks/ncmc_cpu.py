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
rewritten from the run directories on every invocation. The paired CAL − X intervals come from
``ncollapse.report.compare`` (``ncollapse compare`` gives them for any runs); this script assembles the page.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ncollapse._io import atomic_write_text  # noqa: E402
from ncollapse.report.compare import compare_values, mean_std, render_markdown  # noqa: E402
from ncollapse.train.config import config_from_dict, dumps_toml  # noqa: E402
from page_runs import load, train_all  # noqa: E402

CONFIGS = Path("configs/ncmc_cpu")
JSONL = Path("docs/results/ncmc_cpu_runs.jsonl")
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
GRID_SETTING, GRID_F, GRID_THETA = "fashion_mnist_lt_0.005", (5, 20), (0.0, 0.2, 0.5, math.pi / 2)
PENALTY_SETTINGS = ("cifar10_lt_0.01", "fashion_mnist_lt_0.005")  # Fig. 4: Loss P with other feature penalties
FIG7_SETTING, FIG7_EPOCHS = "cifar10_lt_0.01", (3, 9, 15, 30)  # Fig. 7: smallest class's Gram, CE and CAL
# Why Loss P stalls: its main config with one optimiser setting changed (seed 0, F-MNIST-LT 0.005)
DIAGNOSIS_SETTING = "fashion_mnist_lt_0.005"
DIAGNOSIS = {"lossp_wd0": ("weight decay 0", {"weight_decay": 0.0}),
             "lossp_lr0.005": ("lr 0.005", {"lr": 0.005}),
             "lossp_lr0.5": ("lr 0.5", {"lr": 0.5}),
             "lossp_e120": ("120 epochs", {"epochs": 120})}
LONG = {"lr": 0.5, "epochs": 120}  # where Loss P reaches eq. 19's optimum: Fig. 4 again under this budget (``_long``)


# ------------------------------------------------------------------------------------------ the protocol

def config(setting: str, method: str, f: int = F, theta: float = THETA, penalty: float = 5e-4, lr: float = 0.05,
           weight_decay: float = 5e-4, epochs: int = EPOCHS) -> dict:
    """The config of one (setting, method): same backbone, optimiser, schedule and budget for every method
    (``lr``, ``weight_decay``, ``epochs`` change only for the Loss P diagnosis)."""
    name, folder, tau, n_max, per_class, thresholds = SETTINGS[setting]
    cfg = {
        "data": {"name": name, "root": f"../shared/data/{folder}", "imbalance": tau, "n_max": n_max,
                 "test_per_class": per_class, "augment": []},
        "model": {"name": "lenet", "options": {"batch_norm": True}},
        "loss": {"name": "ce"},
        "optim": {"name": "sgd", "lr": lr, "momentum": 0.9, "weight_decay": weight_decay},
        "schedule": {"name": "cosine", "warmup_epochs": 1},
        "train": {"epochs": epochs, "batch_size": 64, "threads": 1},
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
    if setting == FIG7_SETTING and method in ("ce", "cal"):
        cfg["eval"]["gram_samples"] = 16  # Fig. 7: the smallest class's features at every NC pass
    return cfg


def configs() -> dict[str, tuple[str, str, dict]]:
    """stem -> (setting, method, config) of every config of the page: the main comparison, the f × θ grid and
    Loss P without its feature penalty (Fig. 4)."""
    out = {f"{s}_{m}": (s, m, config(s, m)) for s in SETTINGS for m in METHODS}
    for f in GRID_F:
        for theta in GRID_THETA:
            if (f, theta) != (F, THETA):
                out[f"{GRID_SETTING}_cal_f{f}_t{theta:.3g}"] = (GRID_SETTING, "cal", config(GRID_SETTING, "cal", f, theta))
    for s in PENALTY_SETTINGS:
        out[f"{s}_lossp_noreg"] = (s, "lossp", config(s, "lossp", penalty=penalties(s)["lossp_noreg"]))
    for s in PENALTY_SETTINGS:  # the old deep Loss P's per-sample 5e-4, i.e. eq. 19's λ_H = 5e-4 / N
        out[f"{s}_lossp_persample"] = (s, "lossp", config(s, "lossp", penalty=penalties(s)["lossp_persample"]))
    for suffix, (_, change) in DIAGNOSIS.items():
        out[f"{DIAGNOSIS_SETTING}_{suffix}"] = (DIAGNOSIS_SETTING, "lossp", config(DIAGNOSIS_SETTING, "lossp", **change))
    for s in PENALTY_SETTINGS:
        for suffix, penalty in penalties(s).items():
            out[f"{s}_{suffix}_long"] = (s, "lossp", config(s, "lossp", penalty=penalty, **LONG))
    return out


def penalties(setting: str) -> dict[str, float]:
    """Fig. 4's Loss P variants: eq. 19's λ_H = 5e-4, the old per-sample 5e-4 (λ_H = 5e-4 / N) and none."""
    return {"lossp": 5e-4, "lossp_persample": float(f"{5e-4 / train_size(setting):.4g}"), "lossp_noreg": 0.0}


def train_size(setting: str) -> int:
    """N = Σ n_k of a setting's long-tailed training subset."""
    from ncollapse.data.longtail import longtail_counts

    name, _, tau, n_max, _, _ = SETTINGS[setting]
    return sum(longtail_counts(n_max, 10, tau))


def plan() -> list[dict]:
    """Every run in training order, most needed first so that an interrupted benchmark leaves whole blocks: seeds
    0 and 1 of the main comparison, the f × θ grid, the remaining seeds setting by setting (CIFAR-10, F-MNIST
    0.005, F-MNIST 0.01, MNIST); Loss P's other penalties on CIFAR-10 before those seeds, on F-MNIST after."""
    table = configs()
    priority = ("cifar10_lt_0.01", "fashion_mnist_lt_0.005", "fashion_mnist_lt_0.01", "mnist_lt_0.01")
    main = [f"{s}_{m}" for s in priority for m in METHODS]
    grid = [stem for stem in table if stem not in main and "_lossp_" not in stem]
    first = [stem for stem in table if "_lossp_" in stem and stem.startswith(priority[0])]
    last = [stem for stem in table if "_lossp_" in stem and stem not in first]
    order = [(stem, seed) for seed in SEEDS[:2] for stem in main] + [(stem, SEEDS[0]) for stem in grid + first]
    order += [(stem, seed) for seed in SEEDS[2:] for stem in main] + [(stem, SEEDS[0]) for stem in last]
    return [{"name": f"{stem}_s{seed}", "config": stem, "seed": seed, "setting": table[stem][0],
             "method": table[stem][1], "main": stem in main} for stem, seed in order]


def argv_of(run: dict) -> list[str]:
    """The ``ncollapse`` arguments of a run (repo root, data under ../shared/data, no --out)."""
    return ["train", "--config", str(CONFIGS / f"{run['config']}.toml"), "--set", f"train.seed={run['seed']}"]


def write_configs() -> None:
    for stem, (_, _, cfg) in configs().items():
        text = dumps_toml(config_from_dict(cfg, stem))
        atomic_write_text(ROOT / CONFIGS / f"{stem}.toml", f"# generated by benchmarks/ncmc_cpu.py --write-configs\n{text}")


# ------------------------------------------------------------------------------------------ reading runs

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


def pct(x: float, sign: bool = False) -> str:
    return "–" if math.isnan(x) else f"{100 * x:+.1f}" if sign else f"{100 * x:.1f}"


def cell(values) -> str:
    m, sd = mean_std(values)
    n = sum(not math.isnan(v) for v in values)
    if n == 0:
        return "–"
    text = pct(m) if n == 1 else f"{pct(m)} ± {100 * sd:.1f}"
    return text if n == len(SEEDS) else f"{text} (n={n})"


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
    """The CAL − X table and {(x, setting, metric): Interval} (``report.compare``, paired by seed)."""
    metrics = ("overall", "head", "tail")
    values = {(m, s, metric): per_seed(done, f"{s}_{m}", metric)
              for m in ("cal", *COMPARE) for s in LABELS.values() for metric in metrics}
    result = compare_values(values, "cal", COMPARE, list(LABELS.values()), metrics)
    return render_markdown(result, {**METHODS, **{s: lab for lab, s in LABELS.items()}}), result.cells


def verdict(result, x: str, metric: str) -> tuple[list, list, list]:
    """Settings where CAL − x on ``metric`` has its 95% interval above 0, below 0, or across 0 / unmeasured."""
    up, down, open_ = [], [], []
    for label, setting in LABELS.items():
        {1: up, -1: down, 0: open_}[result[(x, setting, metric)].resolved].append(label)
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
        if not any(result[(x, setting, metric)][3] >= 2 for setting in LABELS.values()):
            return "not measured (fewer than 2 seeds in every setting)"
        if want == "better":
            return "holds" if up and not down and not open_ else "does not hold" if down else (
                "holds in part" if up else "not resolved at this scale")
        return "does not hold" if down else "holds (CAL never resolved lower)"

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
    lines.append(f"{len(lines) + 1}. *AL and CAL features collapse to the multi-center directions, NC_ave and NC_std "
                 f"falling during training* (Fig. 1): NC_ave at the first measured epoch → the last, mean over seeds — "
                 f"{collapse_said(done)}.")
    lines.append(f"{len(lines) + 1}. *The feature-norm penalty gives heavier collapse under Loss P* (Fig. 4), seed 0, "
                 f"last-epoch NC_ave — {penalty_said(done)}.")
    return "\n".join(lines)


def collapse_said(done) -> str:
    parts = []
    for lab, setting in LABELS.items():
        for m in ("al", "cal"):
            recs = [r for r in done.values() if r["run"]["config"] == f"{setting}_{m}"]
            curves = [[x["ncmc/collapse_mean"] for x in r["metrics"] if x.get("ncmc/collapse_mean") is not None]
                      for r in recs]
            if curves:
                first, last = (sum(c[i] for c in curves) / len(curves) for i in (0, -1))
                parts.append(f"{lab} {METHODS[m]} {first:.3g} → {last:.3g}")
    return "; ".join(parts) or "no runs"


def penalty_said(done) -> str:
    """Last-epoch NC_ave of Loss P with λ_H = 5e-4, 5e-4/N and 0, under the protocol and under ``LONG``."""
    said = {}
    for budget, tail in (("protocol", ""), ("long", "_long")):
        parts, order = [], []
        for setting in PENALTY_SETTINGS:
            lab = next(k for k, v in LABELS.items() if v == setting)
            values, nc = [], {}
            for label, suffix in (("λ_H 5e-4", "lossp"), ("5e-4/N", "lossp_persample"), ("0", "lossp_noreg")):
                rec = done.get(f"{setting}_{suffix}{tail}_s0")
                if rec is not None:
                    last = [x["ncmc/collapse_mean"] for x in rec["metrics"] if x.get("ncmc/collapse_mean") is not None]
                    nc[suffix] = last[-1]
                    values.append(f"{label}: {last[-1]:.3g} (test {pct(value(rec, 'overall'))}%)")
            parts.append(f"{lab}: " + ", ".join(values) if values else f"{lab}: no runs")
            if len(nc) == 3:
                order.append(nc["lossp"] < min(nc["lossp_persample"], nc["lossp_noreg"]))
        verdict = ("not measured" if not order else "the penalty gives the lowest NC_ave in "
                   f"{sum(order)} of {len(order)} settings")
        said[budget] = "; ".join(parts) + f" — {verdict}"
    return (f"under the protocol {said['protocol']} (every protocol Loss P run stalls near h = 0, see *Why Loss P "
            f"stalls*, so this says little); under lr {LONG['lr']} and {LONG['epochs']} epochs, where Loss P converges: "
            f"{said['long']} (lower is heavier collapse; one seed, so a direction, not an interval)")


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



def convergence(done) -> tuple[str, list]:
    """Per (setting, method): the lowest per-class training accuracy at the last epoch and the largest change of
    any class's training accuracy over the last third of training (mean over seeds), plus the curve panels."""
    rows = [f"| Method | {' | '.join(LABELS)} |", "|---" * (len(LABELS) + 1) + "|"]
    for m, label in METHODS.items():
        cells = []
        for setting in LABELS.values():
            lows, moves = [], []
            for rec in (r for r in done.values() if r["run"]["config"] == f"{setting}_{m}"):
                curve = [(r["epoch"], r["train_eval_acc_per_class"]) for r in rec["metrics"] if "train_eval_acc_per_class" in r]
                last_epoch, last = curve[-1]
                early = [acc for epoch, acc in curve if epoch <= last_epoch - EPOCHS // 3][-1]
                lows.append(min(last))
                moves.append(max(abs(a - b) for a, b in zip(last, early)))
            cells.append("–" if not lows else f"{pct(sum(lows) / len(lows))} / {pct(sum(moves) / len(moves))}")
        rows.append(f"| {label} | {' | '.join(cells)} |")
    panels = []
    for lab, setting in LABELS.items():
        for m in ("ce", "cal"):
            rec = done.get(f"{setting}_{m}_s0")
            if rec is None:
                continue
            curve = [(r["epoch"], r["train_eval_acc_per_class"]) for r in rec["metrics"] if "train_eval_acc_per_class" in r]
            counts = rec["info"]["class_counts"]
            series = {f"class {k} (n={counts[k]})": ([e for e, _ in curve], [acc[k] for _, acc in curve])
                      for k in range(len(counts))}
            panels.append((f"{lab}, {METHODS[m]}, seed 0", series))
    return "\n".join(rows) + "\n", panels


def per_class_panels(done) -> list:
    """Fig. 1 (per-class test accuracy, AL vs CAL, with CE for reference): mean over seeds, classes by size."""
    panels = []
    for lab, setting in LABELS.items():
        series, categories = {}, None
        for m in ("ce", "al", "cal"):
            recs = [r for r in done.values() if r["run"]["config"] == f"{setting}_{m}"]
            if not recs:
                continue
            counts = recs[0]["info"]["class_counts"]
            categories = [f"{k} ({counts[k]})" for k in range(len(counts))]
            series[METHODS[m]] = [sum(r["metrics"][-1]["test_acc_per_class"][k] for r in recs) / len(recs)
                                  for k in range(len(counts))]
        if series:
            panels.append((f"{lab}: class (training images)", categories, series))
    return panels


def collapse_panels(done, stems: dict, key: str, settings=tuple(SETTINGS)) -> list:
    """One panel per setting of ``settings``: ``key`` of metrics.jsonl vs epoch, one line per label of ``stems``
    ({label: stem suffix}), seed 0."""
    panels = []
    for lab, setting in ((lab, s) for lab, s in LABELS.items() if s in settings):
        series = {}
        for label, suffix in stems.items():
            rec = done.get(f"{setting}_{suffix}_s0")
            if rec is not None:
                pts = [(r["epoch"], r[key]) for r in rec["metrics"] if r.get(key) is not None]
                series[label] = ([e for e, _ in pts], [v for _, v in pts])
        panels.append((lab, series))
    return panels


def gram_panels(done) -> list:
    """Fig. 6: cosine Gram of the (uncentred) training class means at the last epoch, CE / SETF / AL / CAL."""
    from ncollapse.report.plots import normalized_gram
    from ncollapse.report.runs import load_nc_state

    panels = []
    setting = "cifar10_lt_0.01"
    for m in ("ce", "setf", "al", "cal"):
        rec = done.get(f"{setting}_{m}_s0")
        if rec is None or not (rec["dir"] / "nc_state.pt").is_file():
            continue
        state = load_nc_state(rec["dir"] / "nc_state.pt")
        gram = normalized_gram(state["stats"].finalize().means, center=False)
        k = gram.shape[0]
        panels.append((f"{METHODS[m]} (epoch {state['epoch']})", gram, list(map(str, range(k))), list(map(str, range(k))),
                       None))
    return panels


def fig7_grams(done, method: str) -> dict[int, list]:
    """{epoch: cosine Gram} of the smallest class at ``FIG7_EPOCHS``, as the NC passes of the method's seed-0
    run logged it (``eval.gram_samples``, key ``nc/smallest_class_gram``); empty without the run."""
    rec = done.get(f"{FIG7_SETTING}_{method}_s0")
    logged = {r["epoch"]: r["nc/smallest_class_gram"] for r in (rec or {}).get("metrics", [])
              if r.get("nc/smallest_class_gram")}
    return {e: logged[e] for e in FIG7_EPOCHS if e in logged}


def tail_gram_panel(done) -> tuple[list, str]:
    """Fig. 7: cosine Gram of the smallest class's training features at epochs ``FIG7_EPOCHS``, CE and CAL (seed 0)."""
    import numpy as np

    panels, note = [], ""
    for m in ("ce", "cal"):
        grams = fig7_grams(done, m)
        for epoch, gram in grams.items():
            labels = list(map(str, range(len(gram))))
            panels.append((f"{METHODS[m]}, epoch {epoch}", np.asarray(gram), labels, labels, None))
        if grams:
            counts = done[f"{FIG7_SETTING}_{m}_s0"]["info"]["class_counts"]
            k = min(range(len(counts)), key=lambda c: counts[c])
            note = f"class {k}, {counts[k]} training images"
    return panels, note


def tail_gram_said(done) -> str:
    """Mean off-diagonal cosine of Fig. 7's Grams per method and epoch (1 = the class's features collapsed)."""
    parts = []
    for m in ("ce", "cal"):
        means = [sum(g[i][j] for i in range(len(g)) for j in range(len(g)) if i != j) / (len(g) * (len(g) - 1))
                 for g in fig7_grams(done, m).values()]
        if means:
            parts.append(f"{METHODS[m]} {' → '.join(f'{v:.2f}' for v in means)}")
    return "; ".join(parts) or "no runs"


def checkpoint_model(rec, data: Path | None):
    """(model in eval mode with the run's last checkpoint, its training set)."""
    import dataclasses

    from ncollapse.train import build_data, build_model_for, config_from_dict, load_checkpoint

    ckpt = load_checkpoint(rec["dir"] / "checkpoint.pt")
    cfg = config_from_dict(ckpt["config"], "checkpoint")
    if data is not None:
        cfg = cfg.replace(data=dataclasses.replace(cfg.data, root=str(data / SETTINGS[rec["run"]["setting"]][1])))
    train_set, _ = build_data(cfg)
    model = build_model_for(cfg, train_set)
    model.load_state_dict(ckpt["model"])
    return model.eval().requires_grad_(False), train_set


def inputs(train_set, mask):
    """The normalised training images selected by ``mask``, one tensor (the loader's own normalisation)."""
    from ncollapse.data.loader import TensorLoader

    loader = TensorLoader(train_set.images[mask], train_set.labels[mask], len(train_set), shuffle=False,
                          augment=(), mean=train_set.mean, std=train_set.std)
    return next(iter(loader))[0]


def broken(done, data: Path | None) -> str:
    """Runs at chance level or with a class below 50% training accuracy at the end: the class, dead units, loss."""
    out = []
    for rec in done.values():
        if off_protocol(rec["run"]["config"]):
            continue  # their own sections
        last = rec["metrics"][-1]
        k = len(rec["info"]["class_counts"])
        train_pc = last.get("train_eval_acc_per_class") or []
        low = [(c, a) for c, a in enumerate(train_pc) if a < 0.5]
        if last["test_acc"] > 1.5 / k and not low:
            continue
        losses = [r["train_loss"] for r in rec["metrics"]]
        third = losses[-(EPOCHS // 3) - 1]
        flat = abs(losses[-1] - third) / abs(third) if third else math.nan
        out.append(f"- `{rec['run']['name']}`: test accuracy {pct(last['test_acc'])}%; classes below 50% training "
                   f"accuracy: {', '.join(f'{c} ({pct(a)}%)' for c, a in low) or 'none'}; {dead_units(rec, data)} dead; "
                   f"train loss every {max(1, EPOCHS // 10)} epochs "
                   f"{[round(x, 3) for x in losses[:: max(1, EPOCHS // 10)]]}, changed {100 * flat:.1f}% over the "
                   f"last {EPOCHS // 3} epochs{lossp_optimum(rec)}")
    if not out:
        return "none: every run ends above chance with every class at ≥ 50% training accuracy."
    by_method = {}
    for line in out:
        name = line.split("`")[1]
        method = done[name]["run"]["method"]
        by_method[METHODS[method]] = by_method.get(METHODS[method], 0) + 1
    total = {METHODS[m]: sum(r["run"]["method"] == m and not off_protocol(r["run"]["config"])
                             for r in done.values()) for m in METHODS}
    summary = ", ".join(f"{m} {k} of {total[m]}" for m, k in by_method.items())
    alive = all("; 0 of " in line for line in out)
    return (f"Broken runs by method: {summary}. {'None of them has' if alive else 'Some have'} a dead backbone unit."
            "\n\n" + "\n".join(out))


def lossp_optimum(rec) -> str:
    """For Loss P: where the run ended against the trivial point h = 0 (loss 0.5) and the fixed-frame optimum of
    eq. 19 (Yan et al. 2024, Cor. 3.7, from ``ufm.theory``) for the run's frame, counts and λ_H; empty otherwise."""
    from ncollapse.geometry import class_aware_centers
    from ncollapse.ufm import UFMProblem, theory

    cfg = configs()[rec["run"]["config"]][2]
    if cfg["loss"]["name"] != "ncmc_p":
        return ""
    counts, lam = rec["info"]["class_counts"], cfg["loss"]["options"]["feature_penalty"]
    f = class_aware_centers(counts, cfg["model"]["f"], order="sorted")
    best = theory.predict(UFMProblem(loss="ncmc_p", counts=tuple(counts), dim=FEATURE_DIM, centers_per_class=tuple(f),
                                     theta=cfg["model"]["theta"], lambda_h=lam))
    norms = best["feature_norms"]
    return (f". The loss ends at {rec['metrics'][-1]['train_loss']:.3f}: at h = 0 it is mean_i f_(y_i)/(2S̄) = 0.5, "
            f"at eq. 19's fixed-frame optimum {best['loss']:.3f} (‖h*_k‖ = {min(norms):.3g}–{max(norms):.3g}, Cor. 3.7). "
            f"Training stalled near the trivial point (the cause is measured under *Why Loss P stalls*)")


def idle_estimate(done) -> float:
    """Seconds of the protocol's runs at each setting's quickest run's pace (the closest to an idle core)."""
    quickest, count = {}, {}
    for rec in done.values():
        if off_protocol(rec["run"]["config"]):
            continue
        setting, secs = rec["run"]["setting"], rec["summary"]["wall_s"]
        quickest[setting] = min(quickest.get(setting, math.inf), secs)
        count[setting] = count.get(setting, 0) + 1
    return sum(quickest[s] * count[s] for s in quickest)


def diagnosis_stems() -> dict[str, str]:
    """stem -> what the Loss P diagnosis run changes."""
    return {f"{DIAGNOSIS_SETTING}_{suffix}": label for suffix, (label, _) in DIAGNOSIS.items()}


def off_protocol(stem: str) -> bool:
    """Runs with another optimiser setting or budget (the Loss P diagnosis, Fig. 4 under ``LONG``)."""
    return stem in diagnosis_stems() or stem.endswith("_long")


def lossp_diagnosis(done) -> str:
    """Loss P's main run and each diagnosis run (seed 0): last train loss against eq. 19's optimum, classes fitted
    (≥ 50% training accuracy), test accuracy overall and on the tail."""
    rows = {f"{DIAGNOSIS_SETTING}_lossp": "none (the page's protocol)", **diagnosis_stems(),
            f"{DIAGNOSIS_SETTING}_lossp_long": f"lr {LONG['lr']}, {LONG['epochs']} epochs"}
    lines = ["| change | epochs | last train loss | classes ≥ 50% train acc | test acc % | tail test acc % |",
             "|---|---|---|---|---|---|"]
    optimum = ""
    for stem, label in rows.items():
        rec = done.get(f"{stem}_s0")
        if rec is None:
            lines.append(f"| {label} | – | not run | – | – | – |")
            continue
        last = rec["metrics"][-1]
        fitted = sum(a >= 0.5 for a in last.get("train_eval_acc_per_class") or [])
        k = len(rec["info"]["class_counts"])
        lines.append(f"| {label} | {len(rec['metrics'])} | {last['train_loss']:.3f} | {fitted} of {k} | "
                     f"{pct(last['test_acc'])} | {pct(last['test_acc_tail'])} |")
        optimum = optimum or lossp_optimum(rec).split(". Training")[0].split("; ")[0]
    return "\n".join(lines) + "\n\n" + (f"For reference{optimum.replace('. The loss ends at', ': the protocol run ends at')}."
                                        if optimum else "")


def dead_units(rec, data: Path | None) -> str:
    """Backbone feature units that are zero on every training image (dead ReLUs) at the last checkpoint."""
    import torch

    model, train_set = checkpoint_model(rec, data)
    h = model.backbone(inputs(train_set, torch.ones(len(train_set), dtype=torch.bool)))
    return f"{int((h.abs().amax(0) == 0).sum())} of {h.shape[1]} backbone units"


def figures(done, fig_dir: Path) -> dict[str, str]:
    """Write the page's PNGs; returns {key: markdown image line} for those that had runs."""
    from ncollapse.report.page_panels import bar_panels, heatmap_panels, line_panels
    from ncollapse.report.figures import write_png

    figs = {}

    def save(key, fig, caption):
        write_png(fig_dir / f"{key}.png", fig)
        figs[key] = f"![{caption}]({fig_dir.name}/{key}.png)"

    _, curves = convergence(done)
    if curves:
        save("train_per_class", line_panels(curves, "epoch", "training accuracy (eval mode)", ncols=4,
                                            suptitle="Per-class training accuracy, seed 0"),
             "per-class training accuracy curves")
    bars = per_class_panels(done)
    if bars:
        save("fig1_per_class", bar_panels(bars, "test accuracy", suptitle="Fig. 1: per-class test accuracy, mean "
                                          "over seeds"), "Fig. 1 per-class accuracy")
    for key, stems, title, settings in (
            ("fig1_collapse", {"AL": "al", "CAL": "cal"}, "Fig. 1: NCMC collapse, AL vs CAL, seed 0", tuple(SETTINGS)),
            ("fig4_lossp", {"λ_H = 5e-4": "lossp", "λ_H = 5e-4 / N": "lossp_persample", "λ_H = 0": "lossp_noreg"},
             "Fig. 4: Loss P with and without the feature-norm penalty, seed 0", PENALTY_SETTINGS),
            ("fig4_lossp_long", {"λ_H = 5e-4": "lossp_long", "λ_H = 5e-4 / N": "lossp_persample_long",
                                 "λ_H = 0": "lossp_noreg_long"},
             f"Fig. 4 under lr {LONG['lr']}, {LONG['epochs']} epochs: Loss P with and without the penalty, seed 0",
             PENALTY_SETTINGS)):
        panels = [(f"{lab}: NC_ave", series) for lab, series in collapse_panels(done, stems, "ncmc/collapse_mean",
                                                                                 settings)]
        panels += [(f"{lab}: NC_std", series) for lab, series in collapse_panels(done, stems, "ncmc/collapse_std",
                                                                                 settings)]
        if any(series for _, series in panels):
            save(key, line_panels(panels, "epoch", "‖ĥ − w̄^(k)/‖w̄^(k)‖‖² (training set)", log=True,
                                  ncols=len(settings), suptitle=title), title)
    _, _, grid = grid_table(done)
    if grid[1].size and (grid[1] == grid[1]).any():
        save("fig5_grid", heatmap_panels([grid], vmin=0, vmax=1, colorbar="test accuracy",
                                         suptitle="Fig. 5 / Table 6: f × θ"), "Fig. 5 f × θ grid")
    grams = gram_panels(done)
    if grams:
        save("fig6_gram", heatmap_panels(grams, vmin=-1, vmax=1, cmap="RdBu_r", ncols=4, colorbar="cosine",
                                         suptitle="Fig. 6: cosine Gram of the training class means, CIFAR-10-LT, seed 0"),
             "Fig. 6 Gram heatmaps")
    tail, note = tail_gram_panel(done)
    if tail:
        save("fig7_tail_gram", heatmap_panels(tail, vmin=-1, vmax=1, cmap="RdBu_r", ncols=len(FIG7_EPOCHS),
                                              colorbar="cosine",
                                              suptitle=f"Fig. 7: cosine Gram of the smallest class's features ({note})"),
             "Fig. 7 smallest-class Gram")
    return figs



def verify(name: str, root: Path, out: Path) -> dict:
    """Rerun the jsonl line ``name`` with its argv from ``root`` (data under root/../shared/data) into a temporary
    --out, with its thread count; compare the two numbers exactly with the finished run's."""
    lines = {json.loads(x)["name"]: json.loads(x) for x in (ROOT / JSONL).read_text().splitlines() if x.strip()}
    if name not in lines:
        raise ValueError(f"{name!r} is not a line of {JSONL}")
    line = lines[name]
    env = {**os.environ, "OMP_NUM_THREADS": str(line["threads"]), "PYTHONPATH": str(root / "src")}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ncollapse", *line["argv"], "--out", f"{tmp}/run", "--quiet"], cwd=root,
                       env=env, check=True)
        last = json.loads((Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    result = {"name": name, "root": str(root), "commit": subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip(),
        "threads": line["threads"], "seconds": round(time.perf_counter() - t0, 1),
        "final_test_acc": last["test_acc"], "final_tail_acc": last["test_acc_tail"],
        "logged_test_acc": line["final_test_acc"], "logged_tail_acc": line["final_tail_acc"]}
    result["identical"] = (last["test_acc"] == line["final_test_acc"] and last["test_acc_tail"] == line["final_tail_acc"])
    done = json.loads((out / "verify.json").read_text()) if (out / "verify.json").is_file() else []
    done = [c for c in (done if isinstance(done, list) else [done]) if c["name"] != name] + [result]
    atomic_write_text(out / "verify.json", json.dumps(done, indent=1) + "\n")
    return result


def render(runs, out: Path, doc: Path, data: Path | None) -> None:
    done = load(runs, out)
    atomic_write_text(ROOT / JSONL, jsonl_lines(runs, done))
    fig_dir = doc.parent / doc.stem
    fig_dir.mkdir(parents=True, exist_ok=True)
    figs = figures(done, fig_dir)
    diff_table, result = differences(done)
    grid_md, grid_said, _ = grid_table(done)
    conv_md, _ = convergence(done)
    missing = [r["name"] for r in runs if r["name"] not in done]
    seconds = [r["summary"]["wall_s"] for r in done.values() if not off_protocol(r["run"]["config"])]
    later = [r["summary"]["wall_s"] for r in done.values() if off_protocol(r["run"]["config"])]
    threads = sorted({r["info"]["environment"]["threads"] for r in done.values()})
    checks = json.loads((out / "verify.json").read_text()) if (out / "verify.json").is_file() else []
    checks = checks if isinstance(checks, list) else [checks]
    check_md = "\n".join(
        f"- `{c['name']}` rerun with its `argv` from `{c['root']}` (commit {c['commit']}, {c['threads']} thread): "
        f"final_test_acc {c['final_test_acc']!r}, final_tail_acc {c['final_tail_acc']!r}; the jsonl line says "
        f"{c['logged_test_acc']!r} and {c['logged_tail_acc']!r}: **{'identical' if c['identical'] else 'DIFFERENT'}**."
        for c in checks) or "Not run yet (`python benchmarks/ncmc_cpu.py --verify NAME --root PATH`)."
    sizes = "; ".join(f"{lab}: n_max {SETTINGS[s][3]}, τ {SETTINGS[s][2]:g}, test "
                      f"{'all images' if not SETTINGS[s][4] else f'{SETTINGS[s][4]} per class'}, head n > {SETTINGS[s][5][0]}"
                      f", tail n < {SETTINGS[s][5][1]}" for lab, s in LABELS.items())
    fig = figs.get
    text = f"""# NCMC at CPU scale: LeNet-5 with BatchNorm, four long-tailed settings, seven methods

Produced by `python benchmarks/ncmc_cpu.py` (this page, its figures in `{fig_dir.name}/` and
`{JSONL.name}` are rewritten by it from the run directories under `runs/ncmc_cpu/`, git-ignored). Each line of
[`{JSONL.name}`]({JSONL.name}) is one run: its `ncollapse` arguments (from the repo root, data under
`../shared/data`, add `--out DIR`), thread count, seconds and last-epoch `test_acc` / `test_acc_tail` as logged.

## Protocol

- **Backbone: LeNet-5 with a BatchNorm before every ReLU** (`model.name = "lenet"`, `options = {{batch_norm = true}}`,
  62k parameters, an 84-d feature). Chosen for speed on one CPU thread: 0.42 M multiply-adds per 28 × 28 image,
  5.5× fewer than a width-8 ResNet-8 (`model.name = "resnet8"`, 2.3 M). In a pilot on Fashion-MNIST-LT τ = 0.005
  (batch 128, lr 0.1, no augmentation) that ResNet-8 still had coat, shirt and sneaker at 0–2% training accuracy
  after 9 epochs, while this LeNet reached 100% on every class by epoch 18 (CE) and a plateau by epoch 21 (CAL).
  BatchNorm is what the old page's LeNet lacked (57 of 84 dead units, classes never learnt).
- **Data** (subset seed 0, the same images for every method and seed): {sizes}. MNIST and Fashion-MNIST are
  subsampled to n_max = 1000 (the full profile would allow 5,421 / 6,000) and tested on a seeded balanced
  100-per-class subset of the test split, to fit the CPU budget; CIFAR-10 is the shared subset (≥ 541 images per
  class) made long-tailed at n_max = 500, tested on all 1,017 test images. No augmentation, so that training
  reaches its plateau on every class within the budget.
- **Same optimiser and budget for every method**: SGD lr 0.05, momentum 0.9, weight decay 5e-4, batch 64,
  cosine schedule with a 1-epoch warm-up, **{EPOCHS} epochs**, no mixup, 1 thread per run ({', '.join(map(str, threads)) or '–'}
  recorded), 2 runs at a time.
- **Methods**: CE (linear head); BS, balanced softmax (Ren et al. 2020; logit adjustment with τ = 1); LDAM-DRW
  (cosine classifier, s 30, max margin 0.5, DRW from epoch index {int(0.8 * EPOCHS)}); SETF (fixed simplex ETF after
  BatchNorm + L2, dot regression); Loss P (eq. 18–19, fixed class-aware frame, λ_H = 5e-4 in eq. 19's meaning);
  AL and CAL (extra linear layer to {FEATURE_DIM} ≥ (f+1)K = 210, BatchNorm, fixed frame f = {F}, θ = {THETA}, weighted
  cosine loss, λ = 6e-4, RCR). Configs: `configs/ncmc_cpu/`.
- **Seeds** {', '.join(map(str, SEEDS))} (initialisation, frame, batch order) for the main comparison; the f × θ grid
  and Loss P without its penalty use seed 0.
- **Scale**: {EPOCHS}-epoch LeNet runs on 1,100–2,500 images test the direction of the paper's claims, not its
  numbers (ResNet-50, 200 epochs, 10k+ images).

## Per-class training accuracy: where training ends

Per-class training accuracy is logged every 3 epochs (eval mode, no augmentation: `train_eval_acc_per_class`).
Each cell: lowest class's training accuracy at epoch {EPOCHS} / largest change of any class's training accuracy over
the last {EPOCHS // 3} epochs (mean over seeds, %). A small second number is a plateau. The smallest classes hold
{min(SETTINGS[s][3] * SETTINGS[s][2] for s in SETTINGS):.0f}–{max(SETTINGS[s][3] * SETTINGS[s][2] for s in SETTINGS):.0f} \
training images, so one image moves their accuracy by 10–20 points; LDAM-DRW changes when its re-weighting starts
(epoch index {int(0.8 * EPOCHS)}). A first number of 0 means some class is never fitted: those runs are listed under
"Runs that broke down" with their loss curves.

{conv_md}
{fig('train_per_class', '')}

## Accuracy

Mean ± sample std (ddof 1) over seeds, %, last epoch. (n=…) marks a cell with fewer seeds than planned.

{accuracy_tables(done)}
The same tables from the CLI, read from the run directories (its cells take only runs of the shared budget, so the
grid and the Loss P runs off the protocol stay out): `ncollapse table --layout cpu --runs runs/ncmc_cpu --metric final`
(`--metric head`, `medium`, `tail` for the others; `--layout cpu-ncmc --metric collapse` for the NCMC metrics).

## Paired differences CAL − X (percentage points, last epoch)

Mean over seeds of the per-seed difference (same seed: same data, same initialisation of the shared backbone
layers), with its 95% Student-t interval over seeds (n − 1 degrees of freedom). ▲ / ▼: the interval lies above / below
zero. With 3 seeds the interval is wide (t = 4.30); an interval across zero means *not resolved*, not *equal*.

{diff_table}
## Which of the paper's claims hold at this scale

{claims(done, result, grid_said)}

Only what the intervals above support is claimed; everything else is stated as not resolved.

## f × θ grid (Table 6 / Fig. 5): CAL, Fashion-MNIST-LT τ = 0.005, seed 0

Overall / tail test accuracy (%), last epoch, with the decision rule of each cell. At θ = 0 every center is
orthogonal to W_0 and RCR has no signal, so those cells are scored (and logged) with GCR, argmax_k max_j ⟨w_j^(k), ĥ⟩
(`eval.decision = "gcr"`).

{grid_md}
From the CLI (overall accuracy): `ncollapse table --layout cpu-grid --runs runs/ncmc_cpu --metric final`.

{fig('fig5_grid', '')}

## Figures

{fig('fig1_per_class', 'Fig. 1 (per-class accuracy): no runs yet.')}

{fig('fig1_collapse', 'Fig. 1 (collapse curves): no runs yet.')}

{fig('fig4_lossp', 'Fig. 4: no runs yet.')}

{fig('fig4_lossp_long', 'Fig. 4 under the long budget: no runs yet.')}

{fig('fig6_gram', 'Fig. 6: no runs yet.')}

Fig. 7 of the paper shows the within-class Gram of the smallest class's features collapsing early in training. The
CIFAR-10 CE and CAL configs log it at every NC pass (`eval.gram_samples = 16`, key `nc/smallest_class_gram`); the
panel shows seed 0 at epochs {', '.join(map(str, FIG7_EPOCHS))}. Mean off-diagonal cosine at those epochs: {tail_gram_said(done)}.

{fig('fig7_tail_gram', 'Fig. 7: no runs yet.')}

## Why Loss P stalls

Every Loss P run of the protocol ends near the trivial point h = 0. Loss P's main config on Fashion-MNIST-LT
τ = 0.005, seed 0, with one optimiser setting changed at a time:

{lossp_diagnosis(done)}

Weight decay is not the cause (0 changes nothing), and a smaller learning rate is no better. A 10× larger learning
rate and a 4× longer schedule together reach eq. 19's optimum and fit every class: Loss P's gradient is small
(the residual is divided by 2S̄, the targets are 0/1 projections on unit centers), so at the protocol's shared
lr 0.05 and {EPOCHS} epochs it has not left the neighbourhood of h = 0. Its row in the tables therefore measures
Loss P under a budget that suits the other methods, not Loss P at its optimum. Fig. 4's penalty comparison is
repeated under lr {LONG['lr']} and {LONG['epochs']} epochs (second Fig. 4 panel, claim 8).

## Runs that broke down

Runs at chance level, or with a class under 50% training accuracy at the last epoch, with the dead backbone units
(zero on every training image) and the training loss curve:

{broken(done, data)}

## Reproduction check

{check_md}

## Budget

{len(done)} of {len(runs)} runs finished; training time summed over runs {sum(seconds) / 60:.1f} min
(2 runs at a time on a 2-core machine that other jobs were loading heavily for most runs), so a run took
{min(seconds, default=math.nan):.0f}–{max(seconds, default=math.nan):.0f} s (median
{statistics.median(seconds) if seconds else math.nan:.0f} s). At each setting's quickest run's pace, which is closest to an idle
core, the protocol's runs take about {idle_estimate(done) / 2 / 60:.0f} min on two idle cores.
These figures leave out the {len(later)} Loss P runs with another learning rate or budget, trained later on the idle machine
({min(later, default=math.nan):.0f}–{max(later, default=math.nan):.0f} s each, {sum(later) / 60:.1f} min in all).
Missing runs: {', '.join(f'`{m}`' for m in missing) if missing else 'none'}.

```bash
python benchmarks/ncmc_cpu.py                  # trains what is missing, then rewrites this page and the jsonl
ncollapse {shlex.join(argv_of(runs[0]))} --out runs/check   # any single run
```
"""
    atomic_write_text(doc, text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "ncmc_cpu", help="folder of the run directories")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "results" / "ncmc_cpu.md")
    p.add_argument("--data", type=Path, default=None,
                   help="data folder when ../shared/data is not beside the checkout (recorded argv omits it)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--render-only", action="store_true")
    p.add_argument("--write-configs", action="store_true")
    p.add_argument("--verify", metavar="NAME", help="rerun this jsonl line from --root and compare exactly")
    p.add_argument("--root", type=Path, default=ROOT, help="checkout to rerun --verify from (../shared beside it)")
    args = p.parse_args(argv)
    if args.write_configs:
        write_configs()
        return 0
    runs, out = plan(), args.out.resolve()
    data = args.data.resolve() if args.data else None
    if args.verify:
        result = verify(args.verify, args.root.resolve(), out)
        print(json.dumps(result), file=sys.stderr)
    elif not args.render_only:
        train_all(runs, out, args.jobs, lambda run: argv_of(run) + (
            [] if data is None else ["--set", f"data.root={data / SETTINGS[run['setting']][1]}"]))
    render(runs, out, args.doc.resolve(), data)
    print(f"wrote {args.doc} and {JSONL}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

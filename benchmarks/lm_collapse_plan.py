"""The plan of the linguistic-collapse page (issue 21): its runs, their commands, the metrics it reports and the
rank-correlation statistics; shared by ``lm_collapse.py`` (training, the runs file) and ``lm_collapse_page.py``
(the page)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import stats

CONFIGS = Path("configs/lm")
JSONL = Path("docs/results/lm_collapse_runs.jsonl")
SIZES = ("small", "medium", "large")
SEEDS = (0, 1)
BIG_VOCAB, BIG_SIZE = 32768, "small"
#: (metric key, label, direction that Wu & Papyan 2024 report as "more collapse")
METRICS = (("cdnv", "CDNV (within-class variability)", "down"),
           ("nc1_quotient", "NC1 quotient tr Σ_W / tr Σ_B", "down"),
           ("nc1", "NC1 tr(Σ_W Σ_B⁺)/K", "down"),
           ("gnc2_log_var", "GNC2: variance of log distances (uniformity)", "down"),
           ("unc3", "UNC3: CoV of ⟨w_k, μ_k − μ_G⟩ (uniform duality)", "down"),
           ("duality_cos_mean", "mean cos(w_k, μ_k − μ_G)", "up"),
           ("self_duality", "self-duality error", "down"),
           ("ncc_agreement", "NC4: NCC / argmax agreement", "up"))


def plan() -> list[dict]:
    """Every run in training order: seed 0 of each size first, so a cut-short benchmark still spans the sizes."""
    runs = [{"name": f"{size}_v8192_s{seed}", "config": size, "seed": seed, "vocab": 8192}
            for seed in SEEDS for size in reversed(SIZES)]
    runs.insert(3, {"name": f"{BIG_SIZE}_v{BIG_VOCAB}_s0", "config": BIG_SIZE, "seed": 0, "vocab": BIG_VOCAB})
    return runs


def argv_of(run: dict) -> list[str]:
    """The ``ncollapse`` arguments of a run (repo root, text under ../shared/data/text, no --out)."""
    argv = ["train", "--config", str(CONFIGS / f"{run['config']}.toml"), "--set", f"train.seed={run['seed']}"]
    return argv + (["--set", f"lm.vocab_size={run['vocab']}"] if run["vocab"] != 8192 else [])


# ------------------------------------------------------------------------------------------ reading runs

def jsonl_lines(runs, done) -> str:
    lines = []
    for run in runs:
        if run["name"] not in done:
            continue
        r = done[run["name"]]
        last = r["metrics"][-1]
        numbers = {f"{split}/{key}": last.get(f"{split}/{key}") for split in ("nc", "nc_test")
                   for key, _, _ in METRICS + (("token_share", "", ""), ("vocab_share", "", ""))}
        lines.append(json.dumps({
            "name": run["name"], "argv": argv_of(run), "threads": r["info"]["environment"]["threads"],
            "tokens": r["summary"]["tokens"], "seconds": round(r["summary"]["wall_s"], 1),
            "parameters": r["info"]["parameters"], "vocab_size": run["vocab"],
            "final_val_loss": r["summary"]["final_val_loss"], "final_train_loss": r["summary"]["final_train_loss"],
            **numbers}))
    return "".join(f"{line}\n" for line in lines)


def bootstrap_spearman(x, y, draws: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(ρ, 2.5%, 97.5%) of Spearman's ρ between x and y, percentile bootstrap over the pairs."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    rho = float(stats.spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(draws):
        i = rng.integers(0, len(x), len(x))
        if len(set(x[i])) > 1 and len(set(y[i])) > 1:
            boot.append(stats.spearmanr(x[i], y[i]).statistic)
    low, high = np.percentile(boot, [2.5, 97.5]) if boot else (float("nan"), float("nan"))
    return rho, float(low), float(high)

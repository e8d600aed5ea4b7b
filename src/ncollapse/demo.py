"""The embedded demo (``ncollapse demo``, run by ``make demo``): no downloads, a few CPU minutes at most.

1. scikit-learn's digits (``load_dataset("digits")``) made long-tailed with the exponential profile, imbalance
   0.1 (``make_longtail``; 143 → 14 images per class);
2. two runs of ``ncollapse.train.train`` with the same MLP: cross-entropy with a learnable linear classifier, and
   NCMC's CAL (Yan et al. 2024): the fixed multi-center frame with class-aware center counts and the cosine loss;
3. a batched UFM sweep (``ncollapse.ufm.solve``) over 9 imbalance ratios from 1 to 0.01 and 3 seeds for the CE
   and the NCMC objectives: the mean cosine between minority-class means (Fang et al. 2021's minority collapse;
   at the 8 ratios τ < 1, since τ = 1 has no minority), the theory behind 2, and NC1 of the unit-normalised
   features h/‖h‖ (NCMC's cosine loss fixes directions, and its weak norm term λ(‖h‖ − 1)², λ = 6e-4,
   leaves the norms spread, so raw NC1 of its features measures that spread, 0.07 … 2.5 across ratios and
   seeds, not collapse), all drawn as mean ± std over the seeds;
4. one comparison page ``OUT/report.html`` (``ncollapse.report.write_comparison``) with the sweep as an extra section.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
import warnings
from pathlib import Path

from .data import longtail_counts
from .geometry import class_aware_centers
from .io_safe import Outputs
from .metrics import measure_features
from .report.figures import figure_row
from .report.html import claim_page, html_table, write_comparison
from .report.notes import PREFIX, collected
from .report.runs import read_metrics
from .serialize import to_jsonable
from .train import config_from_dict, train
from .ufm import UFMProblem, group_problems, solve

__all__ = ["run_demo", "demo_configs", "ufm_sweep", "sweep_stats", "summary_lines", "IMBALANCES", "MINORITY_RATIOS",
           "SEEDS"]

log = logging.getLogger(__name__)

IMBALANCES = (1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01)  # τ = 1 has no minority: NC1 only
MINORITY_RATIOS = tuple(t for t in IMBALANCES if t < 1)  # the ratios with minority cosines
SEEDS = 3
RUNS = {"ce": "CE (linear head)", "cal": "CAL (NCMC multi-center head)"}


def demo_configs(epochs: int = 30, seed: int = 0) -> dict:
    """The two training configs: {"ce": Config, "cal": Config}."""
    base = {"data": {"name": "digits", "imbalance": 0.1, "augment": []},
            "model": {"name": "mlp", "options": {"widths": [256, 256]}},
            "optim": {"lr": 0.05, "weight_decay": 5e-4},
            "schedule": {"name": "cosine", "warmup_epochs": 1},
            "train": {"epochs": epochs, "batch_size": 64, "seed": seed, "threads": 1},
            "eval": {"nc_every": 5, "group_thresholds": [50, 20]}}
    cal = {**base, "model": {**base["model"], "head": "multicenter", "centers": "class_aware", "f": 3,
                             "theta": 0.2, "feature_dim": 64},
           "loss": {"name": "ncmc_cosine"}}
    return {"ce": config_from_dict({**base, "loss": {"name": "ce"}}, "demo (ce)"),
            "cal": config_from_dict(cal, "demo (cal)")}


def ufm_sweep(num_classes: int = 10, n_max: int = 100, dim: int = 48, steps: int = 200, seed: int = 0,
              seeds: int = SEEDS) -> list[dict]:
    """CE and NCMC-cosine UFMs (``ncollapse.ufm``) at each imbalance of ``IMBALANCES`` and each of ``seeds`` seeds
    (from ``seed`` on), solved as stacked batches; one row per instance with the loss, NC1 of the features and of the
    unit-normalised features h/‖h‖ (``nc1_unit``: the directions NCMC's cosine loss optimises; Yan et al. 2024,
    eq. 20), and the mean cosine among the minority (second half) class means and classifiers (Fang et al. 2021,
    §4: minority collapse shows as cosines → 1; none at τ = 1)."""
    problems, keys = [], []
    for loss in ("ce", "ncmc_cosine"):
        for tau in IMBALANCES:
            counts = tuple(longtail_counts(n_max, num_classes, tau))
            extra = {} if loss == "ce" else {"centers_per_class": tuple(class_aware_centers(list(counts), 3))}
            for s in range(seed, seed + seeds):
                problems.append(UFMProblem(loss=loss, counts=counts, dim=dim, seed=s, **extra))
                keys.append((tau, s))
    minority = list(range(num_classes // 2, num_classes))
    rows: list[dict] = [{} for _ in problems]
    for members in group_problems(problems):
        result = solve([problems[i] for i in members], optimizer="lbfgs", steps=steps, record_metrics=False)
        for j, i in enumerate(members):
            x, y = result.features(j)
            w, b = result.classifier(j)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = measure_features(x, y, W=w, b=b, num_classes=num_classes, group_counts=list(problems[i].counts),
                                     minority=minority)
                unit = measure_features(x / x.norm(dim=1, keepdim=True).clamp(min=1e-12), y, num_classes=num_classes)
            rows[i] = {"loss": problems[i].loss, "imbalance": keys[i][0], "seed": keys[i][1],
                       "counts": list(problems[i].counts), "objective": float(result.objective[j]), "nc1": m["nc1"],
                       "nc1_unit": unit["nc1"],
                       "minority_cos_means": m.get("minority_cos_means_mean"),
                       "minority_cos_weights": m.get("minority_cos_weights_mean")}
    return rows


def sweep_stats(rows: list[dict], key: str) -> dict[str, tuple[list[float], list[float], list[float]]]:
    """{loss: (imbalances, mean over seeds, std over seeds (ddof 0))} of ``key``, imbalances in IMBALANCES order."""
    out = {}
    for loss in dict.fromkeys(r["loss"] for r in rows):
        taus, means, stds = [], [], []
        for tau in IMBALANCES:
            values = [r[key] for r in rows if r["loss"] == loss and r["imbalance"] == tau and r[key] is not None]
            if values:
                mean = sum(values) / len(values)
                taus.append(tau)
                means.append(mean)
                stds.append(math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)))
        out[loss] = (taus, means, stds)
    return out


def _sweep_figure(rows: list[dict]):
    fig, (ax, ax2) = figure_row(11, 3.8, ncols=2)
    seeds = len({r["seed"] for r in rows})
    for a, key in ((ax, "minority_cos_means"), (ax2, "nc1_unit")):
        for (loss, (taus, mean, std)), (style, color) in zip(sweep_stats(rows, key).items(),
                                                             (("-o", "C0"), ("-s", "C1"))):
            a.errorbar(taus, mean, yerr=std, fmt=style, color=color, ms=4, capsize=3, label=loss)
    k = len(rows[0]["counts"])
    ax.axhline(-1 / (k - 1), color="grey", lw=0.8, ls=":", label="simplex −1/(K−1)")
    for a in (ax, ax2):
        a.set_xscale("log")
        a.invert_xaxis()
        a.set_xlabel("imbalance τ = n_min / n_max")
        a.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        a.grid(True, alpha=0.3)
    ax.set_ylabel("mean cos between minority class means")
    ratios = {key: len(sweep_stats(rows, key)["ce"][0]) for key in ("minority_cos_means", "nc1_unit")}
    ax.set_title(f"minority collapse (Fang et al. 2021) vs NCMC\n{ratios['minority_cos_means']} ratios τ < 1, "
                 f"mean ± std over {seeds} seeds", fontsize=10)
    ax2.set_yscale("log")
    ax2.set_ylabel("NC1 of h / ‖h‖")
    ax2.set_title(f"NC1 of the unit-normalised features\n{ratios['nc1_unit']} ratios, mean ± std over {seeds} seeds",
                  fontsize=10)
    return fig


SWEEP_NOTE = (f"<p class=sub>Left: τ = 1 has no minority, so the cosines cover the {len(MINORITY_RATIOS)} ratios "
              f"τ &lt; 1; NC1 covers all {len(IMBALANCES)}. "
              "NC1 is measured on the unit-normalised features h/‖h‖ for both losses: NCMC's cosine loss fixes "
              "only the features' directions (its norm term λ(‖h‖ − 1)², λ = 6e-4, barely pins the norms), so NC1 "
              "of its "
              "raw features measures the leftover spread of norms and jumps between ratios and seeds (the table's "
              "raw NC1 column); on h/‖h‖ both objectives collapse.</p>")


def _sweep_table(rows: list[dict]) -> str:
    stats = {k: sweep_stats(rows, k) for k in ("minority_cos_means", "minority_cos_weights", "nc1", "nc1_unit")}
    counts = {(r["loss"], r["imbalance"]): r["counts"] for r in rows}

    def cell(key, loss, tau, fmt):
        taus, mean, std = stats[key][loss]
        return "—" if tau not in taus else f"{mean[taus.index(tau)]:{fmt}} ± {std[taus.index(tau)]:{fmt}}"

    body = [[loss, tau, " ".join(map(str, counts[(loss, tau)])), cell("nc1_unit", loss, tau, ".1g"),
             cell("nc1", loss, tau, ".2g"), cell("minority_cos_means", loss, tau, ".3f"),
             cell("minority_cos_weights", loss, tau, ".3f")]
            for loss in stats["nc1"] for tau in IMBALANCES if (loss, tau) in counts]
    return html_table(["UFM loss", "τ", "counts", "NC1 of h/‖h‖", "NC1 (raw features)", "minority cos (means)",
                       "minority cos (classifiers)"], body)


def summary_lines(info: dict) -> list[str]:
    """The five lines the CLI prints at the end."""
    def pct(v):
        return "—" if v is None else f"{100 * v:.1f}%"

    lines = [f"digits-LT (imbalance 0.1): {sum(info['class_counts'])} training images, class counts "
             f"{info['class_counts'][0]} → {info['class_counts'][-1]}"]
    for key, label in RUNS.items():
        s = info["runs"][key]
        lines.append(f"{label:<30} test {pct(s['final_test_acc'])}  head {pct(s['test_acc_head'])}  tail "
                     f"{pct(s['test_acc_tail'])}  NC1 {s['nc1']:.3g}")
    stats = sweep_stats(info["ufm"], "minority_cos_means")
    ce = dict(zip(stats["ce"][0], stats["ce"][1]))
    nc = dict(zip(stats["ncmc_cosine"][0], stats["ncmc_cosine"][1]))
    tau = min(ce)
    lines.append(f"UFM sweep ({len(info['ufm'])} instances): minority-mean cosine at τ={tau:g} (mean over seeds): "
                 f"CE {ce[tau]:.3f}, NCMC {nc[tau]:.3f} (simplex −0.111)")
    lines.append(f"total {info['wall_s']:.0f} s; figures and JSON beside the report")
    return lines


def run_demo(out_dir="runs/demo", epochs: int = 30, seed: int = 0, progress: bool = False, log_fn=None,
             force: bool = False) -> dict:
    """Run the demo into ``out_dir``; returns {"report", "class_counts", "runs", "ufm", "wall_s", "summary"}.

    An earlier demo in ``out_dir`` is refused unless ``force`` (then its runs are replaced).
    """
    say = log_fn or log.info
    out = Path(out_dir)
    earlier = [name for name in ("demo.json", "report.html", *RUNS) if (out / name).exists()]
    if earlier and not force:
        raise ValueError(f"{out} holds an earlier demo ({', '.join(earlier)}); pass --force to replace it or "
                         "--out a new folder")
    with Outputs(force=force) as outputs:  # claimed before training; --force also replaces an edited report
        claim_page(outputs, out / "report.html")
        outputs.claim(out / "demo.json", "demo json")
        info = _run(out, epochs, seed, progress, say, force, outputs)
        outputs.write_json(out / "demo.json", to_jsonable(info))
    return info


def _run(out: Path, epochs: int, seed: int, progress: bool, say, force: bool, outputs: Outputs) -> dict:
    """The demo's work (``run_demo`` holds the claims): two trainings, the UFM sweep and the comparison page."""
    start = time.perf_counter()
    runs = {}
    for i, (key, cfg) in enumerate(demo_configs(epochs, seed).items(), start=1):
        run_dir = out / key
        if force and run_dir.is_dir():
            shutil.rmtree(run_dir)
        say(f"[{i}/4] training {RUNS[key]} on digits-LT for {epochs} epochs -> {run_dir}")
        summary = train(cfg, run_dir, device="cpu", progress=progress, command="ncollapse demo")
        if summary.get("status") != "finished":
            raise KeyboardInterrupt
        nc = [m for m in read_metrics(run_dir / "metrics.jsonl") if "nc/nc1" in m][-1]
        runs[key] = {**summary, "nc1": nc["nc/nc1"]}
    say(f"[3/4] solving the UFM sweep (CE and NCMC, {len(IMBALANCES)} imbalance ratios 1 … 0.01 of which "
        f"{len(MINORITY_RATIOS)} have a minority, {SEEDS} seeds, batched L-BFGS)")
    rows = ufm_sweep(seed=seed)
    say("[4/4] writing the comparison report")
    counts = json.loads((out / "ce" / "run.json").read_text())["class_counts"]
    with collected() as notes:  # the page's notes, said through log_fn like the demo's other lines
        report = write_comparison([out / k for k in RUNS], out / "report.html", labels=list(RUNS.values()),
                                  extra_sections=[("UFM sweep: minority collapse under imbalance", _sweep_figure(rows)),
                                                  ("UFM sweep: values", SWEEP_NOTE + _sweep_table(rows))],
                                  outputs=outputs)
    for note in dict.fromkeys(notes):
        say(f"{PREFIX}{note}")
    info = {"report": str(report), "class_counts": counts, "runs": runs, "ufm": rows,
            "wall_s": time.perf_counter() - start}
    info["summary"] = summary_lines(info)
    return info

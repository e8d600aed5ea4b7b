"""Run every quick experiment config (configs/experiments/) through the CLI and write docs/results/experiments.md
plus docs/results/experiments_runs.jsonl (one line per run: arguments, threads, seconds, scalar results).

    python benchmarks/run_experiments.py                      # all six, then the results page
    python benchmarks/run_experiments.py --only transfer      # one; the other sections keep their last text
    python benchmarks/run_experiments.py --set data.root=DIR  # passed to every run (data.root must fit every config)

Each run is ``ncollapse experiment NAME --config C --out runs/experiments/NAME --quiet --json`` in a subprocess,
so the page quotes the exact commands; an existing runs/experiments/NAME is replaced.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RUNS = {
    "test-collapse": "configs/experiments/test_collapse_mnist.toml",
    "cdnv-gap": "configs/experiments/cdnv_gap_fashion.toml",
    "layerwise-ncc": "configs/experiments/layerwise_mnist.toml",
    "random-labels": "configs/experiments/random_labels_mnist.toml",
    "transfer": "configs/experiments/transfer_mnist.toml",
    "fixed-classifiers": "configs/experiments/fixed_classifiers_fashion.toml",
    "lesde-fit": "configs/experiments/lesde_fit_mnist.toml",
}


def f(value, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def pct(value) -> str:
    return "—" if value is None else f"{100 * value:.2f} %"


def table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(map(str, r)) + " |"
                                                                             for r in rows]


def thin(rows: list, n: int = 6) -> list:
    """At most ``n`` rows, evenly spaced, first and last kept."""
    if len(rows) <= n:
        return rows
    step = (len(rows) - 1) / (n - 1)
    return [rows[round(i * step)] for i in range(n)]


def section_test_collapse(r: dict) -> list[str]:
    fin = r["final"]
    lines = table(["features", "NC1", "CDNV"], [
        ["train (labels)", f(fin["train/nc1"]), f(fin["train/cdnv"])],
        ["test, strong (true labels)", f(fin["test/nc1"]), f(fin["test/cdnv"])],
        ["test, weak (predicted labels)", f(fin["test_weak/nc1"]), f(fin["test_weak/cdnv"])]])
    lines += ["", f"Train accuracy {pct(fin['train/acc'])}, test accuracy {pct(fin['test/acc'])}, NCC test accuracy "
              f"with the training means {pct(fin['test/ncc_acc'])}. Test NC1 / train NC1 = "
              f"{f(r['nc1_test_over_train'], 3)}; weak / strong test NC1 = {f(r['nc1_weak_over_strong'], 3)}.", ""]
    lines += table(["epoch", "train NC1", "test NC1 (strong)", "test NC1 (weak)", "train acc", "test acc"],
                   [[t["epoch"], f(t["train/nc1"]), f(t["test/nc1"]), f(t["test_weak/nc1"]), pct(t["train/acc"]),
                     pct(t["test/acc"])] for t in thin(r["trajectory"])])
    return lines


def section_cdnv(r: dict) -> list[str]:
    fin = r["final"]
    lines = table(["quantity", "value"], [
        ["train CDNV (last epoch)", f(fin["train_cdnv"])], ["test CDNV (last epoch)", f(fin["test_cdnv"])],
        ["test / train CDNV", f(r["test_over_train_cdnv"], 3)],
        ["gap = train acc − test acc", pct(fin["gap"])],
        ["Spearman(test CDNV, gap) over probes", f(r["spearman_test_cdnv_gap"], 3)],
        ["Spearman(test CDNV, test error) over probes", f(r["spearman_test_cdnv_test_error"], 3)]])
    lines += [""] + table(["epoch", "train CDNV", "test CDNV", "train acc", "test acc", "gap"],
                          [[t["epoch"], f(t["train/cdnv"]), f(t["test/cdnv"]), pct(t["train/acc"]),
                            pct(t["test/acc"]), pct(t["gap"])] for t in thin(r["trajectory"])])
    return lines


def section_layerwise(r: dict) -> list[str]:
    lines = table(["depth", "block", "NCC train acc", "NCC test acc", "NC1", "CDNV"],
                  [[x["depth"], x["layer"], pct(x["ncc_train_acc"]), pct(x["ncc_test_acc"]), f(x["nc1"]), f(x["cdnv"])]
                   for x in r["layers"]])
    depths = ", ".join(f"ε = {eps}: {'not reached' if d is None else d}" for eps, d in r["effective_depth"].items())
    return lines + ["", f"ε-effective depth (of {r['num_layers']} blocks): {depths}. Final test accuracy "
                        f"{pct(r['summary']['final_test_acc'])}."]


def section_random(r: dict) -> list[str]:
    keys = ["nc/nc1", "nc/etf_error_means", "nc/self_duality", "nc/ncc_mismatch"]
    return table(["labels", "train acc", "test acc", "NC1", "NC2 ETF error", "NC3 self-duality", "NC4 NCC mismatch"],
                 [[label, pct(v["train_acc"]), pct(v["test_acc"]), *[f(v[k]) for k in keys]]
                  for label, v in r["final"].items()]) + [
        "", f"{r['fraction_labels_unchanged']:.1%} of the shuffled labels happen to equal the true ones."]


def section_transfer(r: dict) -> list[str]:
    fin = r["final"]
    shots = sorted({int(k.split("_")[1].removesuffix("shot")) for k in fin if k.startswith("ridge_") and "ci95" not in k})
    lines = [f"Source classes {r['source_classes']}, target classes {r['target_classes']}; {r['episodes']} episodes, "
             f"{r['queries_per_class']} queries per class, ridge λ = {r['ridge']}. Last epoch: source CDNV "
             f"{f(fin['source_cdnv'])}, target CDNV {f(fin['target_cdnv'])}, source test accuracy "
             f"{pct(fin['source_test_acc'])}.", ""]
    lines += table(["shots", "NCC accuracy", "ridge accuracy", "Spearman(source CDNV, ridge acc) over probes"],
                   [[n, f"{pct(fin[f'ncc_{n}shot'])} ± {pct(fin[f'ncc_{n}shot_ci95'])}",
                     f"{pct(fin[f'ridge_{n}shot'])} ± {pct(fin[f'ridge_{n}shot_ci95'])}",
                     f(r["spearman_source_cdnv_ridge_acc"][f"{n}shot"], 3)] for n in shots])
    lines += [""] + table(["epoch", "source CDNV", "target CDNV", *[f"{n}-shot ridge" for n in shots]],
                          [[t["epoch"], f(t["source/cdnv"]), f(t["target/cdnv"]),
                            *[pct(t[f"fewshot/ridge_{n}shot"]) for n in shots]] for t in thin(r["trajectory"])])
    return lines


def section_fixed(r: dict) -> list[str]:
    return table(["head", "feature dim", "max cos(w_k, w_l)", "train acc", "test acc", "NC1", "NC2 ETF error",
                  "NC3 self-duality"],
                 [[h, v["feature_dim"], f(v["max_classifier_cos"], 3), pct(v["train_acc"]), pct(v["test_acc"]),
                   f(v["nc/nc1"]), f(v["nc/etf_error_means"]), f(v["nc/self_duality"])] for h, v in r["heads"].items()])


def section_lesde(r: dict) -> list[str]:
    fit = r["fit"]
    lines = table(["quantity", "value"], [
        ["α (intra-class impact, per epoch)", f(fit["alpha"])], ["β (inter-class impact, per epoch)", f(fit["beta"])],
        ["relative residual of the drift", f(fit["residual"], 3)],
        ["ETF mode rate c(α + (K−1)β)", f(fit["rates"]["etf_mode"])],
        ["other modes' rate c(α − β)", f(fit["rates"]["other_modes"])],
        ["ETF condition (β > 0 and α + (K−1)β > 0)", "holds" if fit["etf_condition"] else "fails"],
        ["steps whose local fit satisfies it", f"{r['local_etf_fraction']:.0%}"]])
    lines += ["", f"{fit['points']} recorded epochs of {r['num_classes']} classes, {r['train_size']} training images; "
              f"final test accuracy {pct(r['summary']['final_test_acc'])}. Local fits on consecutive records:", ""]
    return lines + table(["epochs", "α", "β", "residual", "ETF condition"],
                         [[f"{x['epoch_from']}→{x['epoch_to']}", f(x["alpha"], 3), f(x["beta"], 3),
                           f(x["residual"], 3), "holds" if x["etf_condition"] else "fails"]
                          for x in thin(r["local_fits"])])


SECTIONS = {"test-collapse": ("Train vs test collapse (Hui et al. 2022)", section_test_collapse),
            "cdnv-gap": ("CDNV train vs test and the generalisation gap (Galanti et al. 2021)", section_cdnv),
            "layerwise-ncc": ("Layer-wise NCC and ε-effective depth (Galanti et al. 2022)", section_layerwise),
            "random-labels": ("Neural collapse with random labels (Zhu et al. 2021, fig. 4)", section_random),
            "transfer": ("Source collapse vs few-shot transfer (Galanti et al. 2021, fig. 10)", section_transfer),
            "fixed-classifiers": ("Fixed simplex / d-cube / d-orthoplex classifiers (Pernici et al.)", section_fixed),
            "lesde-fit": ("LE-ODE fitted to a network's class-mean logits (Zhang et al. 2021b)", section_lesde)}


def run_one(name: str, out_root: Path, sets: list[str]) -> dict:
    out = out_root / name  # relative to the repository root, the subprocess's working directory
    if (ROOT / out).exists():
        shutil.rmtree(ROOT / out)
    cmd = ["ncollapse", "experiment", name, "--config", RUNS[name], *[a for s in sets for a in ("--set", s)],
           "--out", str(out), "--quiet", "--json"]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", *cmd], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    print(f"{name}: {wall:.0f} s", file=sys.stderr)
    return {"argv": cmd[1:], "command": " ".join(cmd), "wall_s": wall}


def previous_sections(doc: Path) -> dict[str, list[str]]:
    """The current page's sections ({"## title": lines}), kept for experiments without results in this run."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in doc.read_text(encoding="utf-8").splitlines() if doc.is_file() else []:
        if line.startswith("## "):
            current = sections.setdefault(line, [])
        if current is not None:
            current.append(line)
    return sections


def write_doc(doc: Path, out_root: Path, timings: dict) -> None:
    kept = previous_sections(doc)
    lines = ["# Results of the quick generalisation and transfer experiments", "",
             "Produced by `python benchmarks/run_experiments.py` (which runs each command below and rewrites this page). "
             "Every run trains on CPU from the quick config in `configs/experiments/`, data from `../shared/data` "
             "(override with `--set data.root=DIR`), and writes `results.json`, PNG figures and `report.html` into "
             f"its output folder. Measured on {platform.platform()}, Python {platform.python_version()}, torch "
             f"{torch.__version__}, {torch.get_num_threads()} CPU threads available, one used per run "
             "(`train.threads = 1`); the machine was shared with other jobs, so wall times are upper bounds.", ""]
    for name, (title, section) in SECTIONS.items():
        path = out_root / name / "results.json"
        if not path.is_file():
            old = kept.get(f"## {title}", [])
            while old and not old[-1].strip():
                old = old[:-1]
            lines += old + [""] if old else []
            continue
        result = json.loads(path.read_text())
        t = timings.get(name)
        lines += [f"## {title}", "", "```", t["command"] if t else f"ncollapse experiment {name} --config {RUNS[name]} "
                  f"--out {out_root / name}", "```", ""]
        if t:
            lines += [f"Wall time {t['wall_s']:.0f} s. Report: `{out_root / name / 'report.html'}`.", ""]
        lines += section(result) + [""]
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(lines), encoding="utf-8")
    write_runs(doc.with_name(f"{doc.stem}_runs.jsonl"), out_root, timings)


def write_runs(path: Path, out_root: Path, timings: dict) -> None:
    """One line per run: its ``ncollapse`` arguments, thread count (``train.threads = 1`` in every quick config),
    seconds, and the scalar results the page quotes (``results.json``'s top-level numbers)."""
    lines = []
    for name, t in timings.items():
        result = json.loads((out_root / name / "results.json").read_text())
        numbers = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        lines.append(json.dumps({"name": name, "argv": t["argv"], "threads": 1, "seconds": round(t["wall_s"], 1),
                                 **numbers}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=list(RUNS), help="run only these (repeatable)")
    parser.add_argument("--set", action="append", default=[], help="override passed to every run")
    parser.add_argument("--out-root", default="runs/experiments", type=Path)
    parser.add_argument("--doc", default="docs/results/experiments.md", type=Path)
    args = parser.parse_args(argv)
    timings_path = ROOT / args.out_root / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    for name in args.only or list(RUNS):
        timings[name] = run_one(name, args.out_root, args.set)
        timings_path.parent.mkdir(parents=True, exist_ok=True)
        timings_path.write_text(json.dumps(timings, indent=1))
    write_doc(ROOT / args.doc, args.out_root, timings)
    print(f"wrote {args.doc}; total {sum(t['wall_s'] for t in timings.values()):.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Minority-collapse results page: the (R, λ) phase diagram and R0 thresholds on certified optima.

Runs the commands below (each as a subprocess, so the page quotes them exactly, with the thread count) and
rewrites docs/results/ufm_phase.md, docs/results/ufm_phase_runs.jsonl (one line per run: its ``ncollapse``
arguments, thread count, seconds and the numbers the page quotes) and docs/results/ufm_phase/{phase,threshold}.{json,png}.
Needs the
``theory`` extra. ``--quick`` runs a 4 × 4 grid and two thresholds into runs/ufm_phase_quick(.md) instead (a
smoke test of this script that leaves the results page alone).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from ncollapse._io import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
PAGES = {False: "docs/results/ufm_phase", True: "runs/ufm_phase_quick"}  # relative to ROOT, the commands' cwd


def _run(cmd: list[str], threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    cpu0 = os.times()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    cpu1 = os.times()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    cpu = (cpu1.children_user - cpu0.children_user) + (cpu1.children_system - cpu0.children_system)
    return {"argv": cmd[3:], "command": "ncollapse " + " ".join(cmd[3:]), "wall_s": time.perf_counter() - start,
            "cpu_s": cpu, "stdout": proc.stdout.strip()}


def _run_line(name: str, run: dict, threads: int, **numbers) -> str:
    """One ``*_runs.jsonl`` line: the run's ``ncollapse`` arguments, thread count, seconds and quoted numbers."""
    return json.dumps({"name": name, "argv": run["argv"], "threads": threads, "seconds": round(run["wall_s"], 1),
                       "cpu_seconds": round(run["cpu_s"], 1), **numbers})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    base = [sys.executable, "-m", "ncollapse"]
    out_rel = PAGES[args.quick]
    out, page = ROOT / out_rel, ROOT / f"{out_rel}.md"
    size = 4 if args.quick else 16
    phase = _run(base + ["ufm", "sweep", "--ratios", f"1:100:{size}", "--lambdas", f"1e-4:5e-3:{size}",
                         "--majority", "5", "--minority", "5", "--dim", "32", "--n-majority", "100",
                         "--out", out_rel, "--quiet"], args.threads)
    rows = []
    lambdas = ("1e-4", "2e-4") if args.quick else ("5e-5", "1e-4", "2e-4", "5e-4")
    for lam in lambdas:
        for loss in ("ce", "mse"):
            run = _run(base + ["ufm", "threshold", "--majority", "5", "--minority", "5", "--lambda", lam,
                               "--loss", loss, "--n-majority", "1000", "--json"], args.threads)
            rows.append((lam, loss, json.loads(run["stdout"]), run))
    figure = _run(base + ["ufm", "threshold", "--majority", "5", "--minority", "5", "--lambda", "1e-4",
                          "--loss", "ce", "--n-majority", "1000", "--out", out_rel], args.threads)
    data = json.loads((out / "phase.json").read_text())
    gaps = [abs(g) for row in data["relative_gap"] for g in row]
    lines = [
        "# Minority collapse on certified UFM optima", "",
        f"Produced by `python benchmarks/ufm_phase.py{' --quick' if args.quick else ''}` on {platform.machine()} "
        f"({os.cpu_count()} CPUs, OMP_NUM_THREADS={args.threads}; wall times depend on the load, CPU times less). "
        "Definitions and derivations: docs/ufm.md §3 (certificates) and §5 (threshold, phase diagram).", "",
        f"## Phase diagram ({size} × {size}, K_A = K_B = 5, d = 32, n_A = 100)", "", "```", phase["command"], "```",
        "", f"- wall time {phase['wall_s']:.0f} s, CPU time {phase['cpu_s']:.0f} s; inside: batched L-BFGS solves "
        f"{data['solve_seconds']:.0f} s, certificates (one cvxpy/Clarabel solve per cell) {data['certify_seconds']:.0f} s "
        f"(wall).",
        f"- converged cells: {sum(map(sum, data['converged']))} of {len(gaps)}; largest |relative certificate gap| "
        f"{max(gaps):.1e}, median {sorted(gaps)[len(gaps) // 2]:.1e}.", "",
        f"![phase diagram]({out.name}/phase.png)", "",
        "## Threshold R0 (K_A = K_B = 5, n_A = 1000, ε = 1e-4)", "",
        "| λ | loss | R0 (bisection, certified) | closed form √n_B = λN | certified solves | wall s |",
        "|---|---|---|---|---|---|"]
    for lam, loss, res, run in rows:
        r0 = "none ≤ 1e8" if res["R0"] is None else f"{res['R0']:.5g}"
        closed = "—" if res["analytic_R0"] is None else f"{res['analytic_R0']:.5g}"
        lines.append(f"| {lam} | {loss} | {r0} | {closed} | {len(res['ratios'])} | {run['wall_s']:.1f} |")
    lines += ["", "Commands: `" + rows[0][3]["command"] + "` (and the other λ / loss). Figure:", "", "```",
              figure["command"], "```", "", f"![threshold]({out.name}/threshold.png)", ""]
    atomic_write_text(page, "\n".join(lines))
    runs = [_run_line("phase", phase, args.threads, max_abs_rel_gap=max(gaps),
                      converged=sum(map(sum, data["converged"])), cells=len(gaps))]
    runs += [_run_line(f"threshold_{lam}_{loss}", run, args.threads, R0=res["R0"], analytic_R0=res["analytic_R0"],
                       certified_solves=len(res["ratios"])) for lam, loss, res, run in rows]
    atomic_write_text(ROOT / f"{out_rel}_runs.jsonl", "\n".join(runs) + "\n")
    print(f"phase diagram {phase['wall_s']:.1f} s wall, {phase['cpu_s']:.1f} s CPU; wrote {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

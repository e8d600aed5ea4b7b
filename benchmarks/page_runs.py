"""Shared by the results-page scripts (``ncmc_cpu.py``, ``lm_collapse.py``): train a list of runs as
``ncollapse`` subprocesses, ``jobs`` at a time with one thread each, resuming interrupted ones, and read the
finished ones back. A run is a dict with a ``name``; its directory is ``out / name``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train_all(runs, out: Path, jobs: int, argv_of) -> None:
    """Train every run without a summary.json; ``argv_of(run)`` gives its ``ncollapse`` arguments (no --out)."""
    todo = [r for r in runs if not (out / r["name"] / "summary.json").is_file()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT / "src")}

    def one(run):
        run_dir = out / run["name"]
        cmd = [sys.executable, "-m", "ncollapse", *argv_of(run), "--out", str(run_dir), "--quiet"]
        cmd += ["--resume"] if run_dir.exists() else []
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


def load(runs, out: Path) -> dict[str, dict]:
    """name -> {run, metrics (one record per evaluation point), dir, summary, info} for every finished run."""
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

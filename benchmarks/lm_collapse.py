"""Linguistic collapse at CPU scale (issue 21): small GPTs on ../shared/data/text, NC at vocabulary size.

    python benchmarks/lm_collapse.py                  # train what is missing (2 jobs x 1 thread), write page + jsonl
    python benchmarks/lm_collapse.py --render-only    # page + jsonl from the finished run directories

Every run is ``ncollapse train --config configs/lm/<size>.toml --set train.seed=<s> [--set lm.vocab_size=V]`` from
the repo root (three sizes x two seeds at vocabulary 8192, the small size at 32768), each on the fixed token
budget of its config, so a run's numbers do not depend on the machine's load. Runs that hold a ``summary.json``
are kept and an interrupted one resumes (``--resume``), so a second invocation only trains what is missing. The
page (docs/results/lm_collapse.md), its figures (docs/results/lm_collapse/) and
docs/results/lm_collapse_runs.jsonl are rewritten from the run directories on every invocation.

Statistics: Spearman's rank correlation (scipy.stats.spearmanr) between each NC metric at the end of training and
the final validation loss across the vocabulary-8192 runs, with a 95% percentile bootstrap interval over runs
(resampling runs with replacement, 2000 draws, seed 0; Efron & Tibshirani 1993, §13.3); per-size values are the
mean over seeds with the two seeds' range.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ncollapse._io import atomic_write_text  # noqa: E402
from lm_collapse_plan import JSONL, argv_of, jsonl_lines, plan  # noqa: E402
from page_runs import load, train_all  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "lm_collapse", help="folder of the run directories")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "results" / "lm_collapse.md")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--render-only", action="store_true")
    args = p.parse_args(argv)
    runs, out = plan(), args.out.resolve()
    if not args.render_only:
        train_all(runs, out, args.jobs, argv_of)
    from lm_collapse_page import render  # the page: tables, figures and what holds (beside this script)
    render(runs, load(runs, out), args.doc.resolve())
    atomic_write_text(ROOT / JSONL, jsonl_lines(runs, load(runs, out)))
    print(f"wrote {args.doc} and {JSONL}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

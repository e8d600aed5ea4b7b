"""``ncollapse demo``: the embedded end-to-end job on scikit-learn's digits (no downloads)."""

from __future__ import annotations

import argparse
import logging
import sys

from .._io import check_out_dir, dumps_line
from ..serialize import to_jsonable
from . import show_progress


HELP = "digits-LT: train CE and CAL, solve a UFM sweep, write one report"


def register(sub) -> None:
    p = sub.add_parser("demo", help=HELP,
                       description="The end-to-end demo (no downloads, a few CPU minutes): scikit-learn's digits made "
                                   "long-tailed (imbalance 0.1), a CE and a CAL (NCMC) model trained with the trainer, "
                                   "a batched UFM sweep, and OUT/report.html comparing them.\n\nexamples:\n"
                                   "  ncollapse demo                       # writes runs/demo/report.html\n"
                                   "  ncollapse demo --epochs 5 --out /tmp/demo --quiet",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--epochs", type=int, default=30, help="training epochs per model (default 30)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace an earlier demo in --out (refused otherwise)")
    p.add_argument("--quiet", action="store_true", help="no progress lines or bars")
    p.add_argument("--json", action="store_true", help="print the demo's results as one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..demo import run_demo

    if args.epochs < 1:
        raise ValueError(f"--epochs == {args.epochs}, must be >= 1")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    say = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    check_out_dir(args.out)
    info = run_demo(args.out, epochs=args.epochs, seed=args.seed, progress=show_progress(args),
                    log_fn=say, force=args.force)
    if args.json:
        print(dumps_line(to_jsonable(info)))
        return 0
    print(f"report: {info['report']}")
    print("\n".join(info["summary"]))
    return 0

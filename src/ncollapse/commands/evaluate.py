"""``ncollapse evaluate``: accuracy (overall, per class, head/medium/tail) and NC metrics of a run's checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._io import dumps_line
from ..serialize import to_jsonable
from . import show_progress

EXAMPLES = """examples:
  ncollapse evaluate --run runs/mnist_lt_ce
  ncollapse evaluate --run runs/mnist_lt_ce --split train --json

Reads DIR/checkpoint.pt and the config stored in it; the data root is the one the run used
(override with --data-root). Groups (head/medium/tail) come from the training class counts.
"""


HELP = "accuracy and NC metrics of a trained run"


def register(sub) -> None:
    p = sub.add_parser("evaluate", help=HELP, description="Evaluate a run directory's checkpoint.\n\n" + EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, metavar="DIR", help="run directory written by ncollapse train")
    p.add_argument("--split", choices=["train", "test"], default="test")
    p.add_argument("--data-root", metavar="PATH", help="data folder, if it moved since training")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..serialize import format_report
    from ..train.evaluate import evaluate_run

    report = evaluate_run(Path(args.run), split=args.split, device=args.device, data_root=args.data_root,
                          progress=show_progress(args))
    if args.json:
        print(dumps_line(to_jsonable(report)))
        return 0
    per_class = report.pop("acc_per_class")
    print(format_report({k: v for k, v in report.items() if k != "nc/sigma_b_spectrum"}))
    print("acc_per_class".ljust(29) + " ".join(f"{a:.3f}" for a in per_class))
    return 0

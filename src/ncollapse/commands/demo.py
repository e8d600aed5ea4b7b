"""``ncollapse demo``: the embedded end-to-end job on scikit-learn's digits."""

from __future__ import annotations

import argparse
import sys

from ..demo import format_trajectory, run_demo


def register(sub) -> None:
    p = sub.add_parser("demo", help="train on digits-LT and measure NC (no downloads)",
                       description="Train a small MLP on scikit-learn's digits made long-tailed, measure NC "
                                   "every few epochs and write runs/demo/.\n\nexample:\n  ncollapse demo --out runs/demo",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    result = run_demo(args.out, epochs=args.epochs, seed=args.seed, log=lambda m: print(m, file=sys.stderr))
    print(format_trajectory(result["trajectory"]))
    print(f"layer-wise NCC train accuracy: {result['layer_ncc_accuracy']}")
    print(f"wrote {args.out}/trajectory.json ({result['wall_s']:.1f} s)")
    return 0

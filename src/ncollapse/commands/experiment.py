"""``ncollapse experiment NAME``: the generalisation and transfer experiments (``ncollapse.experiments``)."""

from __future__ import annotations

import argparse
import logging
import sys

from .._io import check_in_file, check_out_dir, dumps_line
from ..serialize import to_jsonable
from . import show_progress

EXAMPLES = """experiments:
  test-collapse      NC of train vs test features, weak and strong test collapse (Hui et al. 2022)
  cdnv-gap           CDNV train vs test over epochs and the generalisation gap (Galanti et al. 2021)
  layerwise-ncc      NCC accuracy and NC1 at every block, epsilon-effective depth (Galanti et al. 2022)
  random-labels      NC on shuffled training labels (Zhu et al. 2021, fig. 4)
  transfer           source-class CDNV vs few-shot accuracy on unseen classes (Galanti et al. 2021)
  fixed-classifiers  learnable vs simplex / d-cube / d-orthoplex heads (Pernici et al.)
  lesde-fit          LE-ODE alpha, beta fitted to the class-mean logits over training (Zhang et al. 2021b)

examples:
  ncollapse experiment test-collapse --config configs/experiments/test_collapse_mnist.toml --out runs/exp/tc
  ncollapse experiment transfer --config configs/experiments/transfer_mnist.toml --set experiment.shots=[1,5] --out runs/exp/tr
  ncollapse experiment cdnv-gap --config configs/experiments/cdnv_gap_fashion.toml --set data.root=DIR --out runs/exp/cg

A config is a training config (see ncollapse train --help) plus an [experiment] table; --set works for both
(experiment.KEY=VALUE, section.KEY=VALUE). The output folder gets results.json, PNG figures and report.html.
"""


HELP = "run a generalisation / transfer experiment from a TOML config"


def register(sub) -> None:
    p = sub.add_parser("experiment", help=HELP,
                       description="Run one of the review's generalisation and transfer experiments.\n\n" + EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", metavar="NAME", help="experiment name (listed below)")
    p.add_argument("--config", metavar="C.toml", help="experiment config (see configs/experiments/)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value (repeatable)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (must not hold a run yet)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch log")
    p.add_argument("--json", action="store_true", help="print results.json's content as one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..experiments import run_experiment

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr, format="%(message)s")
    if args.config is not None:
        check_in_file(args.config, "--config")
    check_out_dir(args.out)
    result = run_experiment(args.name, args.config, args.out, args.set, device=args.device,
                            progress=show_progress(args))
    if args.json:
        print(dumps_line(to_jsonable({k: v for k, v in result.items() if k != "trajectory"})))
    else:
        print(f"{args.name}: wrote {args.out}/results.json and {result['report']}")
    return 0

"""``ncollapse compare``: paired differences between methods over seeds, with Student-t intervals."""

from __future__ import annotations

import argparse
import json

from . import warnings_as_lines, write_or_print

DESCRIPTION = """\
METHOD − each other method, per setting and metric, paired by seed: the mean of the same-seed differences
and its Student-t interval over seeds (n − 1 degrees of freedom). ▲ / ▼: the interval lies above / below 0
(resolved); an interval across 0 is not resolved. Accuracies in percentage points.

A run's method is the method of its config (CE, BS, LDAM-DRW, SETF, Loss P, AL, CAL, ...; with mixup, f, θ
or the Loss P penalty where they vary), its setting the data set, τ, model, epochs, lr and weight decay,
its seed train.seed. Only runs of one setting are paired; seeds that one side lacks are left out with a
warning naming them.

metrics: best, final, head, medium, tail (accuracies from summary.json), collapse, variability (last NCMC
values of metrics.jsonl), or any other key of summary.json, e.g. nc/nc1 of a run NCTracker wrote

A method with several variants among the runs is named with them, e.g. "CAL (f = 20, θ = 0.2)"; type it
quoted, with or without spaces, theta for θ.

examples:
  ncollapse compare --runs runs/ce runs/cal --method CAL                       # CAL − CE, final accuracy
  ncollapse compare --runs runs/ce runs/cal --method CAL --metric final tail --out runs/compare.md
  ncollapse compare --runs runs/ncmc_cpu --method "CAL (f=20, theta=0.2)" --against CE AL --metric final tail
  ncollapse compare --runs runs/ncmc_cpu --method "CAL (f=20, theta=0.2)" --json --out runs/compare.json
"""

HELP = "paired differences between methods over seeds (Student-t intervals)"


def register(sub) -> None:
    p = sub.add_parser("compare", help=HELP, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", required=True, nargs="+", metavar="DIR", help="run directories or folders of them")
    p.add_argument("--method", required=True, help="the method whose differences are shown (METHOD − each other)")
    p.add_argument("--against", nargs="+", metavar="METHOD", help="methods to compare with (default: all others)")
    p.add_argument("--metric", nargs="+", default=["final"], help="one or more metrics (default final)")
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals (default 0.95)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of Markdown")
    p.add_argument("--out", metavar="FILE", help="write to FILE instead of stdout")
    p.add_argument("--force", action="store_true", help="replace an --out that ncollapse did not write as a comparison")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..io_safe import Outputs
    from ..report.compare import caption, compare_runs, render_markdown, to_json

    with Outputs(force=args.force, inputs=args.runs) as outputs:
        if args.out:
            outputs.claim(args.out, "comparison")  # refused before any run is read
        with warnings_as_lines("ncollapse compare: warning: "):
            result = compare_runs(args.runs, args.method, args.against, args.metric, args.level)
        text = (json.dumps(to_json(result), allow_nan=False) + "\n" if args.json
                else f"{caption(result)}\n\n{render_markdown(result)}")
        write_or_print(outputs, args.out, text)
    return 0

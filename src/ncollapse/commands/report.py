"""``ncollapse report``: write the HTML report of a run, or a page comparing runs."""

from __future__ import annotations

import argparse
import json
import sys

DESCRIPTION = """\
Write one self-contained HTML page (figures embedded, no network) plus its PNGs in a folder named after the
page (report.html -> report_files/), written as one set that replaces the previous set as a whole.

examples:
  ncollapse report --run runs/mnist_lt_ce                   # -> runs/mnist_lt_ce/report.html
  ncollapse report --run runs/a --out /tmp/a.html
  ncollapse report --compare runs/ce runs/cal --out runs/compare.html
  ncollapse report --run runs/a --json                      # {"report": ..., "figures": [...], "notes": [...]}

A run directory needs metrics.jsonl (exit 2 otherwise); missing run.json, config.toml or nc_state.pt
only leave their sections out, with a note on the page and on stderr. An existing --out is replaced only when
this command wrote it as a report (else exit 2; --force replaces it); the files of a run are never written.
"""


HELP = "HTML report of a run or a comparison of runs"


def register(subparsers) -> None:
    parser = subparsers.add_parser("report", help=HELP,
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", metavar="DIR", help="run directory to report on")
    what.add_argument("--compare", metavar="DIR", nargs="+", help="run directories to overlay (needs --out)")
    parser.add_argument("--out", metavar="FILE", help="HTML file to write (default DIR/report.html for --run)")
    parser.add_argument("--labels", metavar="NAME", nargs="+", help="names of the compared runs (default: directory names)")
    parser.add_argument("--force", action="store_true", help="replace an --out that ncollapse did not write as a report")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the path")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..io_safe import Outputs
    from ..report.html import render_comparison, render_report
    from ..report.notes import collected

    if args.compare and not args.out:
        raise ValueError("--compare needs --out FILE (where to write the comparison page)")
    if args.labels and not args.compare:
        raise ValueError("--labels only applies to --compare")
    with collected() as said, Outputs(force=args.force, inputs=[args.run] if args.run else args.compare) as outputs:
        if args.run:
            path, pngs = render_report(args.run, args.out, outputs=outputs)
        else:
            path, pngs = render_comparison(args.compare, args.out, labels=args.labels, outputs=outputs)
    notes = list(dict.fromkeys(said))
    for note in notes:
        print(f"ncollapse report: note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps({"report": str(path), "figures": [str(p) for p in pngs], "notes": notes}))
    else:
        print(path)
    return 0

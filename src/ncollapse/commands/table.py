"""``ncollapse table``: render run directories as NCMC's Tables 1–7 (or the CPU benchmark's tables)."""

from __future__ import annotations

import argparse

from . import warnings_as_lines, write_or_print

EXAMPLES = """layouts: auto (default: one row per method, mixup, f and θ found in the runs' configs, one column per
data set and imbalance τ); ncmc-table1 … ncmc-table7 (the paper's Tables 1–7); cpu, cpu-ncmc, cpu-grid
(benchmarks/ncmc_cpu.py)
metrics: best (best test accuracy over epochs), final (last epoch), head / medium / tail (last-epoch group
accuracy), collapse / variability (NCMC metrics of the last NC pass)

examples:
  ncollapse table --runs runs                                  # any runs, default layout
  ncollapse table --layout ncmc-table2 --runs runs/ncmc
  ncollapse table --layout ncmc-table2 --runs runs/ncmc --metric final --format latex --out runs/table2.tex
  ncollapse table --layout cpu --runs runs/ncmc_cpu --metric tail --format both

--runs takes run directories or folders holding them (searched recursively for config.toml). A run's cell is
found from its config (data set, imbalance, model, method, mixup, f, theta); its seed makes it one of the cell's
repeats. Cells show mean ± std over seeds; cells without runs show "–" with a warning on stderr; a table
without a single filled cell exits 2. Two runs with the same cell and seed are duplicates: the one whose run
directory path sorts first is kept (with a warning) before any cell is filled. A run whose run.json or summary.json
is malformed is skipped with a warning naming the file; a NaN or missing metric is shown as NaN, with a warning.
An existing --out is replaced only when this command wrote it as a table; --force replaces any other file,
but the files of a run directory (summary.json and the others) are never written.
"""


HELP = "render run directories as a results table (Markdown / LaTeX)"


def register(sub) -> None:
    p = sub.add_parser("table", help=HELP,
                       description="Render run directories in the layout of a paper table.\n\n" + EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layout", default="auto", help="table layout (default auto: rows from the runs' methods, "
                                                  "columns from their data sets and imbalance; see above)")
    p.add_argument("--runs", required=True, nargs="+", metavar="DIR", help="run directories or folders of them")
    p.add_argument("--metric", default="best", help="value shown in the cells (default best)")
    p.add_argument("--format", choices=["markdown", "latex", "both"], default="markdown")
    p.add_argument("--out", metavar="FILE", help="write the table to FILE instead of stdout")
    p.add_argument("--force", action="store_true", help="replace an --out that ncollapse did not write as a table")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..io_safe import Outputs
    from ..report.tables import build_table, load_runs, render

    with Outputs(force=args.force, inputs=args.runs) as outputs:
        if args.out:
            outputs.claim(args.out, "table")
        with warnings_as_lines("ncollapse table: warning: "):
            table = build_table(args.layout, load_runs(args.runs), args.metric)
        write_or_print(outputs, args.out, render(table, args.format), end="\n")
    return 0

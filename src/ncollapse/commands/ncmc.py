"""``ncollapse ncmc``: NCMC helpers (Yan et al. 2024): centers per class, and the RCR vs GCR toy figure."""

from __future__ import annotations

import argparse
import math
import sys

from .._io import check_out_dir, dumps_line
from ..serialize import to_jsonable

EXAMPLES = """examples:
  ncollapse ncmc centers --counts 5000,2997,1796,1077,645,387,232,139,83,50 --f 20
  ncollapse ncmc centers --n-max 5000 --classes 10 --imbalance 0.01 --f 20 --json      # CIFAR-10-LT profile
  ncollapse ncmc centers --counts 1,3,3 --f 3 --order given                            # the paper's example: 4 4 1
  ncollapse ncmc toy --out runs/ncmc_toy                                               # Prop. 3.1 / C.1 figure

centers: f_k of the class-aware strategy (§3.5; --strategy al gives f for every class), their sum F and the
width (f+1)K = F + K the multi-center frame needs (the extra linear layer's minimum width). --order sorted
(the trainer's choice) applies the rule to the counts sorted head to tail and maps f_k back to the classes;
--order given applies it to the counts as listed (the paper's worked example).
"""


HELP = "NCMC helpers: centers per class, RCR vs GCR toy figure"


def register(sub) -> None:
    p = sub.add_parser("ncmc", help=HELP,
                       description="Neural collapse to multiple centers (Yan et al. 2024).\n\n" + EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    tasks = p.add_subparsers(dest="ncmc_task", metavar="TASK")
    c = tasks.add_parser("centers", help="class-aware number of centers f_k",
                         description="Print f_k per class.\n\n" + EXAMPLES,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--counts", help="training samples per class, comma-separated")
    c.add_argument("--n-max", type=float, help="head-class size of an exponential LT profile (with --classes)")
    c.add_argument("--classes", type=int, help="number of classes of the LT profile")
    c.add_argument("--imbalance", type=float, default=0.01, help="τ = n_min/n_max of the profile (default 0.01)")
    c.add_argument("--f", type=int, required=True, help="mean number of centers per class")
    c.add_argument("--strategy", choices=["cal", "al"], default="cal")
    c.add_argument("--order", choices=["sorted", "given"], default="sorted")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(func=run_centers)
    t = tasks.add_parser("toy", help="RCR vs GCR on hard-to-predict features (Prop. 3.1, C.1)",
                         description="Write the toy figure (PNG) and its simulations (JSON).\n\n" + EXAMPLES,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--out", required=True, metavar="DIR", help="output folder (ncmc_toy.png, ncmc_toy.json)")
    t.add_argument("--centers", default="1,2,3,4,5", help="f_k per class, ascending (default 1,2,3,4,5)")
    t.add_argument("--samples", type=int, default=20000, help="Monte Carlo samples per point (default 20000)")
    t.add_argument("--theta", type=float, default=0.2, help="θ of the NCMC frame (default 0.2)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--force", action="store_true", help="replace outputs that ncollapse did not write as such")
    t.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    t.set_defaults(func=run_toy)
    p.set_defaults(func=lambda args: _usage(p))


def _usage(parser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _int_list(text: str, name: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{name} must be comma-separated integers (e.g. 500,100,20); got {text!r}") from None


def run_centers(args) -> int:
    from ..data.longtail import longtail_counts
    from ..geometry import class_aware_centers
    from ..validation import check_counts, check_scalar

    if (args.counts is None) == (args.n_max is None):
        raise ValueError("give either --counts or --n-max with --classes")
    if args.counts is not None:
        counts = check_counts(_int_list(args.counts, "--counts"), "--counts")
    else:
        if args.classes is None:
            raise ValueError("--n-max needs --classes (the number of classes of the profile)")
        counts = longtail_counts(args.n_max, args.classes, args.imbalance)
    check_scalar(args.f, "--f", int, low=1)
    k = len(counts)
    f_k = [args.f] * k if args.strategy == "al" else class_aware_centers(counts, args.f, order=args.order)
    out = {"counts": counts, "f": args.f, "strategy": args.strategy, "order": args.order, "centers_per_class": f_k,
           "total_centers": sum(f_k), "min_width": sum(f_k) + k,
           "f_times_n": [a * b for a, b in zip(f_k, counts)]}
    if args.json:
        print(dumps_line(out))
    else:
        print("f_k:   " + " ".join(map(str, f_k)))
        print(f"F = {sum(f_k)} centers, K = {k} classes: the frame needs width >= F + K = {sum(f_k) + k}")
        print("f_k n_k: " + " ".join(map(str, out["f_times_n"])))
    return 0


def run_toy(args) -> int:
    from ..experiments.ncmc_toy import check_toy_memory, toy_figure
    from ..io_safe import Outputs

    centers = _int_list(args.centers, "--centers")
    check_toy_memory(centers, args.samples)
    out = check_out_dir(args.out)
    with Outputs(force=args.force) as outputs:
        png = outputs.claim(out / "ncmc_toy.png", "ncmc toy figure")
        outputs.claim(out / "ncmc_toy.json", "ncmc toy json")
        runs = toy_figure(png, centers, num_samples=args.samples, theta=args.theta, seed=args.seed, outputs=outputs)
        outputs.write_json(out / "ncmc_toy.json", to_jsonable(runs))
    independent = [r for r in runs if r["frame"] == "independent"]
    skewed = independent[-1]
    summary = {"png": str(out / "ncmc_toy.png"), "json": str(out / "ncmc_toy.json"),
               "p_rcr": skewed["p_rcr"], "p_gcr": skewed["p_gcr"], "p_rcr_theory": skewed["p_rcr_theory"],
               "p_gcr_theory": skewed["p_gcr_theory"],
               "gcr_beats_rcr": all(r["p_gcr"] >= r["p_rcr"] - 3 * math.hypot(r["se_gcr"], r["se_rcr"])
                                    for r in independent)}
    if args.json:
        print(dumps_line(to_jsonable(summary)))
    else:
        print(f"most skewed P{{E_k}}: RCR {skewed['p_rcr']:.4f} (theory {skewed['p_rcr_theory']:.4f}), "
              f"GCR {skewed['p_gcr']:.4f} (theory {skewed['p_gcr_theory']:.4f})")
        print(f"wrote {summary['png']} and {summary['json']}")
    return 0

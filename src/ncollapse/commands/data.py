"""``ncollapse data``: fetch the official data files and show per-class counts."""

from __future__ import annotations

import argparse
import sys

from .._io import check_out_dir, dumps_line
from ..data.fetch import SOURCES, fetch
from ..serialize import to_jsonable
from . import show_progress

EXAMPLES = """examples:
  ncollapse data fetch mnist --root data
  ncollapse data fetch cifar10 --root data --base-url http://mirror.example/cifar
  ncollapse data info mnist --root data
  ncollapse data info cifar10 --root data --imbalance 0.01 --json

'fetch' downloads the official files with sha256 checks and resumes partial downloads;
'info' prints the per-class counts of a split, or of the long-tailed training set with --imbalance.
"""


HELP = "fetch data sets and show their class counts"


def register(sub) -> None:
    p = sub.add_parser("data", help=HELP, description="Fetch data sets and inspect their class counts.\n\n" + EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="data_command", metavar="ACTION", parser_class=type(p))
    actions.required = True

    f = actions.add_parser("fetch", help="download and verify the official files",
                           description="Download the official files of a data set.\n\n" + EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("name", choices=list(SOURCES), help="data set")
    f.add_argument("--root", required=True, metavar="DIR", help="folder to download into")
    f.add_argument("--base-url", metavar="URL", help="fetch BASE_URL/<file> instead of the official mirrors")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.set_defaults(func=run_fetch)

    i = actions.add_parser("info", help="per-class counts of a split or a long-tailed subset",
                           description="Per-class counts of a data set.\n\n" + EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    i.add_argument("name", help="data set: a name of ncollapse.data.DATASETS (an unknown name lists them)")
    i.add_argument("--root", metavar="DIR", help="folder holding the files (or its parent)")
    i.add_argument("--split", default="train", help="split to read (default train)")
    i.add_argument("--imbalance", type=float, metavar="TAU", help="long-tailed training set with n_min/n_max = TAU")
    i.add_argument("--n-max", type=int, help="head class size of the long-tailed set (default: largest feasible)")
    i.add_argument("--profile", choices=["exp", "step"], default="exp", help="long-tail profile")
    i.add_argument("--seed", type=int, default=0, help="seed of the long-tailed subset")
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.set_defaults(func=run_info)


def run_fetch(args) -> int:
    from .._io import OS_ERRORS

    bar = None
    if show_progress(args):
        from tqdm import tqdm

        def progress(name, done, total):
            nonlocal bar
            if bar is None or bar.desc != name:
                if bar is not None:
                    bar.close()
                bar = tqdm(total=total, desc=name, unit="B", unit_scale=True, file=sys.stderr)
            bar.n = done
            bar.refresh()
    else:
        progress = None
    check_out_dir(args.root, "--root")
    try:
        folder = fetch(args.name, args.root, base_url=args.base_url, progress=progress)
    except OSError as exc:  # network trouble is not bad input: exit 1 with one line
        if exc.errno in OS_ERRORS:  # the local disk (read-only, full, permission): exit 2 at the CLI's boundary
            raise
        print(f"ncollapse data fetch: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            bar.close()
    print(folder)
    return 0


def run_info(args) -> int:
    from ..data import format_counts, load_dataset, load_longtail

    if args.imbalance is None:
        ds = load_dataset(args.name, args.root, args.split)
    else:
        if args.split != "train":
            raise ValueError("--imbalance builds a long-tailed training set; drop --split or use --split train")
        ds = load_longtail(args.name, args.root, args.imbalance, n_max=args.n_max, profile=args.profile,
                           seed=args.seed)
    counts = ds.class_counts()
    if args.json:
        print(dumps_line(to_jsonable({
            "name": ds.name, "split": args.split, "imbalance": args.imbalance, "num_samples": len(ds),
            "num_classes": ds.num_classes, "image_shape": list(ds.images.shape[1:]), "classes": ds.classes,
            "counts": counts, "ratio": min(counts) / max(counts) if max(counts) else float("nan"),
            "mean": list(ds.mean), "std": list(ds.std)})))
    else:
        print(f"{ds.name} {args.split}{'' if args.imbalance is None else f' long-tailed (tau {args.imbalance})'}, "
              f"images {tuple(ds.images.shape[1:])}")
        print(format_counts(counts, ds.classes))
    return 0

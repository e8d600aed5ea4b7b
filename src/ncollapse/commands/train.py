"""``ncollapse train``: train a classifier from a TOML config into a run directory (resumable, DDP-ready)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .._io import check_in_file, check_out_dir, dumps_line
from ..serialize import to_jsonable
from . import show_progress

EXAMPLES = """examples:
  ncollapse train --config configs/quick/mnist_lt_ce.toml --set data.root=../shared/data/mnist --out runs/mnist_lt_ce
  ncollapse train --config runs/mnist_lt_ce/config.toml --out runs/mnist_lt_ce --resume      # after Ctrl-C
  ncollapse train --config configs/quick/mnist_lt_ce.toml --set data.root=../shared/data/mnist \
      --set train.epochs=2 --set optim.lr=0.05 --out runs/short
  torchrun --nproc_per_node 2 -m ncollapse train --config C.toml --out runs/ddp      # DDP (gloo on CPU)

--set values are TOML literals (numbers, true/false, ["a", "b"]); anything else is a string.
The run directory gets config.toml, run.json, metrics.jsonl (one line per epoch), nc_state.pt,
checkpoint.pt (every epoch) and summary.json. Ctrl-C / SIGTERM saves a checkpoint and exits (130 / 143).
"""


HELP = "train a classifier from a TOML config (resumable)"


def register(sub) -> None:
    p = sub.add_parser("train", help=HELP,
                       description="Train a classifier and track accuracy and NC metrics.\n\n" + EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, metavar="C.toml", help="TOML config (see configs/)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value (repeatable)")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch log")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..train import load_config, train

    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.WARNING if args.quiet or rank else logging.INFO, stream=sys.stderr,
                        format="%(message)s")
    config = load_config(check_in_file(args.config, "--config"), args.set)
    check_out_dir(args.out)
    summary = train(config, args.out, resume=args.resume, device=args.device,
                    command=" ".join(["ncollapse", *sys.argv[1:]]),
                    progress=show_progress(args))
    if rank:
        return summary.get("signal", 0)
    if args.json:
        print(dumps_line(to_jsonable(summary)))
    elif summary["status"] == "finished" and config.train.task == "lm":
        print(f"final val loss {summary['final_val_loss']:.4f} (ppl {summary['final_val_ppl']:.2f}) after "
              f"{summary['tokens']} tokens  {summary['wall_s']:.1f} s -> {args.out}")
    elif summary["status"] == "finished":
        print(f"final test acc {summary['final_test_acc']:.4f}  best {summary['best_test_acc']:.4f} "
              f"(epoch {summary['best_epoch']})  head {_f(summary['test_acc_head'])}  medium "
              f"{_f(summary['test_acc_medium'])}  tail {_f(summary['test_acc_tail'])}  "
              f"{summary['wall_s']:.1f} s -> {args.out}")
    else:
        where = f"at step {summary['step']}" if "step" in summary else f"in epoch {summary['epoch'] + 1}"
        print(f"interrupted {where}; continue with: ncollapse train --config "
              f"{args.out}/config.toml --out {args.out} --resume", file=sys.stderr)
    return summary.get("signal", 0)


def _f(value) -> str:
    return "-" if value is None else f"{value:.4f}"

"""``ncollapse measure``: NC metrics of a feature file."""

from __future__ import annotations

import argparse
import sys
import warnings

from .._io import dumps_line
from ..data.features import load_features
from ..metrics import measure_features
from ..serialize import format_report, to_jsonable

EXAMPLES = """examples:
  ncollapse measure --features feats.npz
  ncollapse measure --features feats.npz --global-mean weighted --ddof 1 --json

The .npz holds 'features' (N x d), 'labels' (N,), and optionally 'weight' (K x d) and 'bias' (K,).
"""


def register(sub) -> None:
    p = sub.add_parser("measure", help="NC1-NC4 metrics of saved features",
                       description="Measure neural collapse of a feature file.\n\n" + EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--features", required=True, metavar="F.npz", help="feature file (.npz)")
    p.add_argument("--global-mean", choices=["uniform", "weighted"], default="uniform",
                   help="mean of class means (default, Papyan et al.) or sample mean")
    p.add_argument("--ddof", type=int, choices=[0, 1], default=0, help="variance denominator n - ddof")
    p.add_argument("--scale", choices=["per_class", "papyan"], default="per_class",
                   help="NC1 = tr(Sw Sb^+)/K (default) or without /K (Papyan)")
    p.add_argument("--rtol", type=float, default=1e-10, help="relative eigenvalue cut-off for the pseudo-inverse")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    data = load_features(args.features)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = measure_features(data.features, data.labels, W=data.weight, b=data.bias,
                                  num_classes=data.num_classes, global_mean=args.global_mean,
                                  ddof=args.ddof, rtol=args.rtol, scale=args.scale)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if args.json:
        print(dumps_line(to_jsonable(report)))
    else:
        print(format_report(report))
    return 0

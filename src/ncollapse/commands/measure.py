"""``ncollapse measure``: NC metrics of a feature file."""

from __future__ import annotations

import argparse

from . import show_progress, warnings_as_lines
from .._io import dumps_line
from ..serialize import format_report, to_jsonable

EXAMPLES = """examples:
  ncollapse measure --features feats.npz
  ncollapse measure --features feats.npz --global-mean weighted --ddof 1 --json
  ncollapse measure --features lm_tokens.npz --min-count 5 --ood ood.npz --json

The .npz holds 'features' (N x d), 'labels' (N,), and optionally 'weight' (K x d) and 'bias' (K,).
OOD.npz holds 'features' only. The features are read from the file --batch-size rows at a time (twice:
statistics, then NC4), so a file larger than memory works; memory is O(N + B d + K d + d^2 + tile^2).

keys (--json): nc1 nc1_quotient rank sigma_b_spectrum trace_sigma_w trace_sigma_b (NC1);
  cdnv (Galanti, exponent --cdnv-exponent); equinorm_means equiangularity_means max_angle_means
  etf_error_means orth_error_means (NC2, orth = uncentred means vs an orthogonal frame);
  gnc2_log_mean gnc2_log_var gnc2_riesz_mean (GNC2 hyperspherical uniformity, Liu et al. 2023);
  with 'weight': equinorm_weights equiangularity_weights max_angle_weights etf_error_weights
  orth_error_weights self_duality duality_papyan duality_cos_mean duality_cos_per_class
  unc3 (uniform duality, Wu & Papyan 2024) ncc_mismatch ncc_agreement classifier_accuracy;
  ncc_accuracy (NC4); nc5_ood with --ood (Ammar et al. 2024, --ood-centering); sigma_b_cutoff and
  sigma_b_rank_deficit (with sigma_b_closest_pairs when positive); num_classes_below_min_count with
  --min-count; per group (head > 100, tail < 20 samples): cdnv_*, nc1_quotient_*, minority_cos_*.
  Definitions: docs/measurement.md.
"""


HELP = "NC1-NC4 metrics of saved features"


def register(sub) -> None:
    p = sub.add_parser("measure", help=HELP, description="Measure neural collapse of a feature file.\n\n" + EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--features", required=True, metavar="F.npz", help="feature file (.npz)")
    p.add_argument("--global-mean", choices=["uniform", "weighted"], default="uniform",
                   help="mean of class means (default, Papyan et al.) or sample mean")
    p.add_argument("--ddof", type=int, choices=[0, 1], default=0, help="variance denominator n - ddof")
    p.add_argument("--scale", choices=["per_class", "notebook", "papyan"], default="per_class",
                   help="NC1 = tr(Sw Sb^+)/K (default, Papyan et al. Fig. 6) or without /K (notebook; 'papyan' is "
                        "its deprecated name)")
    p.add_argument("--rtol", type=float, default=None,
                   help="keep Sigma_B eigenvalues above RTOL x the largest (default: the rank rule from the features' "
                        "precision, docs/measurement.md)")
    p.add_argument("--ood-centering", choices=["none", "global_mean"], default="none",
                   help="nc5_ood: cosines of uncentred class means and OOD mean (default, Ammar et al. eq. 5) or of "
                        "both centred at the global mean")
    p.add_argument("--min-count", type=int, default=1, metavar="N",
                   help="leave out classes with fewer than N samples (their number is reported; their samples are "
                        "kept so Sigma_W leaves them out exactly)")
    p.add_argument("--ood", metavar="OOD.npz", help="out-of-distribution features ('features' only) for nc5_ood")
    p.add_argument("--cdnv-exponent", type=float, default=2.0, metavar="P",
                   help="CDNV denominator 2 ||mu_k - mu_l||^P (default 2, Galanti et al.)")
    p.add_argument("--tile-size", type=int, default=2048, metavar="T",
                   help="classes per tile of the pairwise pass (memory ~ T^2; results do not depend on it)")
    p.add_argument("--batch-size", type=int, default=16384, metavar="B",
                   help="feature rows read from the file at a time (memory ~ B x dim; results do not depend on it)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..data.features import open_features
    from ..metrics import measure_stream, stream_stats

    source = open_features(args.features)
    with warnings_as_lines("warning: "):
        ood = None
        if args.ood is not None:
            ood_source = open_features(args.ood, labels=False)
            ood = stream_stats(ood_source.batches(args.batch_size), 1, ood_source.dim)
        report = measure_stream(lambda: source.batches(args.batch_size), source.num_classes, source.dim,
                                W=source.weight, b=source.bias, progress=show_progress(args),
                                num_samples=source.num_samples, max_count=source.max_count,
                                global_mean=args.global_mean, ddof=args.ddof,
                                rtol=args.rtol, scale=args.scale, min_count=args.min_count, ood=ood,
                                cdnv_exponent=args.cdnv_exponent, tile_size=args.tile_size,
                                ood_centering=args.ood_centering)
    if args.json:
        print(dumps_line(to_jsonable(report)))
    else:
        print(format_report(report))
    return 0

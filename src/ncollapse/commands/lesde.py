"""``ncollapse lesde``: simulate the locally elastic ODE/SDE of class features and report NC over time."""

from __future__ import annotations

import argparse

from .._io import dumps_line
from ..serialize import to_jsonable

DESCRIPTION = """\
Simulate the LE-ODE / LE-SDE (Zhang et al. 2021b) for K classes with intra-class impact alpha and inter-class
impact beta, all seeds batched (Euler-Maruyama). The class means tend to a simplex ETF iff beta > 0 and
alpha + (K-1) beta > 0.

--noise-cov takes the (K^2 x K^2) covariance of a representative tuple (a .npy file or a text matrix) instead of
the isotropic --noise. --separability T1,T2,... simulates --paths paths at once and prints, for every class pair,
the simulated probability that a fixed direction separates the pair beside the Gaussian formula and its limit.

examples:
  ncollapse lesde --classes 4 --alpha 1 --beta 0.2 --steps 2000 --json
  ncollapse lesde --classes 10 --alpha 1 --beta -0.05 --noise 0.3 --per-class 5 --seeds 8
  ncollapse lesde --classes 3 --alpha -1 --beta 0.2 --noise 1 --separability 0.5,2,6 --paths 8000
"""


HELP = "simulate the locally elastic SDE/ODE of class features"


def register(subparsers) -> None:
    parser = subparsers.add_parser("lesde", help=HELP,
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=4, help="number of classes K")
    parser.add_argument("--alpha", type=float, default=1.0, help="intra-class impact")
    parser.add_argument("--beta", type=float, default=0.2, help="inter-class impact")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--dt", type=float, default=0.01, help="time step")
    parser.add_argument("--noise", type=float, default=0.0, help="sigma of the Wiener term (0: LE-ODE)")
    parser.add_argument("--noise-cov", metavar="FILE", help="covariance of the noise, (K^2 x K^2), .npy or text")
    parser.add_argument("--separability", metavar="T1,T2,...", type=_times,
                        help="report pairwise separability at these times (simulation vs formula)")
    parser.add_argument("--paths", type=int, default=10000, help="paths simulated at once for --separability")
    parser.add_argument("--seeds", type=int, default=4, help="independent runs, simulated at once")
    parser.add_argument("--per-class", type=int, default=1, help="samples per class")
    parser.add_argument("--init-scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--quiet", action="store_true", help="accepted for symmetry; nothing is shown")
    parser.set_defaults(func=run)


def _times(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated times such as 0.5,2,6; got {text!r}") from None


def _read_matrix(path: str, classes: int):
    """The (K² x K²) noise covariance from a .npy or text file, capped at the size K implies."""
    import io

    import numpy as np

    from ..resources import read_capped, read_npy

    entries = classes ** 4
    hint = f" for K = {classes} (a {classes * classes} x {classes * classes} matrix)"
    if path.endswith(".npy"):
        return read_npy(path, 8 * entries + 4096, "--noise-cov", hint)
    text = read_capped(path, 64 * entries + 4096, "--noise-cov", hint)
    try:
        return np.loadtxt(io.BytesIO(text), ndmin=2)
    except ValueError as exc:
        raise ValueError(f"cannot read the noise covariance {path}: {exc}") from None


def run(args) -> int:
    from ..lesde import separability, simulate
    from ..validation import check_device

    check_device(args.device, "--device")
    noise = args.noise if args.noise_cov is None else _read_matrix(args.noise_cov, args.classes)
    if args.separability is not None:
        return _report_separability(separability(args.classes, args.alpha, args.beta, noise, args.separability,
                                                 paths=args.paths, dt=args.dt, seed=args.seed,
                                                 device=args.device), args)
    result = simulate(args.classes, args.alpha, args.beta, steps=args.steps, dt=args.dt, noise=noise,
                      seeds=args.seeds, per_class=args.per_class, init_scale=args.init_scale, seed=args.seed,
                      device=args.device)
    final = {key: values[-1] for key, values in result.trajectory.items()}
    out = {"classes": args.classes, "alpha": args.alpha, "beta": args.beta, "steps": args.steps, "dt": args.dt,
           "noise": args.noise if args.noise_cov is None else args.noise_cov, "seeds": args.seeds,
           "per_class": args.per_class, "rates": result.rates,
           "etf_expected": result.etf_expected, "times": result.times, "final": final,
           "trajectory": result.trajectory}
    if args.json:
        print(dumps_line(to_jsonable(out)))
        return 0
    kind = "SDE" if args.noise > 0 or args.noise_cov else "ODE"
    print(f"LE-{kind}: K={args.classes}, alpha={args.alpha}, beta={args.beta}, "
          f"T={args.steps * args.dt:g}; ETF mode rate {result.rates['etf_mode']:.4g}, "
          f"others {result.rates['other_modes']:.4g} -> simplex ETF expected: {result.etf_expected}")
    for key, values in final.items():
        print(f"  {key:<22} " + " ".join(f"{v:.3g}" for v in values))
    return 0


def _report_separability(out: dict, args) -> int:
    if args.json:
        print(dumps_line(to_jsonable(out)))
        return 0
    print(f"LE-SDE separability: K={args.classes}, alpha={args.alpha}, beta={args.beta}, {out['paths']} paths, "
          f"dt={out['dt']:g}; max |simulated - formula| = {out['max_abs_diff']:.3g}")
    for j, ((k, l), limit) in enumerate(zip(out["pairs"], out["limit"])):
        cells = "  ".join(f"t={t:g}: {sim[j]:.4f} vs {formula[j]:.4f}"
                          for t, sim, formula in zip(out["times"], out["simulated"], out["formula"]))
        print(f"  classes {k},{l}: {cells}  (limit {limit:g})")
    return 0

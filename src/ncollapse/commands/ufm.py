"""``ncollapse ufm``: solve one UFM instance, a batched sweep, or one of the lab's experiments."""

from __future__ import annotations

import argparse
import sys

from .._io import atomic_write_json, check_in_file, check_out_dir, dumps_line

DESCRIPTION = """\
Solve an unconstrained features model (UFM) and compare it with its closed-form optimum.

examples:
  ncollapse ufm --loss ce --classes 4 --per-class 10 --dim 8 --json
  ncollapse ufm --loss mse --counts 500,100,20 --dim 4 --lambda-w 1e-4 --lambda-h 1e-4 --optimizer lbfgs
  ncollapse ufm --loss ncmc_p --counts 50,20,5 --dim 20 --centers 3 --theta 0.2 --lambda-h 1e-3 --json
  ncollapse ufm --loss ce --counts 100,100,10,10 --dim 4 --lambda-w 1e-3 --lambda-h 1e-3 --certify --json
  ncollapse ufm --loss ce --classes 4 --per-class 5 --dim 4 --constraint ball --optimizer gd --lr 2
  ncollapse ufm sweep --grid configs/ufm/mse_lambda_sweep.toml --out sweep.json
  ncollapse ufm experiment minority_collapse --out results/ufm
"""


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _layers(text: str) -> tuple[str, ...]:
    return tuple(v for v in text.split(",") if v)


HELP = "simulate unconstrained features models against their theory"


def register(subparsers) -> None:
    from ..ufm.experiments import EXPERIMENTS
    from ..ufm.problem import BIASES, CONSTRAINTS, FIXED, FRAMES, LOSSES, NORMALIZE
    from ..ufm.solve import OPTIMIZERS

    parser = subparsers.add_parser("ufm", help=HELP,
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loss", choices=LOSSES, default="ce")
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--counts", type=_int_list, help="samples per class, e.g. 500,100,20")
    shape.add_argument("--per-class", type=int, default=10, help="samples per class (balanced, with --classes)")
    parser.add_argument("--classes", type=int, help="number of classes K (with --per-class)")
    parser.add_argument("--dim", type=int, default=8, help="feature dimension d")
    parser.add_argument("--bias", choices=BIASES, default="none")
    parser.add_argument("--lambda-w", type=float, help="classifier weight decay (default 5e-3 where it applies)")
    parser.add_argument("--lambda-h", type=float, help="feature weight decay (default 5e-3 where it applies)")
    parser.add_argument("--lambda-b", type=float, help="bias weight decay (bias=decay; default 5e-3)")
    parser.add_argument("--normalize", choices=NORMALIZE, default="none")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--extra-layers", type=_layers, default=(), help="e.g. linear,relu (Tirer & Bruna)")
    parser.add_argument("--fixed-classifier", choices=FIXED, default="none")
    centers = parser.add_mutually_exclusive_group()
    centers.add_argument("--centers", type=int, help="NCMC f: class-aware centers per class (Yan et al. §3.5)")
    centers.add_argument("--centers-per-class", type=_int_list, help="NCMC f_k explicitly, e.g. 1,2,3")
    parser.add_argument("--theta", type=float, default=0.2, help="NCMC frame angle (radians)")
    parser.add_argument("--lambda-norm", type=float, default=6e-4, help="norm regulariser of ncmc_cosine")
    parser.add_argument("--ncmc-frame", choices=FRAMES, default="fixed",
                        help="ncmc_p: learn the frame norms (Yan et al. Thm 3.3/3.4) or keep them fixed")
    parser.add_argument("--constraint", choices=CONSTRAINTS, default="penalty",
                        help="ball: Fang et al.'s layer-peeled model (energy bounds instead of penalties)")
    parser.add_argument("--energy-w", type=float, default=1.0, help="ball: mean ||w_k||^2 <= E_W")
    parser.add_argument("--energy-h", type=float, default=1.0, help="ball: class-averaged mean ||h_i||^2 <= E_H")
    parser.add_argument("--init-scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="lbfgs")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, help="step size (default per optimizer; flow: RK4 dt)")
    parser.add_argument("--tol", type=float, default=1e-8, help="gradient-norm convergence threshold")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--certify", action="store_true",
                        help="also solve the convex reformulation (needs pip install 'ncollapse[theory]')")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)

    actions = parser.add_subparsers(dest="ufm_action", metavar="ACTION", parser_class=type(parser))
    sweep = actions.add_parser("sweep", help="run a batched sweep from a TOML grid",
                               description="Run a TOML grid ([problem], [grid], [solver]) as stacked solves.\n\n"
                                           "example:\n  ncollapse ufm sweep --grid configs/ufm/mse_lambda_sweep.toml "
                                           "--out sweep.json",
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    sweep.add_argument("--grid", required=True, help="TOML file")
    sweep.add_argument("--out", help="write the full result JSON here")
    sweep.add_argument("--json", action="store_true")
    sweep.add_argument("--quiet", action="store_true")
    sweep.set_defaults(func=run_sweep)
    experiment = actions.add_parser("experiment", help="run one of the lab's experiments (JSON + PNG)",
                                    description="Run a UFM experiment; writes NAME.json and NAME.png into --out.\n\n"
                                                "example:\n  ncollapse ufm experiment nc_dynamics --out results/ufm",
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
    experiment.add_argument("name", choices=sorted(EXPERIMENTS))
    experiment.add_argument("--out", required=True, help="output folder")
    experiment.add_argument("--size", choices=("tiny", "full"), default="full")
    experiment.add_argument("--seed", type=int, default=0)
    experiment.add_argument("--json", action="store_true")
    experiment.add_argument("--quiet", action="store_true")
    experiment.set_defaults(func=run_experiment)


def _progress(args) -> bool:
    return not args.quiet and sys.stderr.isatty()


def run(args) -> int:
    from ..geometry import class_aware_centers
    from ..ufm import UFMProblem, solve
    from ..ufm.experiments import summarize

    from ..validation import check_memory

    if args.counts is None and args.classes is None:
        raise ValueError("give the class sizes: --counts N1,N2,... or --classes K (with --per-class, default 10)")
    counts = args.counts if args.counts is not None else (args.per_class,) * args.classes
    centers = args.centers_per_class
    if args.centers is not None:
        centers = tuple(class_aware_centers(counts, args.centers, order="sorted"))
    problem = UFMProblem(loss=args.loss, counts=counts, dim=args.dim, bias=args.bias, lambda_w=args.lambda_w,
                         lambda_h=args.lambda_h, lambda_b=args.lambda_b, normalize=args.normalize,
                         temperature=args.temperature, extra_layers=args.extra_layers,
                         fixed_classifier=args.fixed_classifier, centers_per_class=centers, theta=args.theta,
                         lambda_norm=args.lambda_norm, init_scale=args.init_scale, seed=args.seed,
                         constraint=args.constraint, energy_w=args.energy_w, energy_h=args.energy_h,
                         ncmc_frame=args.ncmc_frame)
    if str(args.device) == "cpu":  # parameters, gradients and optimizer state: at least four float64 copies
        size = sum(problem.counts) * problem.dim + len(problem.counts) * problem.dim
        check_memory(32 * size, f"ufm with {sum(problem.counts)} x {problem.dim} features", "lower --dim or the counts")
    result = solve(problem, optimizer=args.optimizer, steps=args.steps, lr=args.lr, tol=args.tol,
                   record_metrics=False, device=args.device, progress=_progress(args), certify=args.certify)
    summary = {"problem": problem.to_dict(), **summarize(result, 0)}
    if args.json:
        print(dumps_line(summary))
        return 0
    metrics = summary["metrics"]
    print(f"loss {summary['loss']:.10g} after {summary['steps']} {args.optimizer} steps "
          f"(converged: {summary['converged']}, |grad| {summary['grad_norm']:.2e})")
    for key in ("nc1", "etf_error_means", "etf_error_weights", "self_duality", "ncc_mismatch"):
        if metrics.get(key) is not None:
            print(f"  {key:<20} {metrics[key]:.4g}")
    if summary["theory"] is None:
        print("theory: no closed form for this instance")
    else:
        gaps = summary["theory_gaps"]
        print(f"theory: {summary['theory']['geometry']}, loss {summary['theory']['loss']:.10g} "
              f"({summary['theory']['source']})")
        print(f"  relative loss gap {gaps['loss']:.2e}, largest geometry error {gaps['geometry']:.2e}")
    cert = summary["certificate"]
    if cert is not None:
        print(f"certificate: convex optimum {cert['convex_objective']:.10g} ({cert['solver']}, {cert['status']}), "
              f"gap {cert['gap']:.2e} (relative {cert['relative_gap']:.2e})")
    return 0


def run_sweep(args) -> int:
    from ..ufm.experiments import load_grid, sweep

    result = sweep(load_grid(check_in_file(args.grid, "--grid")), progress=_progress(args))
    if args.out:
        atomic_write_json(args.out, result)
    if args.json:
        print(dumps_line(result))
        return 0
    print(f"{result['num_instances']} instances in {result['num_groups']} stacked solve(s)")
    for inst in result["instances"]:
        gap = inst["theory_gap"]
        print(f"  {inst['point']}: loss {inst['loss']:.8g}, converged {inst['converged']}"
              + ("" if gap is None else f", theory gap {gap:.1e}"))
    return 0


def run_experiment(args) -> int:
    from ..ufm.experiments import run_experiment as run_named

    check_out_dir(args.out)
    data = run_named(args.name, args.out, size=args.size, seed=args.seed, progress=_progress(args))
    if args.json:
        print(dumps_line(data))
    else:
        print(f"wrote {args.out}/{args.name}.json and {args.out}/{args.name}.png")
    return 0

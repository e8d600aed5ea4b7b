"""``ncollapse ufm``: solve one UFM instance, a batched sweep, or one of the lab's experiments."""

from __future__ import annotations

import argparse

from .._io import check_in_file, check_out_dir, dumps_line
from . import show_progress

DESCRIPTION = """\
Solve an unconstrained features model (UFM) and compare it with its closed-form optimum.

examples:
  ncollapse ufm --loss ce --classes 4 --per-class 10 --dim 8 --json
  ncollapse ufm --loss mse --counts 500,100,20 --dim 4 --lambda-w 1e-4 --lambda-h 1e-4 --optimizer lbfgs
  ncollapse ufm --loss ncmc_p --counts 50,20,5 --dim 20 --centers 3 --theta 0.2 --lambda-h 1e-3 --json
  ncollapse ufm --loss ce --counts 100,100,10,10 --dim 4 --lambda-w 1e-3 --lambda-h 1e-3 --certify --json
  ncollapse ufm --loss ce --classes 4 --per-class 5 --dim 4 --constraint ball --optimizer gd --lr 2
  ncollapse ufm sweep --grid configs/ufm/mse_lambda_sweep.toml --out runs/sweep.json
  ncollapse ufm sweep --ratios 1:100:16 --lambdas 1e-4:5e-3:16 --majority 5 --minority 5 --dim 32 --out runs/phase
  ncollapse ufm threshold --majority 5 --minority 5 --lambda 1e-4 --loss ce --out runs/threshold
  ncollapse ufm experiment minority_collapse --out runs/ufm
"""


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _layers(text: str) -> tuple[str, ...]:
    return tuple(v for v in text.split(",") if v)


def _values(text: str) -> list[float]:
    """"a,b,c" or "LO:HI:N" (N log-spaced values from LO to HI)."""
    try:
        if ":" in text:
            lo, hi, n = text.split(":")
            lo, hi, n = float(lo), float(hi), int(n)
            if lo <= 0 or hi <= 0 or n < 1:
                raise ValueError
            _check_count(n)
            return [lo * (hi / lo) ** (i / max(n - 1, 1)) for i in range(n)]
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers or LO:HI:N with LO, HI > 0, "
                                         f"got {text!r}") from None


def _check_count(n: int) -> None:
    """The memory guard for N values (a Python float in a list: 32 bytes), as an argparse error."""
    from ..resources import check_memory

    try:
        check_memory(32 * n, f"LO:HI:N with N = {n}", "give a smaller N")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_setting(parser, loss_default: str = "ce") -> None:
    """K_A, K_B, n_A and the loss of the minority-collapse setting (Fang et al. 2021)."""
    parser.add_argument("--majority", type=int, default=5, help="K_A majority classes")
    parser.add_argument("--minority", type=int, default=5, help="K_B minority classes")
    parser.add_argument("--loss", choices=("ce", "mse"), default=loss_default)


def _add_sweep(actions) -> None:
    sweep = actions.add_parser(
        "sweep", help="run a batched sweep from a TOML grid, or an (R, λ) phase diagram",
        description="Run a TOML grid ([problem], [grid], [solver]) as stacked solves, or, with --ratios and\n"
                    "--lambdas, the minority-collapse phase diagram: every (R, λ) cell solved batched and\n"
                    "certified; writes phase.json and phase.png into --out.\n\nexamples:\n"
                    "  ncollapse ufm sweep --grid configs/ufm/mse_lambda_sweep.toml --out runs/sweep.json\n"
                    "  ncollapse ufm sweep --ratios 1:100:16 --lambdas 1e-4:5e-3:16 --dim 32 --out runs/phase",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sweep.add_argument("--grid", help="TOML file")
    sweep.add_argument("--out", help="grid: write the full result JSON here; phase diagram: output folder")
    sweep.add_argument("--ratios", type=_values, help="imbalance ratios R = n_A/n_B (a,b,c or LO:HI:N)")
    sweep.add_argument("--lambdas", type=_values, help="λ_W = λ_H values (a,b,c or LO:HI:N)")
    _add_setting(sweep)
    sweep.add_argument("--dim", type=int, default=32)
    sweep.add_argument("--n-majority", type=int, default=100, help="n_A (n_B = round(n_A/R))")
    sweep.add_argument("--steps", type=int, default=3000, help="L-BFGS iterations per cell")
    sweep.add_argument("--force", action="store_true", help="replace outputs that ncollapse did not write as such")
    sweep.add_argument("--json", action="store_true")
    sweep.add_argument("--quiet", action="store_true")
    sweep.set_defaults(func=run_sweep)


def _add_threshold(actions) -> None:
    threshold = actions.add_parser(
        "threshold", help="minority-collapse threshold R0 by bisection on certified optima",
        description="Find R0, the smallest imbalance ratio at which the minority classifiers' mean cosine\n"
                    "exceeds 1 - eps at the certified optimum (needs pip install 'ncollapse[theory]').\n\n"
                    "example:\n  ncollapse ufm threshold --majority 5 --minority 5 --lambda 1e-4 --out runs/threshold",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_setting(threshold)
    threshold.add_argument("--lambda", dest="lam", type=float, default=1e-4, help="λ_W = λ_H")
    threshold.add_argument("--n-majority", type=int, default=1000, help="n_A (n_B = n_A/R, real)")
    threshold.add_argument("--eps", type=float, default=1e-4, help="collapse: mean cosine > 1 - eps")
    threshold.add_argument("--r-max", type=float, default=1e8, help="largest R tried")
    threshold.add_argument("--out", help="write threshold.json and threshold.png here")
    threshold.add_argument("--force", action="store_true", help="replace outputs that ncollapse did not write as such")
    threshold.add_argument("--json", action="store_true")
    threshold.set_defaults(func=run_threshold)


HELP = "simulate unconstrained features models against their theory"


def register(subparsers) -> None:
    from ..ufm_names import BIASES, CONSTRAINTS, EXPERIMENT_NAMES, FIXED, FRAMES, LOSSES, NORMALIZE, OPTIMIZERS

    parser = subparsers.add_parser("ufm", help=HELP,
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
                                   allow_abbrev=False)  # else "ufm threshold --lambda" is ambiguous with --lambda-w
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
    _add_sweep(actions)
    _add_threshold(actions)
    experiment = actions.add_parser("experiment", help="run one of the lab's experiments (JSON + PNG)",
                                    description="Run a UFM experiment; writes NAME.json and NAME.png into --out.\n\n"
                                                "example:\n  ncollapse ufm experiment nc_dynamics --out runs/ufm",
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
    experiment.add_argument("name", choices=sorted(EXPERIMENT_NAMES))
    experiment.add_argument("--out", required=True, help="output folder")
    experiment.add_argument("--size", choices=("tiny", "full"), default="full")
    experiment.add_argument("--seed", type=int, default=0)
    experiment.add_argument("--force", action="store_true", help="replace outputs that ncollapse did not write as such")
    experiment.add_argument("--json", action="store_true")
    experiment.add_argument("--quiet", action="store_true")
    experiment.set_defaults(func=run_experiment)


def run(args) -> int:
    from ..geometry import class_aware_centers
    from ..ufm import UFMProblem, solve
    from ..ufm.experiments import summarize
    from ..validation import check_device

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
    check_device(args.device, "--device")
    result = solve(problem, optimizer=args.optimizer, steps=args.steps, lr=args.lr, tol=args.tol,
                   record_metrics=False, device=args.device, progress=show_progress(args), certify=args.certify)
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


def run_phase(args) -> int:
    from ..io_safe import Outputs
    from ..ufm.phase import check_grid, phase_diagram, write_phase_diagram

    if args.ratios is None or args.lambdas is None or args.out is None:
        raise ValueError("the phase diagram needs --ratios, --lambdas and --out (a folder)")
    try:
        check_grid(args.ratios, args.lambdas)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"--{exc}") from None
    out = check_out_dir(args.out)
    with Outputs(force=args.force) as outputs:
        for name, kind in (("phase.json", "ufm phase json"), ("phase.png", "ufm phase figure")):
            outputs.claim(out / name, kind)
        data = phase_diagram(args.majority, args.minority, args.dim, args.ratios, args.lambdas, loss=args.loss,
                             n_majority=args.n_majority, steps=args.steps, progress=show_progress(args))
        data = write_phase_diagram(out, data, outputs)
    if args.json:
        print(dumps_line(data))
        return 0
    gaps = [abs(g) for row in data["relative_gap"] for g in row]
    print(f"{len(gaps)} cells in {data['seconds']:.1f} s; largest |relative certificate gap| {max(gaps):.1e}; "
          f"wrote {args.out}/phase.json and {args.out}/phase.png")
    return 0


def run_threshold(args) -> int:
    from ..io_safe import Outputs
    from ..serialize import to_jsonable
    from ..ufm.phase import collapse_threshold, write_threshold

    with Outputs(force=args.force) as outputs:
        if args.out:
            out = check_out_dir(args.out)
            for name, kind in (("threshold.json", "ufm threshold json"), ("threshold.png", "ufm threshold figure")):
                outputs.claim(out / name, kind)
        data = collapse_threshold(args.majority, args.minority, args.lam, loss=args.loss,
                                  n_majority=args.n_majority, eps=args.eps, r_max=args.r_max)
        if args.out:
            data = write_threshold(out, data, outputs)
    if args.json:
        print(dumps_line(to_jsonable(data)))
        return 0
    found = "none up to r_max" if data["R0"] is None else f"{data['R0']:.6g}"
    print(f"R0 = {found} (bracket from {data['bracket'][0]:.6g}, {len(data['ratios'])} "
          f"certified solves); closed form: {data['analytic_R0']} ({data['analytic_source']})")
    return 0


def run_sweep(args) -> int:
    from ..io_safe import Outputs
    from ..ufm.experiments import load_grid, sweep

    if args.grid is None:
        return run_phase(args)
    if args.ratios is not None or args.lambdas is not None:
        raise ValueError("give either --grid or --ratios with --lambdas, not both")
    with Outputs(force=args.force, inputs=[args.grid]) as outputs:
        grid = load_grid(check_in_file(args.grid, "--grid"))
        if args.out:
            outputs.claim(args.out, "ufm sweep json")
        result = sweep(grid, progress=show_progress(args))
        if args.out:
            outputs.write_json(args.out, result)
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
    from ..io_safe import Outputs
    from ..ufm.experiments import run_experiment as run_named

    out = check_out_dir(args.out)
    with Outputs(force=args.force) as outputs:
        for ext, kind in ((".json", "json"), (".png", "figure")):
            outputs.claim(out / f"{args.name}{ext}", f"ufm experiment {kind}")
        data = run_named(args.name, out, size=args.size, seed=args.seed, progress=show_progress(args),
                         outputs=outputs)
    if args.json:
        print(dumps_line(data))
    else:
        print(f"wrote {args.out}/{args.name}.json and {args.out}/{args.name}.png")
    return 0

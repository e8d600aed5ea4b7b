"""The UFM lab's experiments, each writing ``<name>.json`` and ``<name>.png`` into an output folder, and sweeps.

* ``nc_dynamics`` (Zhu et al. 2021, fig. 2; Han et al. 2021): NC metrics vs gradient-descent step for CE and MSE,
  with and without a bias.
* ``minority_collapse`` (Fang et al. 2021, fig. 5): K_A majority and K_B minority classes, imbalance ratio R from
  1 to 1000; mean cosine among minority classifiers vs R at the (L-BFGS) optimum of the regularised CE UFM.
* ``small_init`` (Mixon et al. 2020): unregularised MSE gradient flow (RK4) with a free bias from initial scales
  1e-3 … 3; NC metrics and the strong-neural-collapse errors (``ufm.snc``) at the end vs the initial scale.
* ``extended`` (Tirer & Bruna 2022): MSE UFM with one extra linear layer, and with linear + ReLU; NC at H and at
  the last layer.
* ``fixed_classifiers`` (Pernici et al. 2021): CE with a fixed simplex ETF, d-cube or d-orthoplex classifier;
  achieved loss and margin per geometry.
* ``max_margin`` (Ji et al. 2022): unregularised CE gradient descent without a bias against the max-margin
  solution (``ufm.maxmargin``, needs the ``theory`` extra); cosines and margin ratio vs the number of steps.

``size="tiny"`` shrinks every experiment to a few seconds (tests); ``"full"`` stays under two minutes on a CPU.
``sweep(config)`` runs a grid (``load_grid`` reads the TOML form) as one stacked solve per compatible group.
"""

from __future__ import annotations

import itertools
import math
import tomllib
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from .._extras import MissingExtraError
from .._io import atomic_write_json
from ..config_check import check_choice, check_keys
from ..report.figures import figure, write_png
from ..resources import SIDE_FILE_LIMIT, check_memory, read_capped
from ..serialize import to_jsonable
from . import theory
from .certify import certify
from .maxmargin import compare_direction, max_margin
from .problem import UFMProblem
from .snc import snc_errors
from .solve import OPTIMIZERS, group_problems, solve

__all__ = ["EXPERIMENTS", "run_experiment", "summarize", "sweep", "load_grid", "nc_dynamics", "minority_collapse",
           "small_init", "extended", "fixed_classifiers", "max_margin_direction"]

SIZES = ("tiny", "full")
_TRACKED = ("nc1", "etf_error_means", "etf_error_weights", "self_duality", "ncc_mismatch")


_CERTIFICATE_KEYS = ("convex_objective", "gap", "relative_gap", "status", "solver", "rank")


def summarize(result, i: int) -> dict:
    """JSON-ready summary of instance i: loss, steps, convergence, metrics (learned W, b), theory gaps and, when
    ``solve(..., certify=True)`` ran, the certificate (convex optimum and gap)."""
    pred = theory.predict(result.problems[i])
    gap = theory.gaps(result, i, pred) if pred is not None else None
    cert = None if result.certificates is None else {k: result.certificates[i][k] for k in _CERTIFICATE_KEYS}
    return to_jsonable({
        "loss": float(result.objective[i]), "data_loss": float(result.data_loss[i]), "steps": result.steps,
        "converged": bool(result.converged[i]), "grad_norm": float(result.grad_norm[i]),
        "optimizer": result.optimizer, "lr": result.lr, "metrics": result.metrics(i),
        "theory": pred, "theory_gap": None if gap is None else gap["loss"], "theory_gaps": gap, "certificate": cert,
    })


def _save(out_dir, name: str, data: dict, draw, outputs=None) -> dict:
    """``name.json`` and ``name.png`` in ``out_dir``, through ``outputs`` (the command's ``io_safe.Outputs`` that
    claimed them) when given."""
    out = Path(out_dir)
    data = to_jsonable(data)
    (atomic_write_json if outputs is None else outputs.write_json)(out / f"{name}.json", data)
    fig = figure(10, 4)
    draw(fig)
    write_png(out / f"{name}.png", fig, dpi=110, outputs=outputs)
    return data


def _mean_over(trajectory: list[dict], members: list[int], key: str) -> list[float]:
    return [float(np.nanmean([entry["metrics"][b].get(key, np.nan) for b in members])) for entry in trajectory]


def nc_dynamics(out_dir, size: str = "full", seed: int = 0, progress: bool = False, outputs=None) -> dict:
    """NC metrics vs GD step for CE/MSE × bias none/free (Zhu et al. 2021, fig. 2); seeds averaged."""
    k, n, d, steps, seeds = (10, 10, 32, 2000, 3) if size == "full" else (3, 4, 4, 60, 2)
    runs = {}
    for loss, bias in itertools.product(("ce", "mse"), ("none", "free")):
        problems = [UFMProblem.balanced(k, n, d, loss=loss, bias=bias, seed=seed + s) for s in range(seeds)]
        result = solve(problems, optimizer="gd", lr=1.0, steps=steps, log_points=20, progress=progress)
        members = list(range(seeds))
        runs[f"{loss}_bias_{bias}"] = {
            "steps": [e["step"] for e in result.trajectory],
            "objective": [float(np.mean(e["objective"])) for e in result.trajectory],
            **{key: _mean_over(result.trajectory, members, key) for key in _TRACKED},
        }

    def draw(fig):
        axes = fig.subplots(1, len(_TRACKED))
        for ax, key in zip(axes, _TRACKED):
            for label, run in runs.items():
                ax.plot(np.maximum(run["steps"], 1), np.maximum(run[key], 1e-16), label=label)
            ax.set(xscale="log", yscale="log", xlabel="step", title=key)
        axes[0].legend(fontsize=7)

    return _save(out_dir, "nc_dynamics", {"experiment": "nc_dynamics", "size": size, "classes": k, "per_class": n,
                                          "dim": d, "optimizer": "gd", "lr": 1.0, "runs": runs}, draw, outputs)


def _pairwise_cos_mean(w: torch.Tensor) -> float:
    unit = w / w.norm(dim=1, keepdim=True).clamp(min=1e-300)
    cos = unit @ unit.T
    iu = torch.triu_indices(len(w), len(w), offset=1)
    return float(cos[iu[0], iu[1]].mean())


def minority_collapse(out_dir, size: str = "full", seed: int = 0, progress: bool = False, outputs=None) -> dict:
    """Mean cosine among minority classifiers vs imbalance ratio R (Fang et al. 2021, fig. 5), CE UFM optimum;
    with the ``theory`` extra each solve is certified against the convex program (d ≥ K: the bound is tight)."""
    if size == "full":
        k_a, k_b, n_a, d, steps, ratios = 5, 5, 1000, 10, 300, [1, 3, 10, 30, 100, 300, 1000]
    else:
        k_a, k_b, n_a, d, steps, ratios = 2, 2, 20, 4, 60, [1, 20]
    lam = 1e-4  # Zhu et al.'s λ_H multiplies Σ_i‖h_i‖², so K√(nλ_Wλ_H) < 1 needs a small λ at n = 1000
    problems = [UFMProblem(loss="ce", counts=(n_a,) * k_a + (max(1, round(n_a / r)),) * k_b, dim=d, seed=seed,
                           lambda_w=lam, lambda_h=lam) for r in ratios]
    result = solve(problems, optimizer="lbfgs", steps=steps, record_metrics=False, progress=progress)
    minority = list(range(k_a, k_a + k_b))
    cos_min, cos_maj = [], []
    for i in range(len(ratios)):
        w, _ = result.classifier(i)
        cos_min.append(_pairwise_cos_mean(w[minority]))
        cos_maj.append(_pairwise_cos_mean(w[:k_a]))

    def draw(fig):
        ax = fig.subplots()
        ax.plot(ratios, cos_min, "o-", label="minority classifiers")
        ax.plot(ratios, cos_maj, "s--", label="majority classifiers")
        ax.axhline(-1 / (k_a + k_b - 1), color="gray", lw=0.8, label="simplex ETF −1/(K−1)")
        ax.set(xscale="log", xlabel="imbalance ratio R = n_A / n_B", ylabel="mean pairwise cosine",
               title=f"minority collapse, CE UFM (K_A={k_a}, K_B={k_b}, n_A={n_a})")
        ax.legend()

    data = {"experiment": "minority_collapse", "size": size, "k_majority": k_a, "k_minority": k_b, "n_majority": n_a,
            "dim": d, "lambda": problems[0].lambda_w, "ratios": ratios,
            "minority_counts": [p.counts[-1] for p in problems], "minority_cos_weights_mean": cos_min,
            "majority_cos_weights_mean": cos_maj, "objective": result.objective.tolist(),
            "converged": result.converged.tolist(), "steps": result.steps, **_certificate(problems, result.objective)}
    return _save(out_dir, "minority_collapse", data, draw, outputs)


def _certificate(problems, achieved) -> dict:
    """{"relative_gap": [...]} of the solves against their certified optima (``ufm.certify``), or
    {"certificate": why not} when the ``theory`` extra is missing."""
    try:
        certs = certify(problems, achieved=achieved.tolist())
    except MissingExtraError as exc:
        return {"certificate": f"not run: {exc}"}
    return {"relative_gap": [c["relative_gap"] for c in certs], "certificate_solver": certs[0].get("solver")}


def small_init(out_dir, size: str = "full", seed: int = 0, progress: bool = False, outputs=None) -> dict:
    """Unregularised MSE gradient flow with a free bias from initial scale σ (Mixon et al. 2020): NC and SNC vs σ."""
    if size == "full":
        k, n, d, steps, dt, seeds, scales = 4, 10, 8, 1500, 0.5, 3, np.logspace(-3, 0.5, 8).tolist()
    else:
        k, n, d, steps, dt, seeds, scales = 3, 3, 4, 200, 0.5, 1, [1e-2, 1.0]
    grid = list(itertools.product(scales, range(seeds)))
    problems = [UFMProblem.balanced(k, n, d, loss="mse", bias="free", lambda_w=0.0, lambda_h=0.0, init_scale=s,
                                    seed=seed + r) for s, r in grid]
    result = solve(problems, optimizer="flow", lr=dt, steps=steps, log_points=2, progress=progress)
    final = result.trajectory[-1]["metrics"]
    for i, metrics in enumerate(final):
        w, b = result.classifier(i)
        metrics.update(snc_errors(w, *result.features(i), b))
    keys = ("nc1", "etf_error_means", "self_duality", "duality_papyan", "snc_gram", "snc_feature", "snc_bias")
    table = {key: [float(np.mean([final[i][key] for i, (s, _) in enumerate(grid) if s == scale])) for scale in scales]
             for key in keys}

    def draw(fig):
        ax = fig.subplots()
        for key in keys:
            ax.plot(scales, np.maximum(table[key], 1e-16), "o-", label=key)
        ax.set(xscale="log", yscale="log", xlabel="initial scale σ", ylabel="metric at the end of the flow",
               title=f"MSE gradient flow (RK4, dt={dt}, T={steps * dt:g}), free bias, no regularisation")
        ax.legend()

    data = {"experiment": "small_init", "size": size, "classes": k, "per_class": n, "dim": d, "dt": dt,
            "steps": steps, "seeds": seeds, "init_scales": scales, "loss": result.objective.tolist(), **table}
    return _save(out_dir, "small_init", data, draw, outputs)


def extended(out_dir, size: str = "full", seed: int = 0, progress: bool = False, outputs=None) -> dict:
    """Extended MSE UFM with one extra linear / linear + ReLU layer (Tirer & Bruna 2022): NC at H and the last layer."""
    k, n, d, steps, seeds = (4, 10, 8, 3000, 3) if size == "full" else (3, 3, 4, 80, 1)
    keys = ("nc1", "etf_error_means")
    runs = {}
    for layers in (("linear",), ("linear", "relu")):
        problems = [UFMProblem.balanced(k, n, d, loss="mse", extra_layers=layers, seed=seed + s) for s in range(seeds)]
        result = solve(problems, optimizer="lbfgs", steps=steps, record_metrics=False, progress=progress)
        run = {"objective": result.objective.tolist(), "converged": result.converged.tolist()}
        for name, layer in (("H", 0), ("last", len(layers))):
            reports = [result.metrics(i, layer=layer) for i in range(seeds)]
            for key in keys:
                run[f"{key}_{name}"] = float(np.mean([r[key] for r in reports]))
            cosines = []
            for i in range(seeds):
                x, y = result.features(i, layer=layer)
                means = torch.zeros(k, d, dtype=x.dtype).index_add_(0, y, x) / n
                cosines.append(abs(_pairwise_cos_mean(means)))
            run[f"abs_cos_uncentred_means_{name}"] = float(np.mean(cosines))
        runs["+".join(layers)] = run

    def draw(fig):
        axes = fig.subplots(1, 2)
        labels = list(runs)
        for ax, key in zip(axes, keys):
            xs = np.arange(len(labels))
            ax.bar(xs - 0.2, [max(runs[lbl][f"{key}_H"], 1e-16) for lbl in labels], 0.4, label="H")
            ax.bar(xs + 0.2, [max(runs[lbl][f"{key}_last"], 1e-16) for lbl in labels], 0.4, label="last layer")
            ax.set(xticks=xs, xticklabels=labels, yscale="log", title=key)
            ax.legend()

    data = {"experiment": "extended", "size": size, "classes": k, "per_class": n, "dim": d, "runs": runs}
    return _save(out_dir, "extended", data, draw, outputs)


def fixed_classifiers(out_dir, size: str = "full", seed: int = 0, progress: bool = False, outputs=None) -> dict:
    """CE with a fixed simplex ETF / d-cube / d-orthoplex classifier (Pernici et al. 2021): loss and margin."""
    k, n, d, steps, seeds = (10, 20, 9, 1000, 3) if size == "full" else (4, 3, 3, 60, 1)
    kinds = ("etf", "cube", "orthoplex")
    problems = [UFMProblem.balanced(k, n, d, loss="ce", fixed_classifier=kind, lambda_h=5e-4, seed=seed + s)
                for kind in kinds for s in range(seeds)]
    result = solve(problems, optimizer="lbfgs", steps=steps, record_metrics=False, progress=progress)
    table = {}
    for j, kind in enumerate(kinds):
        rows = []
        for i in range(j * seeds, (j + 1) * seeds):
            x, y = result.features(i)
            w, _ = result.classifier(i)
            z = x @ w.T
            own = z.gather(1, y[:, None])[:, 0]
            other = z.scatter(1, y[:, None], float("-inf")).max(1).values
            margin = own - other
            rows.append([float(result.objective[i]), float(result.data_loss[i]), float(margin.min()),
                         float(margin.mean()), float((margin > 0).double().mean())])
        mean = np.mean(rows, axis=0)
        table[kind] = dict(zip(("objective", "data_loss", "min_margin", "mean_margin", "accuracy"), mean.tolist()))

    def draw(fig):
        axes = fig.subplots(1, 2)
        for ax, key in zip(axes, ("data_loss", "min_margin")):
            ax.bar(list(kinds), [table[kind][key] for kind in kinds])
            ax.set(title=key)

    data = {"experiment": "fixed_classifiers", "size": size, "classes": k, "per_class": n, "dim": d,
            "lambda_h": problems[0].lambda_h, "geometries": table}
    return _save(out_dir, "fixed_classifiers", data, draw, outputs)


def max_margin_direction(out_dir, size: str = "full", seed: int = 0, progress: bool = False, outputs=None) -> dict:
    """Unregularised CE GD without a bias vs the max-margin solution (Ji et al. 2022), balanced and imbalanced."""
    if size == "full":
        cases, d, checkpoints = ((5, 5, 5, 5), (10, 10, 2, 2)), 8, [10, 100, 1000, 10000]
    else:
        cases, d, checkpoints = ((2, 2, 2), (3, 3, 1)), 4, [10, 100, 1000]
    solutions = [max_margin(counts) for counts in cases]
    problems = [UFMProblem(loss="ce", counts=counts, dim=d, lambda_w=0.0, lambda_h=0.0, seed=seed) for counts in cases]
    runs = {"-".join(map(str, counts)): {"steps": checkpoints, "max_margin_objective": sol["objective"],
                                         "loss": [], "cos_logits": [], "cos_params": [], "margin_ratio": []}
            for counts, sol in zip(cases, solutions)}
    for steps in checkpoints:  # the same seeded path, stopped at each checkpoint
        result = solve(problems, optimizer="gd", lr=1.0, steps=steps, tol=0.0, record_metrics=False,
                       progress=progress)
        for i, (run, sol) in enumerate(zip(runs.values(), solutions)):
            run["loss"].append(float(result.objective[i]))
            for key, value in compare_direction(result.classifier(i)[0], *result.features(i), sol).items():
                run[key].append(value)

    def draw(fig):
        axes = fig.subplots(1, 3)
        for ax, key in zip(axes, ("cos_logits", "cos_params", "margin_ratio")):
            for label, run in runs.items():
                ax.plot(checkpoints, run[key], "o-", label=f"counts {label}")
            ax.set(xscale="log", xlabel="GD step (lr 1)", title=key)
        axes[0].legend(fontsize=7)

    data = {"experiment": "max_margin", "size": size, "dim": d, "lr": 1.0, "solver": solutions[0]["solver"],
            "runs": runs}
    return _save(out_dir, "max_margin", data, draw, outputs)


EXPERIMENTS = {"nc_dynamics": nc_dynamics, "minority_collapse": minority_collapse, "small_init": small_init,
               "extended": extended, "fixed_classifiers": fixed_classifiers, "max_margin": max_margin_direction}


def run_experiment(name: str, out_dir, size: str = "full", seed: int = 0, progress: bool = False,
                   outputs=None) -> dict:
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    if size not in SIZES:
        raise ValueError(f"size == {size!r}, must be one of {', '.join(SIZES)}")
    return EXPERIMENTS[name](out_dir, size=size, seed=seed, progress=progress, outputs=outputs)


_PROBLEM_KEYS = {f.name for f in fields(UFMProblem)} | {"classes", "per_class"}
_SOLVER_KEYS = {"optimizer", "steps", "lr", "tol", "log_points", "check_every", "history_size"}


def _problem_from(values: dict, where: str) -> UFMProblem:
    values = dict(values)
    classes, per_class = values.pop("classes", None), values.pop("per_class", None)
    if "counts" not in values:
        if classes is None or per_class is None:
            raise ValueError(f"{where}: give counts = [...] or classes and per_class")
        values["counts"] = (per_class,) * classes
    for key in ("counts", "extra_layers", "centers_per_class"):
        if isinstance(values.get(key), list):
            values[key] = tuple(values[key])
    try:
        return UFMProblem(**values)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{where}: {exc}") from None


_POINT_BYTES = 16384  # memory per grid point: its dict, UFMProblem and summary (measured 20.5 KiB for 2-class CE)


def load_grid(path) -> dict:
    """Read a sweep grid from TOML: tables [problem] (base fields), [grid] (lists: Cartesian product), [solver].
    The file must be a regular file of at most ``resources.SIDE_FILE_LIMIT`` bytes."""
    path = Path(path)
    text = read_capped(path, SIDE_FILE_LIMIT, "--grid")
    try:
        config = tomllib.loads(text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid TOML ({exc})") from None
    config["source"] = str(path)
    return config


def sweep(config: dict, progress: bool = False) -> dict:
    """Run the grid ``config`` ({"problem": {...}, "grid": {key: [values]}, "solver": {...}}) and summarise it.

    Grid points that share ``UFMProblem.batch_key`` are solved as one stacked problem.
    """
    where = config.get("source", "grid")
    check_keys(sorted(set(config) - {"source"}), ("problem", "grid", "solver"),
               lambda key: f"{where}: unknown table {key!r}")
    base, grid, solver = config.get("problem", {}), config.get("grid", {}), dict(config.get("solver", {}))
    for table, allowed, values in (("problem", _PROBLEM_KEYS, base), ("grid", _PROBLEM_KEYS, grid),
                                   ("solver", _SOLVER_KEYS, solver)):
        check_keys(values, allowed, lambda key: f"{where}: [{table}] has unknown key {key!r}")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"{where}: [grid] {key} must be a non-empty list of values")
    check_choice(solver.get("optimizer", "lbfgs"), OPTIMIZERS, f"{where}: [solver] optimizer")
    shape = " x ".join(str(len(values)) for values in grid.values()) or "1"
    check_memory(math.prod(len(values) for values in grid.values()) * _POINT_BYTES,
                 f"{where}: a grid of {shape} points", "give fewer values per [grid] key")
    points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())] or [{}]
    problems = [_problem_from({**base, **point}, f"{where}: grid point {point}") for point in points]
    solver.setdefault("optimizer", "lbfgs")
    solver.setdefault("record_metrics", False)
    instances: list = [None] * len(problems)
    groups = group_problems(problems)
    for members in groups:
        result = solve([problems[i] for i in members], progress=progress, **solver)
        for j, i in enumerate(members):
            instances[i] = {"point": to_jsonable(points[i]), **summarize(result, j)}
    return {"source": where, "instances": instances, "num_instances": len(problems), "num_groups": len(groups),
            "solver": to_jsonable(solver)}

"""Batched solvers for stacks of UFM instances: gradient descent, Adam, L-BFGS and gradient flow.

B instances of the same shape (``UFMProblem.batch_key``) are one stacked problem (``ufm.stack.Stack``).

* ``gd``: θ ← θ − lr ∇f (``torch.optim.SGD``);  ``adam``: Kingma & Ba 2015, Alg. 1 (β = 0.9, 0.999, ε = 1e-8;
  ``torch.optim.Adam``, elementwise, so every instance follows its own Adam trajectory);  ``flow``: the gradient
  flow dθ/dt = −∇f integrated by classical Runge–Kutta 4 with dt = lr (Mixon et al. 2020 study this flow);
  ``lbfgs``: torch's L-BFGS with strong-Wolfe line search on the summed objective (the same minimisers, coupled
  step sizes). The ball model (``constraint="ball"``) takes projected ``gd`` / ``adam`` steps.
* Convergence: per-instance gradient norm ‖∇f_b‖ ≤ ``tol`` (all parameters together; for the ball model the
  projected-gradient mapping), checked every ``check_every`` steps; a non-finite objective stops the run with
  ``UFMDivergenceError`` naming the step.
* Trajectory: objective, gradient norm and (``record_metrics``) the ``ncollapse.measure_features`` scalars of
  every instance at ~``log_points`` log-spaced steps, computed with the learned W, b.
* ``certify=True`` adds ``UFMResult.certificates`` from ``ufm.certify`` (the convex optimum and the gap).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from numbers import Integral, Real

import numpy as np
import torch
from tqdm.auto import tqdm

from ..metrics import measure_features
from ..resources import check_memory
from ..ufm_names import OPTIMIZERS
from ..validation import check_scalar
from .certify import certify as certify_all
from .certify import check_certifiable
from .problem import UFMProblem
from .stack import Stack, group_problems

__all__ = ["solve", "SolverOptions", "UFMResult", "UFMDivergenceError", "group_problems", "OPTIMIZERS",
           "DEFAULT_LR"]

DEFAULT_LR = {"gd": 0.5, "adam": 1e-2, "lbfgs": 1.0, "flow": 0.1}


class UFMDivergenceError(ValueError):
    """The objective became NaN/Inf (too large a step)."""


@dataclass(frozen=True)
class SolverOptions:
    """How ``solve`` runs: ``steps`` updates (L-BFGS iterations, RK4 steps) of ``optimizer`` with step ``lr``
    (default ``DEFAULT_LR[optimizer]``), stopping when every ‖∇f_b‖ ≤ ``tol`` (checked every ``check_every``
    steps); ``log_points`` trajectory entries, with metrics if ``record_metrics``; L-BFGS keeps ``history_size``
    pairs."""

    optimizer: str = "lbfgs"
    steps: int = 1000
    lr: float | None = None
    tol: float = 1e-8
    log_points: int = 20
    record_metrics: bool = True
    check_every: int = 10
    history_size: int = 20
    progress: bool = False

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer == {self.optimizer!r}, must be one of {', '.join(OPTIMIZERS)}")
        check_scalar(self.steps, "steps", Integral, low=0)
        if self.lr is None:
            object.__setattr__(self, "lr", DEFAULT_LR[self.optimizer])
        check_scalar(self.lr, "lr", Real, low=0.0, low_open=True)
        check_scalar(self.tol, "tol", Real, low=0.0)
        check_scalar(self.check_every, "check_every", Integral, low=1)
        check_scalar(self.history_size, "history_size", Integral, low=1)


@dataclass
class UFMResult:
    """Outcome of a stacked solve; arrays are indexed by instance. ``certificates`` (one dict per instance, see
    ``ufm.certify``) is filled by ``solve(..., certify=True)``."""

    problems: list[UFMProblem]
    optimizer: str
    lr: float
    steps: int
    objective: np.ndarray
    data_loss: np.ndarray
    grad_norm: np.ndarray
    converged: np.ndarray
    params: dict
    trajectory: list[dict] = field(default_factory=list)
    _stack: Stack | None = field(default=None, repr=False)
    certificates: list[dict] | None = None

    def features(self, i: int, layer: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, labels) of instance i: what the classifier sees, or extra-layer output ``layer`` (0 = H)."""
        s = self._stack
        x = s.features(self.params) if layer is None else s.layer_outputs(self.params)[layer]
        n = int(s.n[i])
        return x[i, :n].detach(), s.labels[i, :n]

    def classifier(self, i: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Effective (W/τ, b) of instance i; the frame's classifier w_k for NCMC; (None, None) for SupCon."""
        w, b = self._stack.classifier(self.params)
        return (None if w is None else w[i].detach()), (None if b is None else b[i].detach())

    def metrics(self, i: int, layer: int | None = None) -> dict:
        """``measure_features`` of instance i with its learned W, b (at extra layer ``layer`` without W)."""
        if layer is None:
            return self._stack.instance_metrics(self.params, i, scalars_only=False)
        x, y = self.features(i, layer)
        return measure_features(x.cpu(), y.cpu(), num_classes=self._stack.K)


def _log_steps(steps: int, points: int) -> set[int]:
    if steps == 0 or points <= 0:
        return {0, steps}
    grid = np.logspace(0, math.log10(steps), max(points - 1, 1))
    return {0, steps, *(int(round(v)) for v in grid)}


class _Run:
    """One solve in progress: the stack, its tensors, the options, the trajectory and the progress bar."""

    def __init__(self, stack: Stack, options: SolverOptions):
        self.stack, self.options = stack, options
        self.tensors = stack.init_params()
        self.log_at = _log_steps(options.steps, options.log_points)
        self.trajectory: list[dict] = []
        self.bar = tqdm(total=options.steps, disable=not options.progress, desc=f"ufm {options.optimizer}",
                        leave=False)

    def stationarity(self, grads) -> torch.Tensor:
        return self.stack.stationarity(self.tensors, grads, self.options.lr)

    def record(self, step: int, obj: torch.Tensor, gn: torch.Tensor) -> None:
        entry = {"step": step, "objective": obj.tolist(), "grad_norm": gn.tolist()}
        if self.options.record_metrics:
            params = dict(zip(self.stack.names, self.tensors))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                entry["metrics"] = [self.stack.instance_metrics(params, b, True) for b in range(self.stack.B)]
        self.trajectory.append(entry)

    def check_finite(self, obj: torch.Tensor, step: int) -> None:
        bad = ~torch.isfinite(obj)
        if bool(bad.any()):
            i, lr = int(torch.nonzero(bad)[0]), self.options.lr
            raise UFMDivergenceError(
                f"instance {i} diverged at step {step} (objective {float(obj[i])}); use a smaller lr than "
                f"{lr:g} (e.g. --lr {lr / 10:g})" + (" or another optimizer" if self.options.optimizer == "lbfgs"
                                                     else ""))


def solve_bytes(problems: list[UFMProblem], dtype: torch.dtype = torch.float64, optimizer: str = "lbfgs",
                history_size: int = 20) -> int:
    """Memory of a stacked solve: B instances padded to the largest N and d, each with (N + K)·d entries held
    8 times (parameters, gradients, optimiser and line-search buffers), plus 2·history_size L-BFGS pairs
    (measured for 20,000 CE instances of 100 × 16: Adam 9.2 copies, L-BFGS after 5 steps 24 copies)."""
    rows = max(sum(p.counts) + p.num_classes for p in problems)
    copies = 8 + (2 * history_size if optimizer == "lbfgs" else 0)
    return copies * torch.finfo(dtype).bits // 8 * len(problems) * rows * max(p.dim for p in problems)


def _describe(problems: list[UFMProblem]) -> str:
    big = max(problems, key=lambda p: sum(p.counts) * p.dim)
    size = f"{sum(big.counts)} x {big.dim} features"
    return f"ufm with {size}" if len(problems) == 1 else f"{len(problems)} stacked UFM instances of up to {size}"


def solve(problems, optimizer: str = "lbfgs", steps: int = 1000, lr: float | None = None, tol: float = 1e-8,
          log_points: int = 20, record_metrics: bool = True, check_every: int = 10, history_size: int = 20,
          device=None, dtype: torch.dtype = torch.float64, progress: bool = False, certify: bool = False,
          options: SolverOptions | None = None) -> UFMResult:
    """Minimise a stack of UFM objectives (see the module docstring); returns a ``UFMResult``.

    ``problems`` is one ``UFMProblem`` or a list of compatible ones. The keyword arguments build a
    ``SolverOptions`` (or pass ``options``); ``certify`` also solves the convex reformulation (``ufm.certify``).
    """
    problems = [problems] if isinstance(problems, UFMProblem) else list(problems)
    if not problems or not all(isinstance(p, UFMProblem) for p in problems):
        raise TypeError("problems must be a UFMProblem or a non-empty list of UFMProblem")
    if options is None:
        options = SolverOptions(optimizer, steps, lr, tol, log_points, record_metrics, check_every, history_size,
                                progress)
    if problems[0].constraint == "ball" and options.optimizer not in ("gd", "adam"):
        raise ValueError(f"constraint='ball' takes projected gradient steps: use optimizer 'gd' or 'adam', "
                         f"not {options.optimizer!r}")
    check_memory(solve_bytes(problems, dtype, options.optimizer, options.history_size), _describe(problems),
                 "lower --dim or the counts (or solve fewer instances at once)", device=device)
    if certify:
        for p in problems:
            check_certifiable(p)
    run = _Run(Stack(problems, device, dtype), options)
    done = _run_lbfgs(run) if options.optimizer == "lbfgs" else _run_first_order(run)
    run.bar.close()
    stack, tensors = run.stack, run.tensors
    obj, data, grads = stack.value_and_grad(tensors)
    run.check_finite(obj, done)
    gn = run.stationarity(grads)
    if not run.trajectory or run.trajectory[-1]["step"] != done:
        run.record(done, obj, gn)
    params = {name: t.detach() for name, t in zip(stack.names, tensors)}
    result = UFMResult(problems, options.optimizer, options.lr, done, obj.cpu().numpy(), data.cpu().numpy(),
                       gn.cpu().numpy(), (gn <= options.tol).cpu().numpy(), params, run.trajectory, stack)
    if certify:
        result.certificates = certify_all(problems, result.objective)
    return result


def _torch_optimizer(run: _Run):
    """``torch.optim`` for gd (SGD) and adam; None for the RK4 flow."""
    kind, lr = run.options.optimizer, run.options.lr
    if kind == "gd":
        return torch.optim.SGD(run.tensors, lr=lr)
    if kind == "adam":
        return torch.optim.Adam(run.tensors, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    return None


def _run_first_order(run: _Run) -> int:
    stack, tensors, opts = run.stack, run.tensors, run.options
    optim = _torch_optimizer(run)
    for step in range(opts.steps + 1):
        obj, _, grads = stack.value_and_grad(tensors)
        if step % opts.check_every == 0 or step in run.log_at or step == opts.steps:
            run.check_finite(obj, step)
            gn = run.stationarity(grads)
            if step in run.log_at:
                run.record(step, obj, gn)
            if bool((gn <= opts.tol).all()) or step == opts.steps:
                return step
        if optim is None:
            _rk4_step(stack, tensors, grads, opts.lr)
        else:
            for t, g in zip(tensors, grads):
                t.grad = g
            optim.step()
            stack.project(tensors)
        run.bar.update(1)
    return opts.steps


def _rk4_step(stack: Stack, tensors, k1, dt: float) -> None:
    """θ ← θ + dt/6 (k1 + 2k2 + 2k3 + k4) for dθ/dt = −∇f (classical RK4); k's are gradients here."""
    shifted = lambda ks, h: [t - h * k for t, k in zip(tensors, ks)]  # noqa: E731
    k2 = stack.value_and_grad(shifted(k1, dt / 2))[2]
    k3 = stack.value_and_grad(shifted(k2, dt / 2))[2]
    k4 = stack.value_and_grad(shifted(k3, dt))[2]
    with torch.no_grad():
        for t, a, b, c, d in zip(tensors, k1, k2, k3, k4):
            t -= dt / 6 * (a + 2 * b + 2 * c + d)


def _run_lbfgs(run: _Run) -> int:
    stack, tensors, opts = run.stack, run.tensors, run.options
    for t in tensors:
        t.requires_grad_(True)
    optim = torch.optim.LBFGS(tensors, lr=opts.lr, max_iter=opts.check_every, tolerance_grad=0.0,
                              tolerance_change=0.0, history_size=opts.history_size, line_search_fn="strong_wolfe")

    def closure():
        optim.zero_grad()
        obj, _ = stack.objective(dict(zip(stack.names, tensors)))
        total = obj.sum()
        total.backward()
        return total

    done, marks = 0, sorted(run.log_at)
    while True:
        obj, _, grads = stack.value_and_grad(tensors)
        run.check_finite(obj, done)
        gn = stack.grad_norm(grads)
        if done in run.log_at:
            run.record(done, obj, gn)
        if bool((gn <= opts.tol).all()) or done >= opts.steps:
            break
        target = min([m for m in marks if m > done] + [done + opts.check_every, opts.steps])
        optim.param_groups[0]["max_iter"] = target - done
        optim.param_groups[0]["max_eval"] = 2 * (target - done) + 5
        optim.step(closure)
        now = optim.state[tensors[0]].get("n_iter", 0)
        if now == done:  # no progress possible (the line search found no decrease): stop here
            break
        run.bar.update(now - done)
        done = now
    for t in tensors:
        t.requires_grad_(False)
    return done

"""Batched solvers for stacks of UFM instances: gradient descent, Adam, L-BFGS and gradient flow.

B instances of the same shape (``UFMProblem.batch_key``) are one stacked problem: H is (B, N_max, d), W is
(B, K, d), b is (B, K). Instances with different class counts are padded to N_max rows with zero sample
weight and no penalty, so padding never touches the objective. The summed objective Σ_b f_b has gradient
(∇f_1, ..., ∇f_B) because the instances share no variable, so one autograd pass serves all of them.

* ``gd``: θ ← θ − lr ∇f;  ``adam``: Kingma & Ba 2015, Alg. 1 (β = 0.9, 0.999, ε = 1e-8), elementwise, so
  every instance follows its own Adam trajectory;  ``flow``: the gradient flow dθ/dt = −∇f integrated by
  classical Runge–Kutta 4 with dt = lr (Mixon et al. 2020 study this flow);  ``lbfgs``: torch's L-BFGS with
  strong-Wolfe line search on the summed objective (the same minimisers, coupled step sizes).
* Convergence: per-instance gradient norm ‖∇f_b‖ ≤ ``tol`` (all parameters together), checked every
  ``check_every`` steps; a non-finite objective stops the run with ``UFMDivergenceError`` naming the step.
* Trajectory: objective, gradient norm and (``record_metrics``) the ``ncollapse.measure_features`` scalars of
  every instance at ~``log_points`` log-spaced steps, computed with the learned W, b.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from numbers import Integral, Real

import numpy as np
import torch
from tqdm.auto import tqdm

from ..geometry import center_angle_cos
from ..metrics import measure_features
from ..validation import check_scalar
from .problem import UFMProblem

__all__ = ["solve", "UFMResult", "UFMDivergenceError", "group_problems", "OPTIMIZERS", "DEFAULT_LR"]

OPTIMIZERS = ("gd", "adam", "lbfgs", "flow")
DEFAULT_LR = {"gd": 0.5, "adam": 1e-2, "lbfgs": 1.0, "flow": 0.1}
_BN_EPS = 1e-12


class UFMDivergenceError(ValueError):
    """The objective became NaN/Inf (too large a step)."""


def group_problems(problems) -> list[list[int]]:
    """Indices of ``problems`` grouped by ``batch_key`` (each group is one stacked solve), in first-seen order."""
    groups: dict = {}
    for i, p in enumerate(problems):
        groups.setdefault(p.batch_key(), []).append(i)
    return list(groups.values())


class _Stack:
    """The stacked objective of B compatible instances (see the module docstring)."""

    def __init__(self, problems: list[UFMProblem], device, dtype):
        p0 = problems[0]
        for i, p in enumerate(problems[1:], start=1):
            if p.batch_key() != p0.batch_key():
                diff = next(f for f in ("loss", "num_classes", "dim", "bias", "normalize", "temperature",
                                        "extra_layers", "learn_classifier", "centers_per_class", "theta",
                                        "lambda_norm") if getattr(p, f) != getattr(p0, f))
                raise ValueError(f"problems[{i}] differs from problems[0] in {diff} ({getattr(p, diff)!r} vs "
                                 f"{getattr(p0, diff)!r}); solve them separately or with ufm.sweep")
        self.problems, self.p0 = problems, p0
        self.device, self.dtype = torch.device(device or "cpu"), dtype
        opts = dict(device=self.device, dtype=dtype)
        self.B, self.K, self.d = len(problems), p0.num_classes, p0.dim
        self.n = torch.tensor([p.num_samples for p in problems])
        self.N = int(self.n.max())
        self.valid = (torch.arange(self.N)[None, :] < self.n[:, None]).to(self.device)
        labels = torch.zeros(self.B, self.N, dtype=torch.int64)
        for b, p in enumerate(problems):
            labels[b, : p.num_samples] = p.labels()
        self.labels = labels.to(self.device)
        col = lambda name: torch.tensor([getattr(p, name) for p in problems], **opts)  # noqa: E731
        self.lam_w, self.lam_h, self.lam_b = col("lambda_w"), col("lambda_h"), col("lambda_b")
        fixed = p0.fixed_classifier != "none"
        self.fixed_w = torch.stack([p.fixed_weights() for p in problems]).to(**opts) if fixed else None
        norm = self.n.to(**opts)
        if p0.loss.startswith("ncmc"):
            frames = [p.frame() for p in problems]
            self.centers = torch.stack([f.centers for f in frames]).to(**opts)  # (B, F, d)
            owner = frames[0].owner.to(self.device)
            self.own = (owner[None, :] == torch.arange(self.K, device=self.device)[:, None]).to(dtype)  # (K, F)
            self.cos_alpha = center_angle_cos(p0.centers_per_class, p0.theta).to(**opts)
            if p0.loss == "ncmc_p":  # Loss P divides by S = Σ_k f_k n_k (Yan et al. 2024, eq. 19)
                f = torch.tensor(p0.centers_per_class, **opts)
                norm = torch.stack([(torch.tensor(p.counts, **opts) * f).sum() for p in problems])
        self.weight = self.valid.to(dtype) / norm.to(**opts)[:, None]
        self.names = ["H"] + [f"layer{i}" for i, kind in enumerate(p0.extra_layers) if kind == "linear"]
        self.names += ["W"] if p0.learn_classifier else []
        self.names += ["b"] if p0.bias != "none" else []

    def init_params(self) -> list[torch.Tensor]:
        """Gaussian entries N(0, init_scale²/d) drawn per instance from ``torch.Generator(seed)`` on the CPU."""
        out = {name: [] for name in self.names}
        for p in self.problems:
            g = torch.Generator().manual_seed(p.seed)
            scale = p.init_scale / math.sqrt(self.d)
            h = torch.full((self.N, self.d), scale, dtype=torch.float64)  # padding rows: non-zero, never used
            h[: p.num_samples] = torch.randn(p.num_samples, self.d, generator=g, dtype=torch.float64) * scale
            out["H"].append(h)
            for name in self.names[1:]:
                if name.startswith("layer"):
                    out[name].append(torch.randn(self.d, self.d, generator=g, dtype=torch.float64) * scale)
            if "W" in out:
                out["W"].append(torch.randn(self.K, self.d, generator=g, dtype=torch.float64) * scale)
            if "b" in out:
                out["b"].append(torch.zeros(self.K, dtype=torch.float64))
        return [torch.stack(out[name]).to(self.device, self.dtype) for name in self.names]

    def layer_outputs(self, params: dict) -> list[torch.Tensor]:
        """[H, output of each extra layer] (before any normalisation)."""
        x, outs, linear = params["H"], [params["H"]], 0
        for kind in self.p0.extra_layers:
            if kind == "linear":
                x = x @ params[f"layer{linear}"].transpose(1, 2)
                linear += 1
            else:
                x = torch.relu(x)
            outs.append(x)
        return outs

    def features(self, params: dict) -> torch.Tensor:
        """What the classifier (or the contrastive loss) sees: last layer output after normalisation."""
        x = self.layer_outputs(params)[-1]
        if self.p0.normalize in ("features", "both"):
            return x / x.norm(dim=-1, keepdim=True)
        if self.p0.normalize == "batchnorm":  # per-dimension standardisation over the instance's N samples
            mask = self.valid[..., None].to(x.dtype)
            count = self.n.to(x)[:, None, None]
            mean = (x * mask).sum(1, keepdim=True) / count
            var = ((x - mean).square() * mask).sum(1, keepdim=True) / count
            return (x - mean) / torch.sqrt(var + _BN_EPS)
        return x

    def classifier(self, params: dict) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Effective (W/τ, b): logits = x W_effᵀ + b; W is None for SupCon."""
        if self.p0.loss == "supcon":
            return None, None
        w = params["W"] if self.p0.learn_classifier else self.fixed_w
        if self.p0.weights_normalized:
            w = w / w.norm(dim=-1, keepdim=True)
        return w / self.p0.temperature, params.get("b")

    def sample_loss(self, params: dict) -> torch.Tensor:
        """ℓ_i per sample, (B, N_max); padding rows are finite and masked out by the caller."""
        loss, x, y = self.p0.loss, self.features(params), self.labels
        if loss == "supcon":
            sim = x @ x.transpose(1, 2) / self.p0.temperature
            eye = torch.eye(self.N, dtype=torch.bool, device=self.device)
            cand = self.valid[:, None, :] & ~eye
            log_den = torch.logsumexp(sim.masked_fill(~cand, float("-inf")), dim=-1, keepdim=True)
            pos = (y[:, :, None] == y[:, None, :]) & cand
            return -((sim - log_den) * pos).sum(-1) / pos.sum(-1).clamp(min=1)
        if loss.startswith("ncmc"):
            target = self.own[y]  # (B, N, F): f_k-hot
            if loss == "ncmc_p":
                return 0.5 * (x @ self.centers.transpose(1, 2) - target).square().sum(-1)
            norm = x.norm(dim=-1)
            cos = (x / norm[..., None]) @ self.centers.transpose(1, 2)
            return (self.cos_alpha[y] * ((cos - 1.0).square() * target).sum(-1)
                    + self.p0.lambda_norm * (norm - 1.0).square())
        w, b = self.classifier(params)
        z = x @ w.transpose(1, 2)
        if b is not None:
            z = z + b[:, None, :]
        if loss == "ce":
            return torch.logsumexp(z, dim=-1) - z.gather(-1, y[..., None])[..., 0]
        onehot = torch.nn.functional.one_hot(y, self.K).to(z.dtype)
        return 0.5 * (z - onehot).square().sum(-1)

    def objective(self, params: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(objective, data term), each (B,)."""
        ell = torch.where(self.valid, self.sample_loss(params), torch.zeros((), dtype=self.dtype, device=self.device))
        data = (self.weight * ell).sum(1)
        obj = data + 0.5 * self.lam_h * (params["H"].square().sum(-1) * self.valid).sum(1)
        for name in self.names:
            if name == "W" or name.startswith("layer"):
                obj = obj + 0.5 * self.lam_w * params[name].square().sum((1, 2))
        if "b" in params:
            obj = obj + 0.5 * self.lam_b * params["b"].square().sum(1)
        return obj, data

    def value_and_grad(self, tensors: list[torch.Tensor]):
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(True) for t in tensors]
            obj, data = self.objective(dict(zip(self.names, leaves)))
            grads = torch.autograd.grad(obj.sum(), leaves)
        return obj.detach(), data.detach(), grads

    def grad_norm(self, grads) -> torch.Tensor:
        return torch.sqrt(sum(g.square().flatten(1).sum(1) for g in grads))

    def instance_metrics(self, params: dict, b: int, scalars_only: bool) -> dict:
        x = self.features(params)[b, : int(self.n[b])].detach().cpu()
        w, bias = self.classifier(params)
        if self.p0.loss.startswith("ncmc"):
            w = self.fixed_w
        w = None if w is None else w[b].detach().cpu()
        bias = None if bias is None else bias[b].detach().cpu()
        report = measure_features(x, self.labels[b, : int(self.n[b])].cpu(), W=w, b=bias, num_classes=self.K)
        if scalars_only:
            return {k: v for k, v in report.items() if isinstance(v, (float, int)) and not isinstance(v, bool)}
        return report


@dataclass
class UFMResult:
    """Outcome of a stacked solve; arrays are indexed by instance."""

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
    _stack: _Stack | None = field(default=None, repr=False)

    def features(self, i: int, layer: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, labels) of instance i: what the classifier sees, or extra-layer output ``layer`` (0 = H)."""
        s = self._stack
        x = s.features(self.params) if layer is None else s.layer_outputs(self.params)[layer]
        n = int(s.n[i])
        return x[i, :n].detach(), s.labels[i, :n]

    def classifier(self, i: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Effective (W/τ, b) of instance i; the fixed classifier w_k for NCMC; (None, None) for SupCon."""
        s = self._stack
        w, b = s.classifier(self.params)
        if s.p0.loss.startswith("ncmc"):
            w = s.fixed_w
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


def solve(problems, optimizer: str = "lbfgs", steps: int = 1000, lr: float | None = None, tol: float = 1e-8,
          log_points: int = 20, record_metrics: bool = True, check_every: int = 10, history_size: int = 20,
          device=None, dtype: torch.dtype = torch.float64, progress: bool = False) -> UFMResult:
    """Minimise a stack of UFM objectives (see the module docstring); returns a ``UFMResult``.

    ``problems`` is one ``UFMProblem`` or a list of compatible ones. ``steps`` counts updates (L-BFGS
    iterations, RK4 steps). ``lr`` defaults to ``DEFAULT_LR[optimizer]`` (``flow``: the RK4 step dt).
    """
    problems = [problems] if isinstance(problems, UFMProblem) else list(problems)
    if not problems or not all(isinstance(p, UFMProblem) for p in problems):
        raise TypeError("problems must be a UFMProblem or a non-empty list of UFMProblem")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer == {optimizer!r}, must be one of {', '.join(OPTIMIZERS)}")
    check_scalar(steps, "steps", Integral, low=0)
    lr = DEFAULT_LR[optimizer] if lr is None else lr
    check_scalar(lr, "lr", Real, low=0.0, low_open=True)
    check_scalar(tol, "tol", Real, low=0.0)
    check_scalar(check_every, "check_every", Integral, low=1)
    stack = _Stack(problems, device, dtype)
    tensors = stack.init_params()
    log_at = _log_steps(steps, log_points)
    trajectory: list[dict] = []

    def record(step, obj, gn):
        entry = {"step": step, "objective": obj.tolist(), "grad_norm": gn.tolist()}
        if record_metrics:
            params = dict(zip(stack.names, tensors))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                entry["metrics"] = [stack.instance_metrics(params, b, True) for b in range(stack.B)]
        trajectory.append(entry)

    def check_finite(obj, step):
        bad = ~torch.isfinite(obj)
        if bool(bad.any()):
            i = int(torch.nonzero(bad)[0])
            raise UFMDivergenceError(
                f"instance {i} diverged at step {step} (objective {float(obj[i])}); use a smaller lr than "
                f"{lr:g} (e.g. --lr {lr / 10:g})" + (" or another optimizer" if optimizer == "lbfgs" else ""))

    bar = tqdm(total=steps, disable=not progress, desc=f"ufm {optimizer}", leave=False)
    if optimizer == "lbfgs":
        done = _run_lbfgs(stack, tensors, steps, lr, tol, check_every, history_size, log_at, record, check_finite, bar)
    else:
        done = _run_first_order(stack, tensors, optimizer, steps, lr, tol, check_every, log_at, record,
                                check_finite, bar)
    bar.close()
    obj, data, grads = stack.value_and_grad(tensors)
    check_finite(obj, done)
    gn = stack.grad_norm(grads)
    if not trajectory or trajectory[-1]["step"] != done:
        record(done, obj, gn)
    params = {name: t.detach() for name, t in zip(stack.names, tensors)}
    return UFMResult(problems, optimizer, lr, done, obj.cpu().numpy(), data.cpu().numpy(), gn.cpu().numpy(),
                     (gn <= tol).cpu().numpy(), params, trajectory, stack)


def _run_first_order(stack, tensors, optimizer, steps, lr, tol, check_every, log_at, record, check_finite, bar):
    moments = [(torch.zeros_like(t), torch.zeros_like(t)) for t in tensors] if optimizer == "adam" else None
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for step in range(steps + 1):
        obj, _, grads = stack.value_and_grad(tensors)
        if step % check_every == 0 or step in log_at or step == steps:
            check_finite(obj, step)
            gn = stack.grad_norm(grads)
            if step in log_at:
                record(step, obj, gn)
            if bool((gn <= tol).all()) or step == steps:
                return step
        with torch.no_grad():
            if optimizer == "gd":
                for t, g in zip(tensors, grads):
                    t.add_(g, alpha=-lr)
            elif optimizer == "adam":
                c1, c2 = 1 - beta1 ** (step + 1), 1 - beta2 ** (step + 1)
                for t, g, (m, v) in zip(tensors, grads, moments):
                    m.mul_(beta1).add_(g, alpha=1 - beta1)
                    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                    t -= lr * (m / c1) / (torch.sqrt(v / c2) + eps)
            else:
                _rk4_step(stack, tensors, grads, lr)
        bar.update(1)
    return steps


def _rk4_step(stack, tensors, k1, dt):
    """θ ← θ + dt/6 (k1 + 2k2 + 2k3 + k4) for dθ/dt = −∇f (classical RK4); k's are gradients here."""
    shifted = lambda ks, h: [t - h * k for t, k in zip(tensors, ks)]  # noqa: E731
    k2 = stack.value_and_grad(shifted(k1, dt / 2))[2]
    k3 = stack.value_and_grad(shifted(k2, dt / 2))[2]
    k4 = stack.value_and_grad(shifted(k3, dt))[2]
    for t, a, b, c, d in zip(tensors, k1, k2, k3, k4):
        t -= dt / 6 * (a + 2 * b + 2 * c + d)


def _run_lbfgs(stack, tensors, steps, lr, tol, check_every, history_size, log_at, record, check_finite, bar):
    for t in tensors:
        t.requires_grad_(True)
    opt = torch.optim.LBFGS(tensors, lr=lr, max_iter=check_every, tolerance_grad=0.0, tolerance_change=0.0,
                            history_size=history_size, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        obj, _ = stack.objective(dict(zip(stack.names, tensors)))
        total = obj.sum()
        total.backward()
        return total

    done, marks = 0, sorted(log_at)
    while True:
        obj, _, grads = stack.value_and_grad(tensors)
        check_finite(obj, done)
        gn = stack.grad_norm(grads)
        if done in log_at:
            record(done, obj, gn)
        if bool((gn <= tol).all()) or done >= steps:
            break
        target = min([m for m in marks if m > done] + [done + check_every, steps])
        opt.param_groups[0]["max_iter"] = target - done
        opt.param_groups[0]["max_eval"] = 2 * (target - done) + 5
        opt.step(closure)
        now = opt.state[tensors[0]].get("n_iter", 0)
        if now == done:  # no progress possible (the line search found no decrease): stop here
            break
        bar.update(now - done)
        done = now
    for t in tensors:
        t.requires_grad_(False)
    return done

"""The stacked objective of B compatible UFM instances (one ``batch_key``), used by ``ufm.solve``.

H is (B, N_max, d), W is (B, K, d), b is (B, K). Instances with different class counts are padded to N_max rows
with zero sample weight and no penalty, so padding never touches the objective. The summed objective Σ_b f_b
has gradient (∇f_1, ..., ∇f_B) because the instances share no variable, so one autograd pass serves all of them.
The SupCon and NCMC cosine terms are ``losses.supcon_terms`` / ``losses.ncmc_cosine_terms``, the trainer's own.
The ball model (``constraint="ball"``) is kept feasible by ``project`` (Euclidean projection onto Fang et al.
2021's energy constraints); the learned NCMC frame scales the fixed unit frame per class by ``rho``.
"""

from __future__ import annotations

import math

import torch

from ..geometry import center_angle_cos
from ..losses import ncmc_cosine_terms, supcon_terms
from ..metrics import measure_features
from .problem import UFMProblem

__all__ = ["Stack", "group_problems", "BATCH_FIELDS"]

_BN_EPS = 1e-12
BATCH_FIELDS = ("loss", "num_classes", "dim", "bias", "normalize", "temperature", "extra_layers", "learn_classifier",
                "centers_per_class", "theta", "lambda_norm", "constraint", "ncmc_frame")


def group_problems(problems) -> list[list[int]]:
    """Indices of ``problems`` grouped by ``batch_key`` (each group is one stacked solve), in first-seen order."""
    groups: dict = {}
    for i, p in enumerate(problems):
        groups.setdefault(p.batch_key(), []).append(i)
    return list(groups.values())


class Stack:
    """The stacked objective of B compatible instances (module docstring)."""

    def __init__(self, problems: list[UFMProblem], device, dtype):
        p0 = problems[0]
        for i, p in enumerate(problems[1:], start=1):
            if p.batch_key() != p0.batch_key():
                diff = next(f for f in BATCH_FIELDS if getattr(p, f) != getattr(p0, f))
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
        self.energy_w, self.energy_h = col("energy_w"), col("energy_h")
        self.class_counts = torch.tensor([p.counts for p in problems], **opts)  # (B, K)
        fixed = p0.fixed_classifier != "none"
        self.fixed_w = torch.stack([p.fixed_weights() for p in problems]).to(**opts) if fixed else None
        norm = self.n.to(**opts)
        if p0.loss.startswith("ncmc"):
            frames = [p.frame() for p in problems]
            self.centers = torch.stack([f.centers for f in frames]).to(**opts)  # (B, F, d)
            self.owner = frames[0].owner.to(self.device)
            self.own = (self.owner[None, :] == torch.arange(self.K, device=self.device)[:, None]).to(dtype)  # (K, F)
            self.cos_alpha = center_angle_cos(p0.centers_per_class, p0.theta).to(**opts)
            if p0.loss == "ncmc_p":  # Loss P divides by S = Σ_k f_k n_k (Yan et al. 2024, eq. 19)
                f = torch.tensor(p0.centers_per_class, **opts)
                norm = (self.class_counts * f).sum(1)
        self.weight = self.valid.to(dtype) / norm.to(**opts)[:, None]
        self.names = ["H"] + [f"layer{i}" for i, kind in enumerate(p0.extra_layers) if kind == "linear"]
        self.names += ["W"] if p0.learn_classifier else []
        self.names += ["b"] if p0.bias != "none" else []
        self.names += ["rho"] if p0.ncmc_frame == "learned" else []

    def init_params(self) -> list[torch.Tensor]:
        """Gaussian entries N(0, init_scale²/d) drawn per instance from ``torch.Generator(seed)`` on the CPU;
        a learned frame starts at unit norms, and the ball model starts projected onto its constraints."""
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
            if "rho" in out:
                out["rho"].append(torch.ones(self.K, dtype=torch.float64))
        tensors = [torch.stack(out[name]).to(self.device, self.dtype) for name in self.names]
        self.project(tensors)
        return tensors

    def project(self, tensors: list[torch.Tensor]) -> None:
        """In place: Euclidean projection of W onto (1/K)‖W‖² ≤ E_W and of H onto (1/K)Σ_k (1/n_k)Σ_{i∈k}‖h_i‖² ≤ E_H
        (Fang et al. 2021, eq. 3); a no-op unless ``constraint="ball"``."""
        if self.p0.constraint != "ball":
            return
        with torch.no_grad():
            params = dict(zip(self.names, tensors))
            w, h = params["W"], params["H"]
            w.mul_(torch.clamp(torch.sqrt(self.K * self.energy_w) / w.flatten(1).norm(dim=1), max=1.0)[:, None, None])
            h.mul_(self._feature_shrink(h)[:, :, None])

    def _feature_shrink(self, h: torch.Tensor) -> torch.Tensor:
        """Factors 1/(1 + μ c_{y_i}) of the projection onto Σ_i c_i‖h_i‖² ≤ E_H, c_i = 1/(K n_{y_i}); μ ≥ 0 is the root
        of the convex decreasing φ(μ) = Σ_k c_k s_k/(1 + μc_k)² − E_H (s_k = Σ_{i∈k}‖h_i‖²), found by Newton from
        μ = 0, which increases monotonically to the root."""
        c = 1.0 / (self.K * self.class_counts)
        s = torch.zeros_like(c).scatter_add_(1, self.labels, h.square().sum(-1) * self.valid)
        mu = torch.zeros(self.B, 1, dtype=h.dtype, device=h.device)
        for _ in range(100):
            q = 1.0 + mu * c
            phi = (c * s / q.square()).sum(1, keepdim=True) - self.energy_h[:, None]
            step = torch.where(phi > 0, phi / (2 * (c.square() * s / q.pow(3)).sum(1, keepdim=True)), 0.0)
            mu = mu + step
            if bool((step <= 1e-15 * (1 + mu)).all()):
                break
        return 1.0 / (1.0 + mu * c).gather(1, self.labels)

    def stationarity(self, tensors, grads, step: float) -> torch.Tensor:
        """Per instance: ‖∇f‖, or for the ball model the projected-gradient mapping ‖θ − P(θ − step·∇f)‖/step."""
        if self.p0.constraint != "ball":
            return self.grad_norm(grads)
        moved = [t - step * g for t, g in zip(tensors, grads)]
        self.project(moved)
        return self.grad_norm([(t - m) / step for t, m in zip(tensors, moved)])

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

    def frame_centers(self, params: dict) -> torch.Tensor:
        """The NCMC centers (B, F, d): the fixed unit frame, scaled by ρ_k per class when it is learned."""
        if "rho" in params:
            return params["rho"][:, self.owner, None] * self.centers
        return self.centers

    def classifier(self, params: dict) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Effective (W/τ, b): logits = x W_effᵀ + b; W is None for SupCon; the frame's w_k (× ρ_k) for NCMC."""
        if self.p0.loss == "supcon":
            return None, None
        if self.p0.loss.startswith("ncmc"):
            return (self.fixed_w * params["rho"][..., None] if "rho" in params else self.fixed_w), None
        w = params["W"] if self.p0.learn_classifier else self.fixed_w
        if self.p0.weights_normalized:
            w = w / w.norm(dim=-1, keepdim=True)
        return w / self.p0.temperature, params.get("b")

    def sample_loss(self, params: dict) -> torch.Tensor:
        """ℓ_i per sample, (B, N_max); padding rows are finite and masked out by the caller."""
        loss, x, y = self.p0.loss, self.features(params), self.labels
        if loss == "supcon":
            return supcon_terms(x, y, self.p0.temperature, valid=self.valid)[0]
        if loss.startswith("ncmc"):
            target = self.own[y]  # (B, N, F): f_k-hot
            centers = self.frame_centers(params)
            if loss == "ncmc_p":
                return 0.5 * (x @ centers.transpose(1, 2) - target).square().sum(-1)
            return ncmc_cosine_terms(x, centers, target, self.cos_alpha[y], self.p0.lambda_norm)
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
        if "rho" in params:  # (λ_W0/2)‖W_0‖² with ‖w_k‖ = ρ_k
            obj = obj + 0.5 * self.lam_w * params["rho"].square().sum(1)
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
        w = None if w is None else w[b].detach().cpu()
        bias = None if bias is None else bias[b].detach().cpu()
        report = measure_features(x, self.labels[b, : int(self.n[b])].cpu(), W=w, b=bias, num_classes=self.K)
        if scalars_only:
            return {k: v for k, v in report.items() if isinstance(v, (float, int)) and not isinstance(v, bool)}
        return report

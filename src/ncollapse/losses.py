"""Training losses for balanced and long-tailed classification, NC-inspired heads and NCMC.

Every loss is an ``nn.Module`` called as ``loss_fn(features, logits, targets, epoch=0)`` and returns the batch
mean (a scalar). ``features`` is the tensor the head classifies (``model(x)[0]``), ``logits`` the head's output,
``targets`` int64 (B,). Losses compute in float32 with autocast off, follow the device of their inputs, and are
vectorised over the batch (and over all centers for NCMC). Mixup is the caller's: ``mixup_loss`` gives
lam·L(y_a) + (1 − lam)·L(y_b) (Zhang et al. 2018; SETF and NCMC code bases).

``build_loss(name, class_counts, **options)`` with ``name`` in ``LOSSES``:

=================== ==================================================================================
``ce``              softmax cross-entropy (``label_smoothing`` 0)
``mse``             one-hot square loss, Hui & Belkin 2021 rescaling (``k`` 1, ``M`` 1)
``ldam``            LDAM (Cao et al. 2019): ``max_m`` 0.5, ``s`` 30; DRW class-balanced weights (Cui et al.
                    2019, ``beta`` 0.9999) from ``drw_epoch`` (160; None = never). Use with head="normed".
``balanced_softmax`` Ren et al. 2020: CE on z + log n
``logit_adjusted``  Menon et al. 2021: CE on z + ``tau`` log π (``tau`` 1)
``dot_regression``  SETF (Yang et al. 2022) with per-batch E_W rescaling (``rescale`` True); ``frame``=head.weight
``supcon``          supervised contrastive L^sup_out (Khosla et al. 2020, eq. 2), ``temperature`` 0.1
``ncmc_p``          NCMC Loss P (Yan et al. 2024, eq. 18-19), ``feature_penalty`` = eq. 19's λ_H, 5e-4;
                    ``frame``=head.frame
``ncmc_cosine``     NCMC cosine loss (eq. 20; App. F weighted form, ``weighted`` True), ``lam`` 6e-4;
                    AL or CAL according to the frame's centers per class; ``frame``=head.frame
=================== ==================================================================================
"""

from __future__ import annotations

import inspect
import math
from numbers import Integral, Real

import torch
import torch.nn.functional as F
from torch import nn

from .geometry import MultiCenterFrame, center_angle_cos
from .validation import check_counts, check_scalar

__all__ = ["build_loss", "LOSSES", "mixup_loss", "posthoc_logit_adjust", "class_balanced_weights", "ldam_margins",
           "CrossEntropy", "SquareLoss", "LDAMLoss", "LogitAdjustedLoss", "DotRegressionLoss", "SupConLoss",
           "NCMCLossP", "NCMCCosineLoss", "supcon_terms", "ncmc_cosine_terms"]


def class_balanced_weights(class_counts, beta: float = 0.9999) -> torch.Tensor:
    """w_k = (1 − β)/(1 − β^{n_k}), inverse effective numbers (Cui et al. 2019), summing to K as in LDAM-DRW."""
    n = torch.tensor(check_counts(class_counts, "class_counts"), dtype=torch.float64)
    check_scalar(beta, "beta", Real, low=0, high=1, high_open=True)
    w = (1.0 - beta) / (1.0 - beta ** n)
    return (w * len(n) / w.sum()).float()


def ldam_margins(class_counts, max_m: float = 0.5) -> torch.Tensor:
    """Δ_k = C / n_k^{1/4} with C such that max_k Δ_k = max_m (Cao et al. 2019, LDAM margins)."""
    n = torch.tensor(check_counts(class_counts, "class_counts"), dtype=torch.float64)
    check_scalar(max_m, "max_m", Real, low=0)
    m = n ** -0.25
    return (m * (max_m / m.max())).float()


def _log_prior(class_counts) -> torch.Tensor:
    n = torch.tensor(check_counts(class_counts, "class_counts"), dtype=torch.float64)
    return torch.log(n / n.sum()).float()


def posthoc_logit_adjust(logits: torch.Tensor, class_counts, tau: float = 1.0) -> torch.Tensor:
    """z_k − τ log π_k, π the training prior from ``class_counts`` (Menon et al. 2021, post-hoc adjustment)."""
    check_scalar(tau, "tau", Real)
    log_prior = _log_prior(class_counts).to(logits.device, logits.dtype)
    if logits.shape[-1] != log_prior.shape[0]:
        raise ValueError(f"logits have {logits.shape[-1]} columns; class_counts has {log_prior.shape[0]} classes")
    return logits - tau * log_prior


def mixup_loss(loss_fn: nn.Module, features, logits, targets_a, targets_b, lam: float, epoch: int = 0):
    """lam·L(y_a) + (1 − lam)·L(y_b) on the features/logits of mixed inputs (Zhang et al. 2018, mixup)."""
    return lam * loss_fn(features, logits, targets_a, epoch=epoch) + (1.0 - lam) * loss_fn(
        features, logits, targets_b, epoch=epoch)


class _Loss(nn.Module):
    """Checks shapes (no device sync), moves buffers to the input device, computes without autocast in float32,
    or in float64 once the module holds float64 buffers (``loss.double()``)."""

    def __init__(self, class_counts=None):
        super().__init__()
        self.num_classes = None if class_counts is None else len(check_counts(class_counts, "class_counts"))

    def forward(self, features: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, epoch: int = 0):
        if targets.dim() != 1 or targets.dtype != torch.int64:
            raise ValueError(f"targets must be int64 of shape (B,); got {targets.dtype} {tuple(targets.shape)}")
        if features.shape[0] != targets.shape[0] or logits.shape[0] != targets.shape[0]:
            raise ValueError(f"batch sizes differ: features {features.shape[0]}, logits {logits.shape[0]}, "
                             f"targets {targets.shape[0]}")
        if self.num_classes is not None and logits.dim() == 2 and logits.shape[1] != self.num_classes:
            raise ValueError(f"logits have {logits.shape[1]} columns; the loss has {self.num_classes} classes")
        device = features.device
        buffers = list(self.buffers())
        if buffers and buffers[0].device != device:
            self.to(device)
        dtype = torch.float64 if any(b.dtype == torch.float64 for b in buffers) else torch.float32
        with torch.autocast(device_type=device.type, enabled=False):
            return self._loss(features.to(dtype), logits.to(dtype), targets, epoch)

    def _loss(self, features, logits, targets, epoch):
        raise NotImplementedError


class CrossEntropy(_Loss):
    """−log softmax(z)_y, batch mean (optional label smoothing, Szegedy et al. 2016)."""

    def __init__(self, class_counts=None, label_smoothing: float = 0.0):
        super().__init__(class_counts)
        self.label_smoothing = check_scalar(label_smoothing, "label_smoothing", Real, low=0, high=1)

    def _loss(self, features, logits, targets, epoch):
        return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)


class SquareLoss(_Loss):
    """(1/K)[k (z_y − M)² + Σ_{j≠y} z_j²], batch mean (Hui & Belkin 2021, rescaled square loss; k=M=1: MSE)."""

    def __init__(self, class_counts=None, k: float = 1.0, M: float = 1.0):
        super().__init__(class_counts)
        self.k = check_scalar(k, "k", Real, low=0, low_open=True)
        self.M = check_scalar(M, "M", Real, low=0, low_open=True)

    def _loss(self, features, logits, targets, epoch):
        true = logits.gather(1, targets[:, None])[:, 0]
        rest = logits.square().sum(1) - true.square()
        return ((self.k * (true - self.M).square() + rest) / logits.shape[1]).mean()


class LDAMLoss(_Loss):
    """CE(s·(z − Δ_y e_y)) with Δ = ``ldam_margins`` (Cao et al. 2019, LDAM loss), weighted by
    ``class_balanced_weights`` from ``drw_epoch`` on (deferred re-weighting, Cao et al. 2019); weighted batch mean."""

    def __init__(self, class_counts, max_m: float = 0.5, s: float = 30.0, drw_epoch: int | None = 160,
                 beta: float = 0.9999):
        super().__init__(class_counts)
        self.s = check_scalar(s, "s", Real, low=0, low_open=True)
        if drw_epoch is not None:
            check_scalar(drw_epoch, "drw_epoch", Integral, low=0)
        self.drw_epoch = drw_epoch
        self.register_buffer("margins", ldam_margins(class_counts, max_m))
        self.register_buffer("drw_weights", class_balanced_weights(class_counts, beta))

    def _loss(self, features, logits, targets, epoch):
        shifted = logits - F.one_hot(targets, logits.shape[1]) * self.margins[targets][:, None]
        weight = self.drw_weights if self.drw_epoch is not None and epoch >= self.drw_epoch else None
        return F.cross_entropy(self.s * shifted, targets, weight=weight)


class LogitAdjustedLoss(_Loss):
    """CE(z + τ log π) (Menon et al. 2021, logit-adjusted loss); τ = 1 is balanced softmax (Ren et al. 2020)."""

    def __init__(self, class_counts, tau: float = 1.0):
        super().__init__(class_counts)
        check_scalar(tau, "tau", Real)
        self.register_buffer("offset", tau * _log_prior(class_counts))

    def _loss(self, features, logits, targets, epoch):
        return F.cross_entropy(logits + self.offset, targets)


def _frame_tensor(frame, num_classes, name: str) -> torch.Tensor:
    if not isinstance(frame, torch.Tensor) or frame.dim() != 2:
        raise ValueError(f"{name} needs frame=model.head.weight, a (K, d) tensor; got {type(frame).__name__}")
    if num_classes is not None and frame.shape[0] != num_classes:
        raise ValueError(f"frame has {frame.shape[0]} rows; class_counts has {num_classes} classes")
    return frame.detach().float().clone()


class DotRegressionLoss(_Loss):
    """SETF dot-regression loss (Yang et al. 2022, and its code): ½ mean_i (⟨ĥ_i, m_{y_i}⟩ − ‖m_{y_i}‖)²,
    ĥ = h/‖h‖ (E_H = 1), m_y = E_y M_y with the per-batch E_y = sqrt((B/U)/c_y), c_y the count of class y in
    the batch and U the number of classes present (``rescale=False``: E_y = 1)."""

    def __init__(self, class_counts, frame=None, rescale: bool = True):
        super().__init__(class_counts)
        self.register_buffer("frame", _frame_tensor(frame, self.num_classes, "dot_regression"))
        self.rescale = bool(rescale)

    def _loss(self, features, logits, targets, epoch):
        if features.shape[1] != self.frame.shape[1]:
            raise ValueError(f"features have width {features.shape[1]}; the frame has width {self.frame.shape[1]}")
        unit = F.normalize(features, dim=1)
        m = self.frame[targets]
        if self.rescale:
            counts = torch.bincount(targets, minlength=self.frame.shape[0]).to(unit.dtype)
            present = (counts > 0).sum().to(unit.dtype)
            m = m * torch.sqrt(targets.shape[0] / present / counts[targets])[:, None]
        return 0.5 * ((unit * m).sum(1) - m.norm(dim=1)).square().mean()


def supcon_terms(z: torch.Tensor, targets: torch.Tensor, temperature: float, valid: torch.Tensor | None = None):
    """(per-anchor L^sup_out, has-a-positive mask) for unit rows z (..., n, d) and targets (..., n) (Khosla et al.
    2020, eq. 2); leading dimensions are independent batches, ``valid`` (..., n) masks padding rows out of every
    denominator and positive set. Shared by ``SupConLoss`` and the UFM lab."""
    sim = z @ z.transpose(-1, -2) / temperature
    eye = torch.eye(z.shape[-2], dtype=torch.bool, device=z.device)
    candidate = ~eye if valid is None else valid[..., None, :] & ~eye
    log_prob = sim - torch.logsumexp(sim.masked_fill(~candidate, -math.inf), dim=-1, keepdim=True)
    positive = (targets[..., :, None] == targets[..., None, :]) & candidate
    num_pos = positive.sum(-1)
    return -(log_prob * positive).sum(-1) / num_pos.clamp(min=1), num_pos > 0


class SupConLoss(_Loss):
    """L^sup_out (Khosla et al. 2020, eq. 2) on z = h/‖h‖ for one view per sample:
    −(1/|P(i)|) Σ_{p∈P(i)} log[exp(z_i·z_p/T) / Σ_{a≠i} exp(z_i·z_a/T)], mean over anchors with a positive
    (zero, with gradient, if no anchor has one). Pass several views as extra rows with repeated targets."""

    def __init__(self, class_counts=None, temperature: float = 0.1):
        super().__init__(class_counts)
        self.temperature = check_scalar(temperature, "temperature", Real, low=0, low_open=True)

    def _loss(self, features, logits, targets, epoch):
        z = F.normalize(features, dim=1)
        per_anchor, has_pos = supcon_terms(z, targets, self.temperature)
        has_pos = has_pos.to(z.dtype)
        return (per_anchor * has_pos).sum() / has_pos.sum().clamp(min=1)


def _multicenter(frame, num_classes, name: str):
    if hasattr(frame, "frame") and isinstance(frame.frame, MultiCenterFrame):
        frame = frame.frame
    if not isinstance(frame, MultiCenterFrame):
        raise ValueError(f"{name} needs frame=model.head.frame (a MultiCenterFrame; build the model with "
                         f"head='multicenter'); got {type(frame).__name__}")
    if num_classes is not None and frame.num_classes != num_classes:
        raise ValueError(f"the frame has {frame.num_classes} classes; class_counts has {num_classes}")
    return frame


class _NCMCLoss(_Loss):
    """The fixed frame as float32 buffers; ``.double()`` re-derives them from the exact float64 values."""

    def __init__(self, class_counts, frame, name):
        super().__init__(class_counts)
        frame = _multicenter(frame, self.num_classes, name)
        self._exact = {}
        self._float_buffer("centers", frame.centers)
        self.register_buffer("owner", frame.owner.clone())
        self._float_buffer("fk", torch.tensor(frame.centers_per_class, dtype=torch.float64))
        self.theta = frame.theta

    def _float_buffer(self, name: str, exact: torch.Tensor) -> None:
        self._exact[name] = exact.detach().to("cpu", torch.float64).clone()
        self.register_buffer(name, self._exact[name].float())

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        for name, exact in self._exact.items():
            if getattr(self, name).dtype == torch.float64:
                setattr(self, name, exact.to(getattr(self, name).device))
        return self

    def _check_width(self, features):
        if features.shape[1] != self.centers.shape[1]:
            raise ValueError(f"features have width {features.shape[1]}; the frame has width {self.centers.shape[1]}")

    def _own(self, targets):
        return (self.owner[None, :] == targets[:, None]).to(self.centers.dtype)


class NCMCLossP(_NCMCLoss):
    """Loss P, fixed frame (Yan et al. 2024, eq. 18-19), as a batch estimate of eq. 19 itself:
    mean_i [ ‖W h_i − y_i‖²/(2 S̄) + (N λ_H/2)‖h_i‖² ] with y_i the f_k-hot target in R^F, N = Σ n_k and
    S̄ = S/N = Σ f_k n_k / N. On the whole training set this equals eq. 19's (1/(2S))‖WH − Y‖²_F + (λ_H/2)‖H‖²_F
    exactly, so ``feature_penalty`` is eq. 19's λ_H (the UFM's ``lambda_h``; 5e-4 as in the paper's Fig. 4)."""

    def __init__(self, class_counts, frame=None, feature_penalty: float = 5e-4):
        if class_counts is None:
            raise ValueError("ncmc_p needs class_counts (for S = Σ f_k n_k)")
        super().__init__(class_counts, frame, "ncmc_p")
        self.feature_penalty = check_scalar(feature_penalty, "feature_penalty", Real, low=0)
        n = torch.tensor(check_counts(class_counts, "class_counts"), dtype=torch.float64)
        self.num_samples = float(n.sum())
        self.mean_s = float((self._exact["fk"] * n).sum()) / self.num_samples

    def _loss(self, features, logits, targets, epoch):
        self._check_width(features)
        residual = (features @ self.centers.T - self._own(targets)).square().sum(1)
        penalty = 0.5 * self.feature_penalty * self.num_samples * features.square().sum(1)
        return (residual / (2 * self.mean_s) + penalty).mean()


def ncmc_cosine_terms(features: torch.Tensor, centers: torch.Tensor, own: torch.Tensor, beta: torch.Tensor,
                      lam: float) -> torch.Tensor:
    """Per-sample NCMC cosine loss β_k Σ_{j≤f_k} (⟨w_j^(k), h/‖h‖⟩ − 1)² + λ(‖h‖ − 1)² (Yan et al. 2024, eq. 20,
    App. F): features (..., n, d), centers (..., F, d), ``own`` (..., n, F) the f_k-hot target, ``beta`` (..., n)
    the weight of each sample's class. Shared by ``NCMCCosineLoss`` and the UFM lab."""
    norm = features.norm(dim=-1)
    cos = (features @ centers.transpose(-1, -2)) / norm.clamp(min=1e-12)[..., None]
    per = ((cos - 1.0).square() * own).sum(-1)
    return beta * per + lam * (norm - 1.0).square()


class NCMCCosineLoss(_NCMCLoss):
    """NCMC cosine loss (Yan et al. 2024, eq. 20 and App. F, objective 34):
    mean_i [ β_k Σ_{j≤f_k} (⟨w_j^(k), h_i/‖h_i‖⟩ − 1)² + λ(‖h_i‖ − 1)² ], k = y_i, with
    β_k = sqrt((cos²θ + f_k sin²θ)/f_k) (``weighted=True``, App. F) or 1 (eq. 20). AL / CAL are this loss on a
    frame with f_k = f for all k / class-aware f_k. The λ-term is batch-averaged (ncmc.md §9)."""

    def __init__(self, class_counts=None, frame=None, lam: float = 6e-4, weighted: bool = True):
        super().__init__(class_counts, frame, "ncmc_cosine")
        self.lam = check_scalar(lam, "lam", Real, low=0)
        fk = self._exact["fk"]
        self._float_buffer("beta", center_angle_cos(fk, self.theta) if weighted else torch.ones_like(fk))

    def _loss(self, features, logits, targets, epoch):
        self._check_width(features)
        return ncmc_cosine_terms(features, self.centers, self._own(targets), self.beta[targets], self.lam).mean()


LOSSES = {
    "ce": CrossEntropy,
    "mse": SquareLoss,
    "ldam": LDAMLoss,
    "balanced_softmax": lambda class_counts: LogitAdjustedLoss(class_counts, tau=1.0),
    "logit_adjusted": LogitAdjustedLoss,
    "dot_regression": DotRegressionLoss,
    "supcon": SupConLoss,
    "ncmc_p": NCMCLossP,
    "ncmc_cosine": NCMCCosineLoss,
}

_NEEDS_COUNTS = {"ldam", "balanced_softmax", "logit_adjusted", "ncmc_p"}


def build_loss(name: str, class_counts=None, **options) -> nn.Module:
    """Build the loss ``name`` (module docstring); an unknown option is a ``TypeError`` listing the known ones."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    if class_counts is None and name in _NEEDS_COUNTS:
        raise ValueError(f"loss {name!r} needs class_counts (one training-sample count per class)")
    factory = LOSSES[name]
    known = [p for p in inspect.signature(factory).parameters if p != "class_counts"]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(f"loss {name!r} got unknown option(s) {unknown}; known options: {known or 'none'}")
    return factory(class_counts, **options)

"""One instance of the unconstrained features model (UFM) and its validation.

Objective (Zhu et al. 2021, eq. 2, extended as in the issue)::

    (1/N) Σ_i ℓ(W x_i / τ + b, y_i) + (λ_W/2)‖W‖_F² + (λ_H/2)‖H‖_F² + (λ_b/2)‖b‖²

with ℓ_CE the softmax cross-entropy and ℓ_MSE(z, y) = ½‖z − e_y‖². The features H (N × d) are free
variables; x_i is h_i after the optional ``extra_layers`` (Tirer & Bruna 2022's extended UFM:
``linear`` multiplies by a learned d × d matrix that shares the penalty λ_W, ``relu`` applies max(0, ·))
and the optional feature normalisation. Other losses:

* ``supcon`` (Khosla et al. 2020; Graf et al. 2021): batch-all supervised contrastive loss on the unit
  sphere, sim = ⟨x_i, x_j⟩/τ, no classifier.
* ``ncmc_p`` (Yan et al. 2024, eq. 18-19, "Loss P"): (1/(2S)) Σ_i ‖C x_i − y_i‖² with the fixed multi-center
  frame C (F × d), f_k-hot targets and S = Σ_k f_k n_k — the paper's 1/(2S) replaces (1/N)·½.
* ``ncmc_cosine`` (Yan et al. 2024, eq. 20 with App. F's weight): (1/N) Σ_i [cos α*_k Σ_j (⟨c_j^(k), x̂_i⟩ − 1)²
  + λ_norm (‖x_i‖ − 1)²], cos α*_k = sqrt((cos²θ + f_k sin²θ)/f_k).

Penalties apply to the raw parameters. A penalty on a quantity the loss cannot see the scale of (features
under ``features``/``both``/``batchnorm`` normalisation or SupCon, weights under ``weights``/``both``
normalisation or a fixed classifier) has no minimiser, so it must be 0: left as ``None`` it defaults to 0
there and to 5e-3 elsewhere; an explicit non-zero value is an error. ``bias="free"`` is an unpenalised bias
(λ_b = 0), ``"decay"`` a penalised one, ``"none"`` no bias.

Two further models:

* ``constraint="ball"``: the layer-peeled model of Fang et al. 2021 (eq. 3): min (1/N) Σ_i ℓ(W h_i/τ, y_i)
  subject to (1/K) Σ_k ‖w_k‖² ≤ E_W and (1/K) Σ_k (1/n_k) Σ_{i∈k} ‖h_i‖² ≤ E_H (``energy_w``, ``energy_h``;
  the plain sample mean when balanced), solved by projected gradient steps (``gd``/``adam``); no penalties.
* ``ncmc_frame="learned"`` (``ncmc_p`` only): the multi-center frame (V, W_0) is learned in the constraint set C of
  Yan et al. 2024 (Def. 3.2, eq. 16) with the penalty (λ_W0/2)‖W_0‖_F², λ_W0 = ``lambda_w``. C is an
  orthonormal Q scaled per class by ρ_k = ‖w_k‖ = ‖v_j^(k)‖, and P is invariant under rotating Q and H
  together, so learning ρ with Q fixed reaches every value of P over C (Thm 3.3 / 3.4's model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from numbers import Integral, Real

import torch

from .. import geometry
from ..config_check import check_choice
from ..ufm_names import BIASES, CONSTRAINTS, FIXED, FRAMES, LAYERS, LOSSES, NORMALIZE
from ..validation import check_counts, check_scalar

__all__ = ["UFMProblem", "LOSSES", "BIASES", "NORMALIZE", "LAYERS", "FIXED", "CONSTRAINTS", "FRAMES",
           "DEFAULT_LAMBDA"]

DEFAULT_LAMBDA = 5e-3



@dataclass(frozen=True)
class UFMProblem:
    """A UFM instance (see the module docstring for the objective and the penalty rules).

    ``counts`` holds n_k per class (``UFMProblem.balanced(K, n, d)`` for K × n); ``init_scale`` is the
    expected row norm of the Gaussian initialisation of H, W and extra layers (entries N(0, init_scale²/d));
    ``seed`` fixes the initialisation and any fixed frame. ``centers_per_class`` and ``theta`` define the
    NCMC frame (needed by the ``ncmc_*`` losses); ``ncmc_frame="learned"`` learns its norms (module docstring).
    ``constraint="ball"`` replaces the penalties by the energy bounds ``energy_w``, ``energy_h``.
    """

    loss: str
    counts: tuple[int, ...]
    dim: int
    bias: str = "none"
    lambda_w: float | None = None
    lambda_h: float | None = None
    lambda_b: float | None = None
    normalize: str = "none"
    temperature: float = 1.0
    extra_layers: tuple[str, ...] = ()
    fixed_classifier: str = "none"
    centers_per_class: tuple[int, ...] | None = None
    theta: float = 0.2
    lambda_norm: float = 6e-4
    init_scale: float = 1.0
    seed: int = 0
    constraint: str = "penalty"
    energy_w: float = 1.0
    energy_h: float = 1.0
    ncmc_frame: str = "fixed"

    @classmethod
    def balanced(cls, num_classes: int, per_class: int, dim: int, **kwargs) -> UFMProblem:
        check_scalar(num_classes, "num_classes", Integral, low=2)
        check_scalar(per_class, "per_class", Integral, low=1)
        return cls(counts=(per_class,) * num_classes, dim=dim, **kwargs)

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)
        check_choice(self.loss, LOSSES, "loss")
        check_choice(self.bias, BIASES, "bias")
        check_choice(self.normalize, NORMALIZE, "normalize")
        check_choice(self.fixed_classifier, FIXED, "fixed_classifier")
        check_choice(self.constraint, CONSTRAINTS, "constraint")
        check_choice(self.ncmc_frame, FRAMES, "ncmc_frame")
        check_scalar(self.energy_w, "energy_w", Real, low=0.0, low_open=True)
        check_scalar(self.energy_h, "energy_h", Real, low=0.0, low_open=True)
        set_("counts", tuple(check_counts(self.counts, "counts")))
        if len(self.counts) < 2:
            raise ValueError(f"counts has {len(self.counts)} class; a UFM needs at least two classes")
        check_scalar(self.dim, "dim", Integral, low=1)
        layers = (self.extra_layers,) if isinstance(self.extra_layers, str) else self.extra_layers
        set_("extra_layers", tuple(check_choice(layer, LAYERS, "extra_layers entry") for layer in layers))
        check_scalar(self.temperature, "temperature", Real, low=0.0, low_open=True)
        check_scalar(self.init_scale, "init_scale", Real, low=0.0, low_open=True)
        check_scalar(self.lambda_norm, "lambda_norm", Real, low=0.0)
        check_scalar(self.seed, "seed", Integral, low=0)
        check_scalar(self.theta, "theta", Real, low=0.0, high=math.pi / 2)
        self._check_loss_options()
        self._resolve_lambdas()
        self._check_dimension()

    def _check_loss_options(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        k = self.num_classes
        if self.loss.startswith("ncmc"):
            if self.fixed_classifier not in ("none", "multicenter"):
                raise ValueError(f"loss {self.loss!r} uses the fixed multi-center frame; "
                                 f"fixed_classifier must be 'multicenter', got {self.fixed_classifier!r}")
            set_("fixed_classifier", "multicenter")
            if self.bias != "none" or self.normalize != "none":
                raise ValueError(f"loss {self.loss!r} takes bias='none' and normalize='none' (the frame is fixed)")
        if self.fixed_classifier == "multicenter":
            if self.centers_per_class is None:
                raise ValueError("the multi-center frame needs centers_per_class (e.g. class_aware_centers(counts, f))")
            set_("centers_per_class", tuple(check_counts(self.centers_per_class, "centers_per_class")))
            if len(self.centers_per_class) != k:
                raise ValueError(f"centers_per_class has {len(self.centers_per_class)} entries; expected {k}")
        elif self.centers_per_class is not None:
            raise ValueError("centers_per_class only applies to the multi-center frame (ncmc_* losses or "
                             "fixed_classifier='multicenter'); leave it unset")
        if self.ncmc_frame == "learned" and self.loss != "ncmc_p":
            raise ValueError(f"ncmc_frame='learned' is NCMC Loss P's learned frame (Yan et al. 2024, Thm 3.3/3.4); "
                             f"use loss='ncmc_p', got {self.loss!r}")
        if self.constraint == "ball" and (self.loss not in ("ce", "mse") or self.bias != "none"
                                          or self.normalize != "none" or self.extra_layers
                                          or self.fixed_classifier != "none"):
            raise ValueError("constraint='ball' is the layer-peeled model of Fang et al. 2021: use loss 'ce' or "
                             "'mse', bias='none', normalize='none', no extra layers and a learned classifier")
        if self.loss == "supcon":
            if self.normalize not in ("none", "features") or self.bias != "none" or self.fixed_classifier != "none":
                raise ValueError("loss 'supcon' lives on the unit sphere without a classifier: use normalize='none' "
                                 "or 'features', bias='none', fixed_classifier='none'")
            if min(self.counts) < 2:
                raise ValueError(f"loss 'supcon' needs at least two samples per class; "
                                 f"got counts min {min(self.counts)}")
            set_("normalize", "features")

    @property
    def learn_classifier(self) -> bool:
        return self.fixed_classifier == "none" and self.loss != "supcon"

    @property
    def features_normalized(self) -> bool:
        return self.normalize in ("features", "both", "batchnorm")

    @property
    def weights_normalized(self) -> bool:
        return self.normalize in ("weights", "both")

    def _resolve_lambdas(self) -> None:
        ball = self.constraint == "ball"
        applies = {
            "lambda_w": (self.learn_classifier and not self.weights_normalized and not ball)
            or self.ncmc_frame == "learned",
            "lambda_h": not self.features_normalized and not ball,
            "lambda_b": self.bias == "decay",
        }
        why = {"lambda_w": "the classifier is fixed, normalised or absent", "lambda_h": "the features are normalised",
               "lambda_b": f"bias={self.bias!r} has no penalised bias"}
        for name, ok in applies.items():
            value = getattr(self, name)
            if value is None:
                object.__setattr__(self, name, DEFAULT_LAMBDA if ok else 0.0)
                continue
            check_scalar(value, name, Real, low=0.0)
            object.__setattr__(self, name, float(value))
            if value > 0 and ball and name != "lambda_b":
                raise ValueError(f"{name} == {value}: constraint='ball' bounds the energies (energy_w, energy_h) "
                                 f"instead of penalising them; set {name} to 0")
            if value > 0 and not ok:
                raise ValueError(f"{name} == {value} has no minimiser here because {why[name]}; set {name} to 0")

    def _check_dimension(self) -> None:
        k, d = self.num_classes, self.dim
        if self.fixed_classifier == "multicenter":
            self.frame()
        elif self.fixed_classifier in geometry.FIXED_FRAMES:
            self.fixed_weights()
        elif d < k - 1:
            raise ValueError(f"dim == {d} is below K - 1 = {k - 1}: a simplex ETF of {k} classes does not fit; "
                             f"use dim >= {k - 1}")

    @property
    def num_classes(self) -> int:
        return len(self.counts)

    @property
    def num_samples(self) -> int:
        return sum(self.counts)

    @property
    def is_balanced(self) -> bool:
        return len(set(self.counts)) == 1

    def labels(self) -> torch.Tensor:
        """Sample labels grouped by class: n_1 zeros, n_2 ones, ..."""
        return torch.repeat_interleave(torch.arange(self.num_classes), torch.tensor(self.counts))

    def frame(self) -> geometry.MultiCenterFrame:
        """The fixed NCMC frame (Yan et al. 2024, Def. 3.2) from ``geometry.multicenter_frame``."""
        return geometry.multicenter_frame(self.dim, self.centers_per_class, self.theta, seed=self.seed)

    def fixed_weights(self) -> torch.Tensor | None:
        """The fixed classifier (K, d), unit rows, or None when W is learned."""
        if self.fixed_classifier == "none":
            return None
        if self.fixed_classifier == "multicenter":
            return self.frame().classifier
        return geometry.fixed_frame(self.fixed_classifier, self.num_classes, self.dim, seed=self.seed)

    def batch_key(self) -> tuple:
        """Fields that must agree for instances to share one stacked solve (counts, λ, seeds, init may differ)."""
        return (self.loss, self.num_classes, self.dim, self.bias, self.normalize, self.temperature,
                self.extra_layers, self.learn_classifier, self.centers_per_class, self.theta, self.lambda_norm,
                self.constraint, self.ncmc_frame)

    def replace(self, **changes) -> UFMProblem:
        """A copy with ``changes``, validated again (resolved λ values carry over as explicit values)."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

"""Reference geometries of neural collapse: simplex ETF, orthonormal frames, d-cube and
d-orthoplex vertices, and the NCMC multi-center frame with class-aware center counts.

All constructors return float64 tensors with one row per vector. A ``seed`` gives a
random rotation (a QR of a Gaussian matrix drawn from ``torch.Generator(seed)``), so the
same seed gives the same frame on any machine; ``seed=None`` uses the canonical axes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real

import torch

from .config_check import check_choice
from .validation import check_counts, check_scalar

__all__ = [
    "orthonormal_basis",
    "simplex_etf",
    "orthonormal_frame",
    "dcube_vertices",
    "dorthoplex_vertices",
    "FIXED_FRAMES",
    "fixed_frame",
    "MultiCenterFrame",
    "multicenter_frame",
    "class_aware_centers",
    "center_angle_cos",
    "check_theta",
]


def orthonormal_basis(dim: int, rank: int, seed: int | None = None) -> torch.Tensor:
    """Return a (dim, rank) matrix with orthonormal columns: random (QR, seeded) or the first axes."""
    check_scalar(dim, "dim", Integral, low=1)
    check_scalar(rank, "rank", Integral, low=0)
    if rank > dim:
        raise ValueError(f"cannot fit {rank} orthonormal vectors in dimension {dim}; need dim >= {rank}")
    if seed is None:
        return torch.eye(dim, rank, dtype=torch.float64)
    g = torch.Generator().manual_seed(int(seed))
    q, r = torch.linalg.qr(torch.randn(dim, rank, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(()))[None, :]


def simplex_etf(num_classes: int, dim: int | None = None, seed: int | None = None) -> torch.Tensor:
    """Simplex ETF: K unit vectors with pairwise cosine -1/(K-1), rows of a (K, d) tensor.

    M = sqrt(K/(K-1)) (I_K - 11ᵀ/K) written in an orthonormal basis of 1^⊥ (Papyan et al. 2020,
    Def. 1), embedded in R^d by ``orthonormal_basis(d, K-1, seed)``; needs d >= K-1.
    """
    check_scalar(num_classes, "num_classes", Integral, low=2)
    dim = num_classes - 1 if dim is None else dim
    check_scalar(dim, "dim", Integral, low=1)
    if dim < num_classes - 1:
        raise ValueError(f"a simplex ETF of {num_classes} classes needs dim >= {num_classes - 1}; got dim={dim}")
    k = num_classes
    centred = torch.eye(k, dtype=torch.float64) - 1.0 / k
    eigvals, eigvecs = torch.linalg.eigh(centred)
    basis = eigvecs[:, eigvals > 0.5]  # K x (K-1) orthonormal basis of 1^⊥
    coords = math.sqrt(k / (k - 1)) * centred @ basis  # K x (K-1), unit rows
    return coords @ orthonormal_basis(dim, k - 1, seed).T


def orthonormal_frame(num_classes: int, dim: int | None = None, seed: int | None = None) -> torch.Tensor:
    """K orthonormal rows in R^d (d >= K): the optimal classifier of bias-free MSE UFMs (Tirer & Bruna 2022)."""
    check_scalar(num_classes, "num_classes", Integral, low=1)
    dim = num_classes if dim is None else dim
    if dim < num_classes:
        raise ValueError(f"an orthonormal frame of {num_classes} vectors needs dim >= {num_classes}; got dim={dim}")
    return orthonormal_basis(dim, num_classes, seed).T.contiguous()


def dcube_vertices(num_classes: int, dim: int | None = None, seed: int | None = None) -> torch.Tensor:
    """K unit vertices of the hypercube {±1/√m}^m, m = ceil(log2 K) (Pernici et al. 2021, §3.2).

    Vertex i has the signs of the binary digits of i; embedded in R^dim (dim >= m) by an orthonormal map.
    """
    check_scalar(num_classes, "num_classes", Integral, low=2)
    m = max(1, math.ceil(math.log2(num_classes)))
    dim = m if dim is None else dim
    if dim < m:
        raise ValueError(f"a d-cube with {num_classes} vertices needs dim >= ceil(log2 K) = {m}; got dim={dim}")
    bits = (torch.arange(num_classes)[:, None] >> torch.arange(m)[None, :]) & 1
    vertices = (1.0 - 2.0 * bits.to(torch.float64)) / math.sqrt(m)
    return vertices @ orthonormal_basis(dim, m, seed).T


def dorthoplex_vertices(num_classes: int, dim: int | None = None, seed: int | None = None) -> torch.Tensor:
    """K vertices ±e_i of the cross-polytope in R^m, m = ceil(K/2) (Pernici et al. 2021, §3.2).

    Classes 2i and 2i+1 take e_i and -e_i; embedded in R^dim (dim >= m) by an orthonormal map.
    """
    check_scalar(num_classes, "num_classes", Integral, low=2)
    m = math.ceil(num_classes / 2)
    dim = m if dim is None else dim
    if dim < m:
        raise ValueError(f"a d-orthoplex with {num_classes} vertices needs dim >= ceil(K/2) = {m}; got dim={dim}")
    idx = torch.arange(num_classes)
    vertices = torch.zeros(num_classes, m, dtype=torch.float64)
    vertices[idx, idx // 2] = 1.0 - 2.0 * (idx % 2).to(torch.float64)
    return vertices @ orthonormal_basis(dim, m, seed).T


FIXED_FRAMES = {  # the one registry of fixed classifier geometries (nn.heads.FixedHead, ufm.UFMProblem)
    "etf": simplex_etf,
    "orthogonal": orthonormal_frame,
    "cube": dcube_vertices,
    "orthoplex": dorthoplex_vertices,
}


def fixed_frame(name: str, num_classes: int, dim: int | None = None, seed: int | None = None) -> torch.Tensor:
    """The (K, d) rows of the fixed geometry ``name`` in ``FIXED_FRAMES`` (an unknown name: ``ValueError``)."""
    check_choice(name, tuple(FIXED_FRAMES), "fixed frame")
    return FIXED_FRAMES[name](num_classes, dim, seed=seed)


def center_angle_cos(f_k, theta: float) -> torch.Tensor:
    """cos α*_k = ‖w̄^(k)‖ = sqrt((cos²θ + f_k sin²θ)/f_k) for unit frames (Yan et al. 2024, Thm 3.3; ncmc.md §1)."""
    f = torch.as_tensor(f_k, dtype=torch.float64)
    return torch.sqrt((math.cos(theta) ** 2 + f * math.sin(theta) ** 2) / f)


@dataclass(frozen=True)
class MultiCenterFrame:
    """Fixed NCMC frame (Yan et al. 2024, Def. 3.2, eq. 17).

    ``classifier`` (K, d): orthonormal w_k; ``centers`` (F, d): w_j^(k) = cos θ v_j^(k) + sin θ w_k with all
    F + K vectors {v_j^(k)} ∪ {w_k} orthonormal; ``owner`` (F,): the class of each center, grouped by class.
    """

    classifier: torch.Tensor
    centers: torch.Tensor
    owner: torch.Tensor
    centers_per_class: tuple[int, ...]
    theta: float

    @property
    def num_classes(self) -> int:
        return self.classifier.shape[0]

    @property
    def dim(self) -> int:
        return self.classifier.shape[1]

    def mean_centers(self) -> torch.Tensor:
        """w̄^(k) = (1/f_k) Σ_j w_j^(k), a (K, d) tensor (ncmc.md §1)."""
        sums = torch.zeros_like(self.classifier).index_add_(0, self.owner, self.centers)
        return sums / torch.tensor(self.centers_per_class, dtype=sums.dtype)[:, None]


def check_theta(theta) -> float:
    """Validate an NCMC center angle θ ∈ [0, π/2] (Yan et al. 2024, Def. 3.2)."""
    check_scalar(theta, "theta", Real)
    if not 0.0 <= float(theta) <= math.pi / 2:
        raise ValueError(f"theta == {theta}, must lie in [0, pi/2] radians (the paper uses 0.2)")
    return float(theta)


def multicenter_frame(dim: int, centers_per_class, theta: float = 0.2, seed: int | None = 0) -> MultiCenterFrame:
    """Build the fixed multi-center frame of NCMC (Yan et al. 2024, Def. 3.2, eq. 16-17).

    Needs dim >= F + K with F = Σ f_k; the error says which extra-layer width would fit.
    """
    f = check_counts(centers_per_class, "centers_per_class")
    theta = check_theta(theta)
    check_scalar(dim, "dim", Integral, low=1)
    k, total = len(f), sum(f)
    if dim < total + k:
        raise ValueError(
            f"the multi-center frame needs dim >= F + K = {total} + {k} = {total + k} mutually orthogonal "
            f"vectors; got dim={dim}: add an extra linear layer of width >= {total + k} before the head"
        )
    basis = orthonormal_basis(dim, total + k, seed).T  # (F+K, d) orthonormal rows
    classifier, v = basis[:k].contiguous(), basis[k:]
    owner = torch.repeat_interleave(torch.arange(k), torch.tensor(f))
    centers = math.cos(theta) * v + math.sin(theta) * classifier[owner]
    return MultiCenterFrame(classifier, centers, owner, tuple(f), theta)


def class_aware_centers(counts, f: int, order: str = "given") -> list[int]:
    """Class-aware number of centers f_k (Yan et al. 2024, §3.5).

    a_k = floor((f-1) K n_k / N) + 1 on the counts in the given order (the paper lists them head to tail),
    reverse the list, then add 1 from the left until Σ f_k = fK. The paper's example (1,3,3), f=3 gives
    [4,4,1]. ``order="sorted"`` applies the rule to the counts sorted in descending order and maps the
    result back to the given class order (for labels that are not sorted by size).
    """
    check_scalar(f, "f", Integral, low=1)
    n = check_counts(counts, "counts")
    if order not in ("given", "sorted"):
        raise ValueError(f"order == {order!r}, must be 'given' or 'sorted'")
    if order == "sorted":
        perm = sorted(range(len(n)), key=lambda i: -n[i])
        sorted_f = class_aware_centers([n[i] for i in perm], f)
        out = [0] * len(n)
        for position, cls in enumerate(perm):
            out[cls] = sorted_f[position]
        return out
    k, total = len(n), sum(n)
    a = [(f - 1) * k * nk // total + 1 for nk in n]
    result = a[::-1]
    deficit = f * k - sum(result)
    for i in range(deficit):
        result[i % k] += 1
    return result

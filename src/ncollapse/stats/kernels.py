"""Tensor kernels of the ``ClassStats`` update: pure functions on a batch and the state tensors they write.

Block-triangular scatter: zᵀz is symmetric, so a batch computes the 10 of 4 × 4 column blocks on or above the
diagonal (10/16 of the GEMM's FLOPs) and the state mirrors them when it is read. Kept rare samples: the m slots
of each class hold its first m samples (``ClassStats(rare_below=m + 1)``).
"""

from __future__ import annotations

import torch

__all__ = ["add_upper_blocks", "mirror_blocks", "class_scatter_of", "keep_rare", "append_rare"]


def _block_starts(dim: int) -> range:
    return range(0, dim, -(-dim // 4))


def add_upper_blocks(scatter: torch.Tensor, z: torch.Tensor) -> None:
    """scatter += zᵀz on the block upper triangle only (4 × 4 blocks of ⌈d/4⌉ columns, 10 of them computed)."""
    blocks = _block_starts(z.shape[1])
    for i in blocks:
        scatter[i:i + blocks.step, i:].add_(z[:, i:i + blocks.step].T @ z[:, i:])


def mirror_blocks(scatter: torch.Tensor) -> None:
    """Copy the block upper triangle onto the lower one (after ``add_upper_blocks``)."""
    blocks = _block_starts(scatter.shape[0])
    for i in blocks:
        scatter[i + blocks.step:, i:i + blocks.step] = scatter[i:i + blocks.step, i + blocks.step:].T


def class_scatter_of(z: torch.Tensor, inverse: torch.Tensor, width: int) -> torch.Tensor:
    """Per-class scatter Σ_{y=k} z zᵀ of a shifted batch as one GEMM: (one-hot ⊗ z)ᵀ z, reshaped to (P, d, d)."""
    onehot = (inverse[:, None] == torch.arange(width, device=z.device)[None, :]).to(z.dtype)
    stacked = (onehot[:, :, None] * z[:, None, :]).reshape(z.shape[0], -1)
    return (stacked.T @ z).reshape(width, z.shape[1], z.shape[1])


def keep_rare(buffer: torch.Tensor, seen: torch.Tensor, x: torch.Tensor, inverse: torch.Tensor,
              present: torch.Tensor, counts: torch.Tensor) -> None:
    """Write each sample of the batch into the next free slot of its class: slot = ``seen`` (samples of that
    class before this batch, per present class) + the sample's rank within its class in this batch; none past
    the last slot."""
    order = torch.argsort(inverse, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(inverse)
    rank[order] = torch.arange(len(inverse), device=inverse.device) - starts[inverse[order]]
    slot = seen[inverse] + rank
    free = slot < buffer.shape[1]
    buffer[present[inverse[free]], slot[free]] = x[free].to(buffer.dtype)


def append_rare(buffer: torch.Tensor, counts_a: torch.Tensor, samples: torch.Tensor,
                counts_b: torch.Tensor) -> torch.Tensor:
    """Another holder's kept samples (``counts_b`` seen) after these (``counts_a`` seen): slot s of class k keeps
    its sample for s < a_k = min(counts_a, slots), else takes the other's sample s − a_k if it has one."""
    kept = buffer.shape[1]
    slots = torch.arange(kept, device=buffer.device)[None, :]
    held = counts_a.clamp(max=kept)[:, None]
    source = (slots - held).clamp(0, kept - 1)
    taken = torch.take_along_dim(samples.to(buffer.dtype), source[:, :, None], dim=1)
    use = (slots >= held) & (slots - held < counts_b.clamp(max=kept)[:, None])
    return torch.where(use[:, :, None], taken, buffer)

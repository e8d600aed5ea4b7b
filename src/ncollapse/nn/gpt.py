"""A small GPT: a pre-LayerNorm causal transformer whose classes are the vocabulary.

Token + learned position embeddings, ``layers`` blocks x ← x + Attn(LN(x)), x ← x + MLP(LN(x)) (pre-LN as in
GPT-2, Radford et al. 2019, §2.3; Xiong et al. 2020), a final LayerNorm and a linear head without bias. Attention
is ``torch.nn.functional.scaled_dot_product_attention`` with ``is_causal=True`` (softmax(QKᵀ/√d_h)V with
position t attending to positions ≤ t; Vaswani et al. 2017, eq. 1); the MLP is Linear(d, 4d) → GELU → Linear.

``forward(ids)`` returns ``(features, logits)`` like every ncollapse model: ``features`` (B, T, d) is the final
LayerNorm's output, exactly what the head classifies, and ``model.head.weight`` (vocabulary × d) is the
classifier for NC metrics. The head is untied by default (NC3 needs a classifier distinct from the input
embedding); ``tied=True`` shares it with the token embedding. Initialisation (normal, std 0.02, residual
projections scaled by 1/√(2·layers) as in GPT-2) runs under ``torch.random.fork_rng`` seeded with ``seed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

import torch
import torch.nn.functional as F
from torch import nn

from ..validation import check_scalar

__all__ = ["GPT", "GPTConfig"]


@dataclass(frozen=True)
class GPTConfig:
    """Shape of a ``GPT``: vocabulary, context length, layers, width, heads, tied head, dropout."""

    vocab_size: int
    context: int = 128
    layers: int = 4
    width: int = 256
    heads: int = 4
    tied: bool = False
    dropout: float = 0.0

    def __post_init__(self):
        for name in ("vocab_size", "context", "layers", "width", "heads"):
            check_scalar(getattr(self, name), name, int, low=1)
        check_scalar(self.dropout, "dropout", Real, low=0.0, high=1.0, high_open=True)
        if self.width % self.heads:
            raise ValueError(f"width == {self.width} is not divisible by heads == {self.heads}; pick a width that "
                             "is a multiple of the head count")


class _Attention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.heads, self.dropout = cfg.heads, cfg.dropout
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class _Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.width), nn.LayerNorm(cfg.width)
        self.attn = _Attention(cfg)
        self.mlp = nn.Sequential(nn.Linear(cfg.width, 4 * cfg.width), nn.GELU(), nn.Linear(4 * cfg.width, cfg.width))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x)))
        return x + self.drop(self.mlp(self.ln2(x)))


class GPT(nn.Module):
    """Pre-LN causal transformer (see the module docstring); ``forward(ids (B, T))`` → (features, logits)."""

    def __init__(self, cfg: GPTConfig, seed: int = 0):
        super().__init__()
        if not isinstance(cfg, GPTConfig):
            raise TypeError(f"cfg must be a GPTConfig; got {type(cfg).__name__}")
        self.cfg = cfg
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.token = nn.Embedding(cfg.vocab_size, cfg.width)
            self.position = nn.Embedding(cfg.context, cfg.width)
            self.drop = nn.Dropout(cfg.dropout)
            self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.layers))
            self.norm = nn.LayerNorm(cfg.width)
            self.head = nn.Linear(cfg.width, cfg.vocab_size, bias=False)
            self.apply(self._init)
            for block in self.blocks:
                for proj in (block.attn.proj, block.mlp[2]):
                    nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * cfg.layers))
        if cfg.tied:
            self.head.weight = self.token.weight

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def num_parameters(self, embeddings: bool = True) -> int:
        """Parameter count (shared weights once); ``embeddings=False`` leaves out the token and position tables
        (and with them a tied head)."""
        total = sum(p.numel() for p in self.parameters())  # parameters() yields a shared weight once
        if not embeddings:
            total -= self.position.weight.numel() + self.token.weight.numel()
        return total

    def features(self, ids: torch.Tensor) -> torch.Tensor:
        """The final LayerNorm's output (B, T, d) for token ids (B, T), T ≤ context."""
        if ids.ndim != 2:
            raise ValueError(f"ids must be 2-D (batch, time); got shape {tuple(ids.shape)}")
        t = ids.shape[1]
        if t > self.cfg.context:
            raise ValueError(f"sequence length {t} exceeds the model's context {self.cfg.context}")
        x = self.token(ids) + self.position(torch.arange(t, device=ids.device))
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(ids)
        return h, self.head(h)

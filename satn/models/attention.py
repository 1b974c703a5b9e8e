"""Attention over time, masked by sequence length: soft attention and self-attention.

Soft attention (SATN Eqs. 1-3) scores each encoder frame through a tanh
energy layer and takes the softmax-weighted sum over valid frames. Self-
attention (Eqs. 7-8) is softmax(Q K^T / sqrt(d_k)) V per head; the paper's
form is one head with d_k = d and no output projection, the multi-head form
adds heads and an output projection.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from satn.models.dropout import Dropout
from satn.models.masking import length_mask


def _key_bias(lengths: Tensor, t: int, dtype: torch.dtype) -> Tensor:
    """(B, T): 0 on real frames, -inf on padding (added to scores before a softmax)."""
    bias = torch.zeros(len(lengths), t, dtype=dtype, device=lengths.device)
    return bias.masked_fill_(~length_mask(lengths, t), float("-inf"))


class MultiHeadSelfAttention(nn.Module):
    """softmax(Q K^T / sqrt(d_k)) V per head, padded keys excluded.

    ``heads=1, out_proj=False`` is SATN's form (d_k = d, the attended values
    are the output). The attention maps, which tracking logs and attention
    transfer compares with a teacher's, are built only when asked
    (``weights=True``); otherwise the fused ``scaled_dot_product_attention``
    computes the same output without materialising the (B, H, T, T) map.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, out_proj: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention dim {dim} is not divisible by {heads} heads")
        self.heads, self.d_k = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim) if out_proj else nn.Identity()
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor, lengths: Tensor,
                weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """x: (B, T, D), lengths: (B,) -> y: (B, T, D), attention: (B, H, T, T) when
        ``weights``, else None."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.d_k).permute(2, 0, 3, 1, 4)
        attn = None
        if weights:
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_k)  # (B, H, T, T)
            # padded keys get -inf before the softmax: no weight ever falls on padding
            attn = (scores + _key_bias(lengths, t, scores.dtype)[:, None, None, :]).softmax(-1)
            y = attn @ v
        else:  # True = may attend: real keys only, for every query (B, 1, 1, T)
            keep = length_mask(lengths, t)[:, None, None, :]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        y = y.transpose(1, 2).reshape(b, t, d)  # (B, T, H*d_k)
        # dropout on the output, not on the (B, H, T, T) map: same regularising role,
        # a fraction of the cost, and the logged maps are the ones the model used
        return self.drop(self.out(y)), attn


class SoftAttention(nn.Module):
    """Global soft attention: e_t = v^T tanh(W h_t + b), alpha = softmax_t(e), c = sum alpha_t h_t."""

    def __init__(self, dim: int, energy_dim: int | None = None):
        super().__init__()
        self.energy = nn.Linear(dim, energy_dim or dim)  # W, b (Eq. 1)
        self.score = nn.Linear(energy_dim or dim, 1, bias=False)  # v (Eq. 1)

    def forward(self, h: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """h: (B, T, D), lengths: (B,) -> context (B, D), weights (B, T), zero on padding."""
        e = self.score(torch.tanh(self.energy(h))).squeeze(-1)  # (B, T)
        alpha = (e + _key_bias(lengths, h.shape[1], h.dtype)).softmax(-1)  # Eq. 2
        return (alpha.unsqueeze(-1) * h).sum(1), alpha  # Eq. 3

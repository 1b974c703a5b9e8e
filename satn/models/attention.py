"""Multi-head self-attention over time (SATN Eq. 8), masked by sequence length."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from satn.models.dropout import Dropout
from satn.models.masking import length_mask


class MultiHeadSelfAttention(nn.Module):
    """softmax(Q K^T / sqrt(d_k)) V per head, padded keys excluded.

    Returns the attended sequence and the attention maps, which the tracking
    layer logs and attention transfer compares with a teacher's.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention dim {dim} is not divisible by {heads} heads")
        self.heads, self.d_k = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """x: (B, T, D), lengths: (B,) -> y: (B, T, D), attention: (B, H, T, T)."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.d_k).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_k)  # (B, H, T, T)
        # padded keys get -inf before the softmax: no weight ever falls on padding
        bias = torch.zeros(b, 1, 1, t, dtype=x.dtype, device=x.device)
        bias.masked_fill_(~length_mask(lengths, t)[:, None, None, :], float("-inf"))
        attn = (scores + bias).softmax(-1)
        y = (attn @ v).transpose(1, 2).reshape(b, t, d)  # (B, T, H*d_k)
        # dropout on the output, not on the (B, H, T, T) map: same regularising role,
        # a fraction of the cost, and the logged maps are the ones the model used
        return self.drop(self.out(y)), attn

"""Masks and masked reductions for padded batches of variable-length sequences."""

from __future__ import annotations

import torch
from torch import Tensor


def length_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B,) lengths -> (B, T) bool, True on real frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean(x: Tensor, lengths: Tensor) -> Tensor:
    """Mean over real frames only. x: (B, T, D) -> (B, D)."""
    mask = length_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)  # (B, T, 1)
    return (x * mask).sum(1) / lengths.clamp(min=1).unsqueeze(-1).to(x.dtype)

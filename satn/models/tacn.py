"""TACN: a causal dilated TCN whose layers attend over the taps they read (TACN Eqs. 3-7).

A dilated causal convolution with kernel k and dilation d reads, for output
step t, the k taps ``X_t = [x_{t-(k-1)d}, ..., x_{t-d}, x_t]`` (each a C-vector)
and combines them with its weights. A TACN layer first lets those k taps attend
to one another with h-head scaled dot-product self-attention,
``Z_t = softmax(Q_t K_t^T / sqrt(d_k)) V_t`` with ``Q, K, V = X_t W_q, X_t W_k,
X_t W_v`` per head, and then combines the attended taps ``Z_t`` as the
convolution would (one weight matrix per tap position). Layers stack with
dilations 1, 2, 4, ..., residual connections and ReLU, so the receptive field
is ``1 + (k - 1) * (2**n - 1)`` steps.

Causal: only taps at or before t are read; taps before the start of the
sequence do not exist and are masked out of the attention (so every row of a
tap-attention map sums to one over real taps). Masked by length: outputs past
each length are zero, and since nothing reads later steps, a padded batch gives
each sequence what it gets alone.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from satn.models.dropout import Dropout
from satn.models.masking import length_mask


class TapAttentionLayer(nn.Module):
    """One TACN layer over (B, C, T): attend over the k dilated taps, combine, residual."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, heads: int,
                 dropout: float):
        super().__init__()
        if channels % heads:
            raise ValueError(f"TACN channels {channels} are not divisible by {heads} heads")
        self.k, self.d, self.heads, self.d_k = kernel_size, dilation, heads, channels // heads
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)
        # one weight matrix per tap position: the convolution applied to the attended taps
        self.combine = nn.Linear(kernel_size * channels, channels)
        self.drop = Dropout(dropout)

    def taps(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (B, C, T) -> taps (B, T, k, C) oldest first, and (T, k) bool: tap exists."""
        t = x.shape[-1]
        span = (self.k - 1) * self.d
        xp = nn.functional.pad(x, (span, 0))
        taps = torch.stack([xp[:, :, i * self.d: i * self.d + t] for i in range(self.k)], -1)
        steps = torch.arange(t, device=x.device)[:, None] - span + self.d * torch.arange(
            self.k, device=x.device)[None, :]
        return taps.permute(0, 2, 3, 1), steps >= 0

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """x: (B, C, T), mask: (B, 1, T) float -> y (B, C, T), tap attention (B, T, H, k, k)."""
        b, c, t = x.shape
        taps, exists = self.taps(x)  # (B, T, k, C), (T, k)
        q, k, v = self.qkv(taps).view(b, t, self.k, 3, self.heads, self.d_k).permute(
            3, 0, 1, 4, 2, 5)  # each (B, T, H, k, d_k)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_k)  # (B, T, H, k, k)
        # taps before the sequence starts are padding, not speech: no weight on them
        scores = scores.masked_fill(~exists[None, :, None, None, :], float("-inf"))
        attn = scores.softmax(-1)
        z = (attn @ v).permute(0, 1, 3, 2, 4).reshape(b, t, self.k, c)  # (B, T, k, C)
        h = self.combine(self.out(z).reshape(b, t, self.k * c))  # (B, T, C)
        h = self.drop(torch.relu(h)).transpose(1, 2) * mask
        return torch.relu(h + x) * mask, attn


class TACN(nn.Module):
    """Input projection, then ``layers`` tap-attention layers with dilations 2**i."""

    def __init__(self, input_dim: int, channels: int = 64, layers: int = 8, kernel_size: int = 3,
                 heads: int = 8, dropout: float = 0.2):
        super().__init__()
        if layers < 1:
            raise ValueError(f"a TACN needs at least one layer, not {layers}")
        self.proj = nn.Conv1d(input_dim, channels, 1)
        self.layers = nn.ModuleList(
            TapAttentionLayer(channels, kernel_size, 2**i, heads, dropout) for i in range(layers))
        self.output_dim = channels
        self.receptive_field = 1 + (kernel_size - 1) * (2**layers - 1)

    def forward(self, x: Tensor, lengths: Tensor, return_attention: bool = False):
        """x: (B, T, F), lengths: (B,) -> (B, T, channels), zero past each length.

        With ``return_attention``, also the list of per-layer tap-attention maps,
        each (B, T, H, k, k).
        """
        outputs, maps = self._run(x, lengths)
        return (outputs[-1], maps) if return_attention else outputs[-1]

    def forward_layers(self, x: Tensor, lengths: Tensor) -> list[Tensor]:
        """Every layer's output, first to last: a list of (B, T, channels)."""
        return self._run(x, lengths)[0]

    def _run(self, x: Tensor, lengths: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        mask = length_mask(lengths, x.shape[1]).unsqueeze(1).to(x.dtype)  # (B, 1, T)
        h = self.proj(x.transpose(1, 2)) * mask  # (B, C, T)
        outputs, maps = [], []
        for layer in self.layers:
            h, attn = layer(h, mask)
            outputs.append(h.transpose(1, 2))
            maps.append(attn)
        return outputs, maps

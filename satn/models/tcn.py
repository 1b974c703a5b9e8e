"""Temporal convolutional network: dilated residual blocks over (x, lengths).

After locuslab/TCN's ``TemporalBlock``: weight-normed dilated convolutions (two
per block by default; one, as in SATN's "1D convolutional modules", with
``convs_per_block=1``), ReLU, dropout and a residual path. Outputs are zeroed past each sequence's
length after every convolution, so a padded batch gives each utterance exactly
what it would get alone (in causal and non-causal mode).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from satn.models.dropout import Dropout
from satn.models.masking import length_mask


class _DilatedConv(nn.Module):
    """Conv1d that keeps length T: left padding when causal, centred otherwise."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int, causal: bool):
        super().__init__()
        total = dilation * (kernel_size - 1)
        self.pad = (total, 0) if causal else (total // 2, total - total // 2)
        self.conv = weight_norm(nn.Conv1d(c_in, c_out, kernel_size, dilation=dilation))

    def forward(self, x: Tensor) -> Tensor:  # (B, C_in, T) -> (B, C_out, T)
        return self.conv(nn.functional.pad(x, self.pad))


class TemporalBlock(nn.Module):
    """One or more dilated convolutions (same dilation) with a residual connection."""

    def __init__(
        self, c_in: int, c_out: int, kernel_size: int, dilation: int, dropout: float, causal: bool,
        convs: int = 2,
    ):
        super().__init__()
        if convs < 1:
            raise ValueError(f"a temporal block needs at least one convolution, not {convs}")
        self.convs = nn.ModuleList(
            _DilatedConv(c_in if i == 0 else c_out, c_out, kernel_size, dilation, causal)
            for i in range(convs))
        self.drop = Dropout(dropout)
        self.down = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (B, C_in, T), mask: (B, 1, T) float -> (B, C_out, T)."""
        h = x
        for conv in self.convs:
            h = self.drop(torch.relu(conv(h))) * mask
        return torch.relu(h + self.down(x)) * mask


class TCN(nn.Module):
    """A stack of temporal blocks, one per dilation (receptive field grows with their sum)."""

    def __init__(
        self,
        input_dim: int,
        channels: int,
        dilations: tuple[int, ...],
        kernel_size: int = 3,
        dropout: float = 0.2,
        causal: bool = True,
        convs_per_block: int = 2,
    ):
        super().__init__()
        if not dilations:
            raise ValueError("a TCN needs at least one dilation")
        dims = [input_dim] + [channels] * len(dilations)
        self.blocks = nn.ModuleList(
            TemporalBlock(dims[i], dims[i + 1], kernel_size, d, dropout, causal, convs_per_block)
            for i, d in enumerate(dilations)
        )
        self.output_dim = channels
        self.receptive_field = 1 + convs_per_block * (kernel_size - 1) * sum(dilations)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """x: (B, T, F), lengths: (B,) -> (B, T, channels), zero past each length."""
        return self.forward_layers(x, lengths)[-1]

    def forward_layers(self, x: Tensor, lengths: Tensor) -> list[Tensor]:
        """Every block's output, first to last: a list of (B, T, channels), zero past each length."""
        mask = length_mask(lengths, x.shape[1]).unsqueeze(1).to(x.dtype)  # (B, 1, T)
        h = x.transpose(1, 2) * mask  # (B, F, T)
        layers = []
        for block in self.blocks:
            h = block(h, mask)
            layers.append(h.transpose(1, 2))
        return layers

"""The deep representation R_d: a 2D CNN over each spectrogram segment (TACN Sec. 3.1).

TACN takes Satt et al. (2017)'s preprocessing, segment length and CNN: an
utterance's log spectrogram (16 kHz, 256-point FFT, 129 bins) is cut into
segments of 32 frames (about 265 ms), each segment goes through the CNN alone
and gives one vector, and the utterance becomes the sequence of those vectors
for the sequence model. ``features.kind=spectrogram_segments`` extracts the
segments; this module only reads them.

How this matches Satt et al.: a public copy of their paper was not reachable
from here (searched for it; none of the stored pages holds its text), so the
layer sizes below are not checked against it. What is kept from the TACN
description is the input (one 32 x 129 log-spectrogram segment, normalised per
frequency bin), the shape of the network (stacked 2D convolutions with ReLU and
2 x 2 max pooling over time and frequency, then a fully connected layer, one
vector per segment) and that each segment is encoded independently. The
channel counts, kernel size and output size are settings (``model.cnn``), so a
reader who has the paper can set its values without code changes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from satn.models.dropout import Dropout
from satn.models.masking import length_mask


def per_segment(fn: Callable[[Tensor], Tensor], x: Tensor, lengths: Tensor, dim: int) -> Tensor:
    """Apply ``fn`` to the real segments only and pad the result back.

    x: (B, T, S, F) padded segments; fn: (N, S, F) -> (N, dim) -> (B, T, dim),
    zero past each length. Padded segments never reach ``fn``, so a segment's
    vector is what it would be alone, in any batch (also for batch statistics).
    """
    mask = length_mask(lengths, x.shape[1])  # (B, T)
    out = x.new_zeros(*mask.shape, dim)
    out[mask] = fn(x[mask])
    return out


class SegmentCNN(nn.Module):
    """(N, S, F) segments -> (N, out_dim): conv-ReLU-maxpool blocks, then a linear layer."""

    def __init__(self, segment_shape: tuple[int, int], channels: tuple[int, ...] = (32, 64, 64),
                 kernel_size: int = 3, out_dim: int = 128, dropout: float = 0.2):
        super().__init__()
        if not channels:
            raise ValueError("a segment CNN needs at least one convolution")
        layers: list[nn.Module] = []
        c_in = 1
        for c in channels:
            layers += [nn.Conv2d(c_in, c, kernel_size, padding=kernel_size // 2), nn.ReLU(),
                       nn.MaxPool2d(2, ceil_mode=True)]
            c_in = c
        self.convs = nn.Sequential(*layers)
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, 1, *segment_shape)).numel()
        self.fc = nn.Sequential(nn.Flatten(), Dropout(dropout), nn.Linear(flat, out_dim),
                                nn.ReLU())
        self.output_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, S, F) -> (N, out_dim)."""
        return self.fc(self.convs(x.unsqueeze(1)))

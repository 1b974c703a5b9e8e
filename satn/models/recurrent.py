"""Recurrent encoder over (x, lengths): RNN, GRU or LSTM, one or both directions.

Each sequence is packed to its own length (``pack_padded_sequence``), so the
backward direction starts at the last real frame and padding never reaches an
output; outputs past each length are zero. Layers are separate modules (not
``num_layers``) so that every layer's output can be read by name, and the
dropout between them is satn's seeded ``Dropout``, which the built-in
inter-layer dropout of ``nn.LSTM`` could not be.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from satn.models.dropout import Dropout

CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


class RecurrentEncoder(nn.Module):
    """A stack of recurrent layers; ``output_dim`` is hidden x directions."""

    def __init__(self, input_dim: int, cell: str = "lstm", hidden: int = 128, layers: int = 1,
                 bidirectional: bool = True, dropout: float = 0.0):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"recurrent cell must be one of {sorted(CELLS)}, not {cell!r}")
        if layers < 1 or hidden < 1:
            raise ValueError(f"a recurrent encoder needs layers >= 1 and hidden >= 1, "
                             f"not {layers} and {hidden}")
        directions = 2 if bidirectional else 1
        self.output_dim = hidden * directions
        self.rnns = nn.ModuleList(
            CELLS[cell](input_dim if i == 0 else self.output_dim, hidden, batch_first=True,
                        bidirectional=bidirectional)
            for i in range(layers))
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """x: (B, T, F), lengths: (B,) -> (B, T, hidden x directions), zero past each length."""
        return self.forward_layers(x, lengths)[-1]

    def forward_layers(self, x: Tensor, lengths: Tensor) -> list[Tensor]:
        """Every layer's output, first to last: a list of (B, T, output_dim)."""
        t = x.shape[1]
        cpu_lengths = lengths.detach().to("cpu", torch.int64).clamp(min=1)
        outputs, h = [], x
        for i, rnn in enumerate(self.rnns):
            if i:
                h = self.drop(h)
            packed = pack_padded_sequence(h, cpu_lengths, batch_first=True, enforce_sorted=False)
            h, _ = pad_packed_sequence(rnn(packed)[0], batch_first=True, total_length=t)
            outputs.append(h)
        return outputs

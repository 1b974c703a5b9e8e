"""Recurrent encoder over (x, lengths): RNN, GRU or LSTM, one or both directions.

Each sequence is read to its own length: the backward direction starts at the last
real frame and padding never reaches an output; outputs past each length are zero.
On a GPU the sequences are packed (``pack_padded_sequence``, which cuDNN runs
fast). On a CPU, where the backward pass of a packed LSTM is 10-15x slower than a
padded one, each direction runs padded instead, the backward one on every sequence
flipped within its length: the same outputs and gradients (tests/test_models.py).
Under CPU autocast (bf16) the sequences are packed: oneDNN has no padded bf16 LSTM
on every CPU.
Layers are separate modules (not ``num_layers``) so that every layer's output can
be read by name, and the dropout between them is satn's seeded ``Dropout``, which
the built-in inter-layer dropout of ``nn.LSTM`` could not be.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from satn.models.dropout import Dropout

CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
# what nn.RNN / GRU / LSTM call for one direction of one layer, by the module's mode
_KERNELS = {"RNN_TANH": torch.rnn_tanh, "GRU": torch.gru, "LSTM": torch.lstm}


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
        cpu_lengths = lengths.detach().to("cpu", torch.int64).clamp(min=1)
        outputs, h = [], x
        for i, rnn in enumerate(self.rnns):
            if i:
                h = self.drop(h)
            # oneDNN's padded LSTM has no bf16 kernel on every CPU: autocast keeps packing
            padded = not h.is_cuda and not torch.is_autocast_enabled("cpu")
            h = (run_padded if padded else run_packed)(rnn, h, cpu_lengths)
            outputs.append(h)
        return outputs


def run_packed(rnn: nn.RNNBase, x: Tensor, lengths: Tensor) -> Tensor:
    """One recurrent layer over packed sequences: x (B, T, F), lengths (B,) on the CPU
    -> (B, T, hidden x directions), zero past each length."""
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, _ = pad_packed_sequence(rnn(packed)[0], batch_first=True, total_length=x.shape[1])
    return out


def run_padded(rnn: nn.RNNBase, x: Tensor, lengths: Tensor) -> Tensor:
    """:func:`run_packed`'s result without packing: the forward direction over the padded
    batch (a frame's output never depends on the padding after it), the backward one over
    each sequence flipped within its length, its outputs flipped back."""
    t = x.shape[1]
    valid = torch.arange(t, device=x.device)[None, :] < lengths.to(x.device)[:, None]  # (B, T)
    outs = [_one_direction(rnn, x, "")]
    if rnn.bidirectional:
        flip = _flip_within(lengths.to(x.device), t)  # (B, T) frame indices
        rev = _one_direction(rnn, x.gather(1, flip[..., None].expand_as(x)), "_reverse")
        outs.append(rev.gather(1, flip[..., None].expand_as(rev)))
    return torch.cat(outs, -1) * valid[..., None].to(x.dtype)


def _one_direction(rnn: nn.RNNBase, x: Tensor, suffix: str) -> Tensor:
    """One direction of a one-layer ``rnn`` (its ``*_l0{suffix}`` weights) over (B, T, F)."""
    names = ["weight_ih_l0", "weight_hh_l0"] + (["bias_ih_l0", "bias_hh_l0"] if rnn.bias else [])
    params = [getattr(rnn, n + suffix) for n in names]
    h0 = x.new_zeros(1, x.shape[0], rnn.hidden_size)
    hx = (h0, torch.zeros_like(h0)) if rnn.mode == "LSTM" else h0
    return _KERNELS[rnn.mode](x, hx, params, rnn.bias, 1, 0.0, rnn.training, False, True)[0]


def _flip_within(lengths: Tensor, t: int) -> Tensor:
    """(B, T) indices that reverse frames 0..length-1 of each row and keep the padding."""
    pos = torch.arange(t, device=lengths.device)[None, :]
    return torch.where(pos < lengths[:, None], lengths[:, None] - 1 - pos, pos)

"""The registered model variants of satn: SATN's Table 2.

Each variant is one encoder and one readout from the shared blocks:

=============  =========================================  ==========================
encoder        ``tcn``: dilated TCN (``model.tcn.*``)      ``blstm``: LSTM, both
               causal by default                           directions (``model.rnn``
                                                           hidden and layers)
readout        ``soft``: global soft attention, tanh       ``self``: self-attention
               energy (Eqs. 1-3)                           (Eqs. 7-8), paper or
                                                           multi-head form, pooled
=============  =========================================  ==========================

``*_at`` variants are the same networks trained with attention transfer from a
frozen ASR teacher (``transfer.*``, see ``satn/transfer.py``): the transfer is
a training loss, not part of the network, so a ``*_at`` checkpoint predicts
without its teacher.
"""

from __future__ import annotations

from functools import partial

from satn.config import ConfigError, ModelConfig
from satn.models.classifier import SelfAttentionReadout, SERModel, SoftAttentionReadout
from satn.models.recurrent import RecurrentEncoder
from satn.models.registry import register
from satn.models.tcn import TCN


def _frame_dim(variant: str, frame_shape: tuple[int, ...]) -> int:
    if len(frame_shape) != 1:
        raise ConfigError(
            f"{variant} reads frames of one axis (log-mel features); got frames of shape "
            f"{frame_shape} (use features.kind=logmel)"
        )
    return frame_shape[0]


def tcn_encoder(cfg: ModelConfig, input_dim: int) -> TCN:
    t = cfg.tcn
    return TCN(input_dim, t.channels, t.dilations, t.kernel_size, cfg.dropout, t.causal,
               t.convs_per_block)


def blstm_encoder(cfg: ModelConfig, input_dim: int) -> RecurrentEncoder:
    # the variant's name fixes the cell and both directions; size and depth are settings
    return RecurrentEncoder(input_dim, "lstm", cfg.rnn.hidden, cfg.rnn.layers,
                            bidirectional=True, dropout=cfg.dropout)


ENCODERS = {"tcn": (tcn_encoder, "tcn", "model.tcn.channels"),
            "blstm": (blstm_encoder, "rnn", "2 x model.rnn.hidden")}


def self_readout(cfg: ModelConfig, dim: int, source: str):
    a = cfg.attention
    if a.form == "multihead" and dim % a.heads:
        raise ConfigError(f"model.attention.heads must divide the encoder's output size "
                          f"{dim} ({source}), not {a.heads}")
    return SelfAttentionReadout(dim, a.heads, cfg.dropout, a.form, a.pooling)


def soft_readout(cfg: ModelConfig, dim: int, source: str):
    return SoftAttentionReadout(dim, cfg.attention.energy_dim)


READOUTS = {"self": self_readout, "soft": soft_readout}


def build(encoder: str, readout: str, cfg: ModelConfig, frame_shape: tuple[int, ...],
          n_classes: int) -> SERModel:
    """``encoder`` x ``readout`` -> linear classifier over the pooled vector."""
    make_encoder, _, source = ENCODERS[encoder]
    enc = make_encoder(cfg, _frame_dim(cfg.variant, frame_shape))
    head = READOUTS[readout](cfg, enc.output_dim, source)
    return SERModel(enc, head, enc.output_dim, n_classes, cfg.dropout)


for _enc in ENCODERS:
    for _read in READOUTS:
        for _transfer in (False, True):
            register(f"{_enc}_{_read}{'_at' if _transfer else ''}",
                     families=(ENCODERS[_enc][1], "attention"),
                     transfer=_transfer)(partial(build, _enc, _read))

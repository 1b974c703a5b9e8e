"""The registered model variants of satn."""

from __future__ import annotations

from satn.config import AttentionSettings, ConfigError, ModelConfig
from satn.models.classifier import SelfAttentionReadout, SERModel
from satn.models.registry import register
from satn.models.tcn import TCN


def _frame_dim(variant: str, frame_shape: tuple[int, ...]) -> int:
    if len(frame_shape) != 1:
        raise ConfigError(
            f"{variant} reads frames of one axis (log-mel features); got frames of shape "
            f"{frame_shape} (use features.kind=logmel)"
        )
    return frame_shape[0]


def _check_heads(a: AttentionSettings, dim: int, source: str) -> None:
    if a.form == "multihead" and dim % a.heads:
        raise ConfigError(f"model.attention.heads must divide the encoder's output size "
                          f"{dim} ({source}), not {a.heads}")


@register("tcn_self", families=("tcn", "attention"))
def tcn_self(cfg: ModelConfig, frame_shape: tuple[int, ...], n_classes: int) -> SERModel:
    """SATN's TCN encoder with self-attention (Eq. 8) pooled over valid frames."""
    t, a = cfg.tcn, cfg.attention
    encoder = TCN(_frame_dim(cfg.variant, frame_shape), t.channels, t.dilations, t.kernel_size,
                  cfg.dropout, t.causal, t.convs_per_block)
    _check_heads(a, encoder.output_dim, "model.tcn.channels")
    readout = SelfAttentionReadout(encoder.output_dim, a.heads, cfg.dropout, a.form, a.pooling)
    return SERModel(encoder, readout, encoder.output_dim, n_classes, cfg.dropout)

"""The registered model variants of satn."""

from __future__ import annotations

from satn.config import ConfigError, ModelConfig
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


@register("tcn_self")
def tcn_self(cfg: ModelConfig, frame_shape: tuple[int, ...], n_classes: int) -> SERModel:
    """SATN's TCN encoder with multi-head self-attention (Eq. 8) and masked mean pooling."""
    encoder = TCN(_frame_dim(cfg.variant, frame_shape), cfg.channels, cfg.dilations,
                  cfg.kernel_size, cfg.dropout, cfg.causal)
    readout = SelfAttentionReadout(cfg.channels, cfg.heads, cfg.dropout)
    return SERModel(encoder, readout, cfg.channels, n_classes, cfg.dropout)

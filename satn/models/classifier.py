"""The shape every satn model shares: encoder -> temporal readout -> classifier.

Variants differ only in which encoder and readout a builder plugs in (see
``registry.py``), so there is one forward path for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from satn.models.attention import MultiHeadSelfAttention
from satn.models.dropout import Dropout
from satn.models.masking import masked_mean


@dataclass
class ModelOutput:
    """logits: (B, C); attention: (B, H, T, T) or None; aux_losses by name (scalars)."""

    logits: Tensor
    attention: Tensor | None = None
    aux_losses: dict[str, Tensor] = field(default_factory=dict)


class SelfAttentionReadout(nn.Module):
    """Self-attention over the encoded sequence (residual + layer norm), then masked mean."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.attn = MultiHeadSelfAttention(dim, heads, dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, h: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """h: (B, T, D) -> pooled (B, D), attention (B, H, T, T)."""
        y, attn = self.attn(h, lengths)
        return masked_mean(self.norm(h + y), lengths), attn


class SERModel(nn.Module):
    """Emotion classifier over variable-length feature sequences."""

    def __init__(self, encoder: nn.Module, readout: nn.Module, dim: int, n_classes: int,
                 dropout: float):
        super().__init__()
        self.encoder, self.readout = encoder, readout
        self.head = nn.Sequential(Dropout(dropout), nn.Linear(dim, n_classes))

    def forward(self, x: Tensor, lengths: Tensor) -> ModelOutput:
        """x: (B, T, F) padded features, lengths: (B,) -> ModelOutput."""
        h = self.encoder(x, lengths)  # (B, T, D)
        pooled, attn = self.readout(h, lengths)  # (B, D), (B, H, T, T)
        return ModelOutput(self.head(pooled), attn)

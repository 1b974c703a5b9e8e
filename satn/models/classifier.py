"""The shape every satn model shares: encoder -> temporal readout -> classifier.

Variants differ only in which encoder and readout a builder plugs in (see
``registry.py`` and ``variants.py``), so there is one forward path for all of
them. An encoder is a module with ``forward_layers(x, lengths)`` returning each
layer's (B, T, C) output and an ``output_dim``; a readout maps (h, lengths) to
a pooled (B, D) vector and its attention weights, ``readout(h, lengths,
weights=...)``: weights that cost more than the pooling itself (self-attention's
(B, H, T, T)) are built only with ``weights=True``, otherwise None. An encoder that trains parts
with losses of their own (a fine-tuned VQ-VAE) returns ``(layers, aux_losses)``
instead, and those losses come back in ``ModelOutput.aux_losses`` by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from satn.models.attention import MultiHeadSelfAttention, SoftAttention
from satn.models.dropout import Dropout
from satn.models.masking import length_mask, masked_mean


@dataclass
class ModelOutput:
    """What a model computed for a batch.

    logits: (B, C). attention: the readout's weights, (B, T) for soft attention
    (always) or (B, H, T, T) for self-attention (only with ``return_maps=True``:
    training and evaluation run the fused kernel without them). maps: named
    intermediate tensors, filled only when asked (``return_maps=True``):
    ``encoder.layer{i}`` (B, T, C) per encoder layer and ``attention`` (as above). aux_losses: extra loss terms by
    name (scalars) that the engine adds to the classification loss.
    """

    logits: Tensor
    attention: Tensor | None = None
    maps: dict[str, Tensor] = field(default_factory=dict)
    aux_losses: dict[str, Tensor] = field(default_factory=dict)


def masked_max(x: Tensor, lengths: Tensor) -> Tensor:
    """Max over real frames only. x: (B, T, D) -> (B, D)."""
    mask = length_mask(lengths, x.shape[1]).unsqueeze(-1)
    return x.masked_fill(~mask, float("-inf")).amax(1)


POOL = {"mean": masked_mean, "max": masked_max}


class SelfAttentionReadout(nn.Module):
    """Self-attention over the encoded sequence, then pooling over valid frames.

    ``form="multihead"``: ``heads`` heads with an output projection, residual
    and LayerNorm. ``form="paper"``: SATN Eqs. 7-8 as written, one head with
    d_k = d, no output projection, no residual; the attended sequence is pooled.
    """

    def __init__(self, dim: int, heads: int, dropout: float, form: str = "multihead",
                 pooling: str = "mean"):
        super().__init__()
        if form not in ("paper", "multihead"):
            raise ValueError(f"self-attention form must be paper or multihead, not {form!r}")
        if pooling not in POOL:
            raise ValueError(f"pooling must be one of {sorted(POOL)}, not {pooling!r}")
        self.form, self.pool = form, POOL[pooling]
        paper = form == "paper"
        self.attn = MultiHeadSelfAttention(dim, 1 if paper else heads, dropout, out_proj=not paper)
        self.norm = nn.Identity() if paper else nn.LayerNorm(dim)

    def forward(self, h: Tensor, lengths: Tensor,
                weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """h: (B, T, D) -> pooled (B, D), attention (B, H, T, T) when ``weights``, else None."""
        y, attn = self.attn(h, lengths, weights)
        if self.form == "multihead":
            y = self.norm(h + y)
        return self.pool(y, lengths), attn


class SoftAttentionReadout(nn.Module):
    """Global soft attention (SATN Eqs. 1-3): the attention-weighted sum is the pooled vector."""

    def __init__(self, dim: int, energy_dim: int | None = None):
        super().__init__()
        self.attn = SoftAttention(dim, energy_dim)

    def forward(self, h: Tensor, lengths: Tensor, weights: bool = False) -> tuple[Tensor, Tensor]:
        """h: (B, T, D) -> context (B, D), weights (B, T) (always: they are the pooling)."""
        return self.attn(h, lengths)


class PoolReadout(nn.Module):
    """No attention: the encoded sequence pooled over valid frames (mean or max)."""

    def __init__(self, pooling: str = "mean"):
        super().__init__()
        if pooling not in POOL:
            raise ValueError(f"pooling must be one of {sorted(POOL)}, not {pooling!r}")
        self.pool = POOL[pooling]

    def forward(self, h: Tensor, lengths: Tensor, weights: bool = False) -> tuple[Tensor, None]:
        """h: (B, T, D) -> pooled (B, D), no attention."""
        return self.pool(h, lengths), None


class SERModel(nn.Module):
    """Emotion classifier over variable-length feature sequences."""

    def __init__(self, encoder: nn.Module, readout: nn.Module, dim: int, n_classes: int,
                 dropout: float):
        super().__init__()
        self.encoder, self.readout = encoder, readout
        self.head = nn.Sequential(Dropout(dropout), nn.Linear(dim, n_classes))

    def forward(self, x: Tensor, lengths: Tensor, return_maps: bool = False) -> ModelOutput:
        """x: (B, T, F) padded features, lengths: (B,) -> ModelOutput (maps when asked)."""
        layers = self.encoder.forward_layers(x, lengths)  # each (B, T, D)
        aux: dict[str, Tensor] = {}
        if isinstance(layers, tuple):  # (layers, named auxiliary losses)
            layers, aux = layers
        # (B, D), attention weights (self-attention's only when maps are asked for)
        pooled, attn = self.readout(layers[-1], lengths, weights=return_maps)
        maps: dict[str, Tensor] = {}
        if return_maps:
            maps = {f"encoder.layer{i}": a for i, a in enumerate(layers)}
            if attn is not None:
                maps["attention"] = attn
        return ModelOutput(self.head(pooled), attn, maps, dict(aux))

    @torch.no_grad()
    def map_names(self, frame_shape: tuple[int, ...]) -> list[str]:
        """The names ``forward(..., return_maps=True)`` fills, from a one-frame probe."""
        was = self.training
        self.eval()
        x = torch.zeros(1, 2, *frame_shape, device=next(self.parameters()).device)
        names = list(self(x, torch.tensor([2], device=x.device), return_maps=True).maps)
        self.train(was)
        return names

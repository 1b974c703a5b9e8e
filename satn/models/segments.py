"""TACN's models over spectrogram segments: a per-segment front end, then a sequence model.

An utterance arrives as ``(T, S, F)``: T segments of S frames x F bins. A front
end turns each real segment into one vector (padding never reaches it), giving
the sequence ``(B, T, D)`` that any satn sequence encoder reads:

- ``deep``: R_d, the segment CNN (``model.cnn``);
- ``fusion``: R_f = ReLU(W [R_l ; R_d] + b) (``model.fusion``), where R_l is the
  VQ-VAE decoder's first-layer input D_i = z_q flattened (Eq. 1). A pretrained
  VQ-VAE (``model.vqvae.checkpoint``) is loaded here; with ``model.vqvae.finetune``
  it trains with the classifier and its losses (``vq_reconstruction``,
  ``vq_commitment``, and ``vq_codebook`` without EMA), each times
  ``model.vqvae.loss_weight``, come back as named auxiliary losses (in eval mode
  too, so that dev is scored with training's terms); otherwise it is frozen and
  kept in eval mode (no EMA updates either).

The segments reach the model normalised per frequency bin with the fold's
training statistics; a pretrained VQ-VAE saw its own corpus normalised the same
way (per bin, its own statistics), so both read standardised bins.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from satn.models.cnn import SegmentCNN, per_segment
from satn.models.masking import length_mask
from satn.models.vqvae import VQVAE


class DeepFront(nn.Module):
    """(B, T, S, F) -> R_d (B, T, out_dim)."""

    def __init__(self, cnn: SegmentCNN):
        super().__init__()
        self.cnn = cnn
        self.output_dim = cnn.output_dim

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return per_segment(self.cnn, x, lengths, self.output_dim), {}

    def represent(self, x: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        """Named per-segment representations, (B, T, D) each: R_d."""
        return {"R_d": self(x, lengths)[0]}


class FusionFront(nn.Module):
    """(B, T, S, F) -> R_f (B, T, dim) from R_l (VQ-VAE) and R_d (CNN)."""

    def __init__(self, cnn: SegmentCNN, vqvae: VQVAE, dim: int, finetune: bool,
                 loss_weight: float = 1.0):
        super().__init__()
        self.cnn, self.vqvae = cnn, vqvae
        self.finetune, self.loss_weight = finetune, loss_weight
        self.fc = nn.Linear(vqvae.latent_dim + cnn.output_dim, dim)
        self.output_dim = dim
        if not finetune:
            self.vqvae.freeze()

    def train(self, mode: bool = True) -> FusionFront:
        super().train(mode)
        if not self.finetune:  # a frozen VQ-VAE keeps its codebook: no EMA updates
            self.vqvae.eval()
        return self

    def _parts(self, seg: Tensor) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """seg: (N, S, F) real segments -> R_l, R_d, R_f and the VQ-VAE losses."""
        r_l, out = self.vqvae.latent(seg)  # (N, latent_dim)
        r_d = self.cnn(seg)  # (N, out_dim)
        r_f = torch.relu(self.fc(torch.cat([r_l, r_d], dim=-1)))  # (N, dim)
        return r_l, r_d, r_f, out.losses

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        losses: dict[str, Tensor] = {}

        def fuse(seg: Tensor) -> Tensor:
            _, _, r_f, vq_losses = self._parts(seg)
            losses.update(vq_losses)
            return r_f

        r_f = per_segment(fuse, x, lengths, self.output_dim)
        if not self.finetune:
            return r_f, {}
        # in eval too: the engine scores dev with the terms it trained with
        return r_f, {k: self.loss_weight * v for k, v in losses.items()}

    def represent(self, x: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        """Named per-segment representations, (B, T, D) each: R_l, R_d and R_f."""
        mask = length_mask(lengths, x.shape[1])
        parts = self._parts(x[mask])[:3]
        out = {}
        for name, v in zip(("R_l", "R_d", "R_f"), parts, strict=True):
            out[name] = v.new_zeros(*mask.shape, v.shape[-1])
            out[name][mask] = v
        return out


class SegmentSequenceEncoder(nn.Module):
    """A front end (deep or fusion) followed by a sequence encoder over its vectors.

    ``forward_layers`` gives the front end's output as layer 0 and then every
    layer of the sequence encoder, with the front end's auxiliary losses.
    """

    def __init__(self, front: nn.Module, sequence: nn.Module):
        super().__init__()
        self.front, self.sequence = front, sequence
        self.output_dim = sequence.output_dim

    def forward_layers(self, x: Tensor, lengths: Tensor) -> tuple[list[Tensor], dict[str, Tensor]]:
        """x: (B, T, S, F), lengths: (B,) -> ([(B, T, D_i)...], aux losses by name)."""
        r, aux = self.front(x, lengths)
        return [r, *self.sequence.forward_layers(r, lengths)], aux

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        return self.forward_layers(x, lengths)[0][-1]

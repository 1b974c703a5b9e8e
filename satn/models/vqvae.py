"""VQ-VAE over spectrogram segments (van den Oord et al. 2017; TACN Sec. 2.1, Eq. 1).

A segment ``(S, F)`` (32 frames x 129 bins) is encoded by strided 2D
convolutions into a grid of vectors ``z_e``, each replaced by its nearest
codebook entry ``z_q``, and decoded back to ``(S, F)``. TACN's latent
representation R_l is the decoder's first-layer input ``D_i = z_q``, flattened
per segment.

The quantiser is ``vector_quantize_pytorch.VectorQuantize`` rather than a
hand-written look-up: it gives the nearest-neighbour search, EMA codebook
updates, k-means initialisation and dead-code restarts (a code whose EMA usage
falls below ``dead_code_threshold`` is re-seeded from the batch), all tested
upstream. It is configured for the paper's quantiser: plain straight-through
gradient (its rotation trick off) and no loss of its own; the named losses are
computed here so that each is logged and weighted by name:

- ``vq_commitment`` = beta * ||z_e - sg(z_q)||^2 (pulls the encoder to its codes);
- ``vq_codebook`` = ||sg(z_e) - z_q||^2 (moves the codes), only when the codebook
  is learned by gradient (``ema=False``); with EMA the codebook follows the
  running means of its assigned vectors instead (van den Oord et al., App. A.1),
  so that loss has nothing to train and is not returned;
- ``vq_reconstruction`` = mean squared error of the decoded segment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn


@dataclass
class VQOutput:
    """recon: (N, S, F); z_q, z_e: (N, D, S', F'); codes: (N, S', F') int64; losses by name."""

    recon: Tensor
    z_e: Tensor
    z_q: Tensor
    codes: Tensor
    losses: dict[str, Tensor]


def perplexity(codes: Tensor, codebook_size: int) -> Tensor:
    """exp(entropy) of the code usage in ``codes``: 1 = one code used, K = all used evenly."""
    counts = torch.bincount(codes.reshape(-1), minlength=codebook_size).to(torch.float64)
    p = counts / counts.sum().clamp(min=1)
    return torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum()).to(torch.float32)


class _Residual(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x)))), as in van den Oord et al.'s encoder and decoder."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  nn.ReLU(), nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class VQVAE(nn.Module):
    """Encoder -> vector quantiser -> decoder over ``(N, S, F)`` segments.

    ``downsample`` stride-2 convolutions halve both axes each; the input is
    zero-padded up to a multiple of ``2**downsample`` on both axes first (129 bins
    -> 132), and the decoder, mirroring the encoder with transposed convolutions,
    crops its output back to ``(S, F)``.
    """

    def __init__(self, segment_shape: tuple[int, int], hidden: int = 64, code_dim: int = 16,
                 codebook_size: int = 256, downsample: int = 2, beta: float = 0.25,
                 ema: bool = True, decay: float = 0.99, dead_code_threshold: float = 2.0,
                 kmeans_init: bool = True):
        super().__init__()
        if downsample < 1:
            raise ValueError(f"downsample must be at least 1, not {downsample}")
        self.segment_shape = tuple(segment_shape)
        self.codebook_size, self.code_dim, self.beta, self.ema = codebook_size, code_dim, beta, ema
        step = 2**downsample
        self.pad = tuple(-n % step for n in self.segment_shape)  # (frames, bins) to add
        enc: list[nn.Module] = []
        for i in range(downsample):
            enc += [nn.Conv2d(1 if i == 0 else hidden, hidden, 4, stride=2, padding=1), nn.ReLU()]
        enc += [nn.Conv2d(hidden, hidden, 3, padding=1), _Residual(hidden), nn.ReLU(),
                nn.Conv2d(hidden, code_dim, 1)]
        self.encoder = nn.Sequential(*enc)
        # imported here: it pulls in torch._dynamo (2-3 s), which commands that build no
        # VQ-VAE and no optimiser (report, compare, predict) need not wait for
        from vector_quantize_pytorch import VectorQuantize

        self.quantizer = VectorQuantize(
            dim=code_dim, codebook_size=codebook_size, decay=decay, commitment_weight=0.0,
            kmeans_init=kmeans_init, threshold_ema_dead_code=dead_code_threshold,
            rotation_trick=False,  # the paper's plain straight-through estimator
            ema_update=ema, learnable_codebook=not ema)
        dec: list[nn.Module] = [nn.Conv2d(code_dim, hidden, 3, padding=1), _Residual(hidden)]
        for i in range(downsample):
            last = i == downsample - 1
            dec += [nn.ReLU(), nn.ConvTranspose2d(hidden, 1 if last else hidden, 4, stride=2,
                                                  padding=1)]
        self.decoder = nn.Sequential(*dec)
        with torch.no_grad():
            grid = self.encode(torch.zeros(1, *self.segment_shape)).shape[-2:]
        self.grid = (int(grid[0]), int(grid[1]))

    def freeze(self) -> VQVAE:
        """No more learning of any kind: no gradients, no EMA, no k-means initialisation.

        (The quantiser would otherwise run its k-means initialisation on the first
        batch it sees, even in eval mode.)
        """
        self.requires_grad_(False)
        self.quantizer._codebook.initted.fill_(True)
        return self.eval()

    @property
    def latent_dim(self) -> int:
        """Size of R_l: the flattened decoder input ``z_q`` of one segment."""
        return self.code_dim * self.grid[0] * self.grid[1]

    def quantize(self, z_e: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """z_e: (N, D, h, w) -> z_q with straight-through gradient, codes (N, h, w), losses."""
        n, d, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(n, h * w, d)  # (N, h*w, D), channel last
        z_st, codes, _ = self.quantizer(flat)  # z_st = z_e + sg(z_q - z_e) when training
        codes = codes.reshape(n, h, w)
        z_q = self.quantizer.codebook[codes.reshape(n, h * w)]  # (N, h*w, D): the codes themselves
        losses = {"vq_commitment": self.beta * (flat - z_q.detach()).square().mean()}
        if not self.ema:
            losses["vq_codebook"] = (flat.detach() - z_q).square().mean()
        if not self.training:  # eval: no straight-through needed, the codes are the output
            z_st = z_q
        return z_st.reshape(n, h, w, d).permute(0, 3, 1, 2), codes, losses

    def encode(self, x: Tensor) -> Tensor:
        """x: (N, S, F) -> z_e: (N, D, h, w)."""
        x = nn.functional.pad(x, (0, self.pad[1], 0, self.pad[0]))
        return self.encoder(x.unsqueeze(1))

    def decode(self, z_q: Tensor) -> Tensor:
        """z_q: (N, D, h, w) -> (N, S, F)."""
        s, f = self.segment_shape
        return self.decoder(z_q)[:, 0, :s, :f]

    def forward(self, x: Tensor) -> VQOutput:
        """x: (N, S, F) normalised segments -> :class:`VQOutput`."""
        z_e = self.encode(x)  # (N, D, h, w)
        z_q, codes, losses = self.quantize(z_e)
        recon = self.decode(z_q)
        losses["vq_reconstruction"] = (recon - x).square().mean()
        return VQOutput(recon, z_e, z_q, codes, losses)

    def latent(self, x: Tensor) -> tuple[Tensor, VQOutput]:
        """x: (N, S, F) -> R_l (N, latent_dim): the decoder's first-layer input, flattened."""
        out = self(x)
        return out.z_q.flatten(1), out


def build_vqvae(cfg, segment_shape: tuple[int, int]) -> VQVAE:
    """A :class:`VQVAE` with the sizes of ``cfg`` (a ``satn.config.VQVAESettings``)."""
    return VQVAE(tuple(segment_shape), cfg.hidden, cfg.code_dim, cfg.codebook_size,
                 cfg.downsample, cfg.beta, cfg.ema, cfg.decay, cfg.dead_code_threshold,
                 cfg.kmeans_init)


ARTIFACT_FORMAT = "satn-vqvae/1"


class ArtifactError(ValueError):
    """A file that is not a readable satn VQ-VAE artifact."""


def read_artifact(path: str | Path, device: str | torch.device = "cpu"
                  ) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(state_dict, meta) of a file written by ``satn.checkpoint.save_vqvae``."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"no file {path}")
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
        meta = json.loads(blob["meta"])
    except Exception as e:
        raise ArtifactError(f"{path} is not a satn VQ-VAE ({e})") from e
    if meta.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(f"{path} has format {meta.get('format')!r}, not {ARTIFACT_FORMAT}")
    return blob["state_dict"], meta

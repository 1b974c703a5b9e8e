"""The ASR teacher of attention transfer (SATN 4.3): an attention encoder-decoder over log-mel.

Encoder: a TCN of one-convolution layers (dilations 1, 2, 4, 8, 16) and one
self-attention block (one head, d_k = channels, residual + LayerNorm). Decoder:
an LSTM (256 units) with soft additive attention over the encoder (Bahdanau:
energy ``v^T tanh(W_k h_t + W_q s)``, softmax over valid frames), emitting
phoneme tokens of :mod:`satn.phonemes`; teacher forcing in training, greedy or
beam search at inference. The decoder reads the encoder averaged over
``decoder_stride`` frames (cheaper attention; the maps keep the full rate). With ``ctc_head`` a linear CTC head on the encoder
joins the loss (joint CTC-attention, Kim et al. 2017): a departure from the
paper, off by default, that makes the attention learn to align much sooner on
small corpora.

The model takes features exactly as stored in the Arrow dataset and normalises
them with its own statistics (buffers), so a student's batches (normalised with
the student's fold statistics, or raw) never have to match the teacher's.
:meth:`ASRTeacher.maps` is what attention transfer reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from satn.config import _check
from satn.models.dropout import Dropout
from satn.models.masking import length_mask
from satn.models.tcn import TCN


@dataclass(frozen=True)
class TeacherModelConfig:
    """Sizes of the ASR teacher (SATN 4.3: 5 one-convolution layers, an LSTM of 256)."""

    channels: int = 64  # as the SER TCN's default (the paper gives no teacher width)
    kernel_size: int = 3
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16)
    causal: bool = False  # the teacher reads whole utterances: both sides of each frame
    dropout: float = 0.1
    decoder_units: int = 256
    attention_dim: int = 64
    embed_dim: int = 64
    # the decoder (and CTC head) read the encoder averaged over windows of this many
    # frames: additive attention costs B x T x attention_dim per output step, and 10 ms
    # frames are far finer than phonemes; the maps keep the full frame rate
    decoder_stride: int = 4
    ctc_head: bool = False

    def __post_init__(self) -> None:
        _check("teacher.model", {
            "channels": (self.channels >= 1, f"must be at least 1, not {self.channels}"),
            "kernel_size": (self.kernel_size >= 1, f"must be at least 1, not {self.kernel_size}"),
            "dilations": (bool(self.dilations) and min(self.dilations) >= 1,
                          f"must be one or more positive integers, not {list(self.dilations)}"),
            "dropout": (0.0 <= self.dropout < 1.0, f"must be in [0, 1), not {self.dropout}"),
            "decoder_units": (self.decoder_units >= 1, f"must be at least 1, not {self.decoder_units}"),
            "attention_dim": (self.attention_dim >= 1, f"must be at least 1, not {self.attention_dim}"),
            "embed_dim": (self.embed_dim >= 1, f"must be at least 1, not {self.embed_dim}"),
            "decoder_stride": (self.decoder_stride >= 1,
                               f"must be at least 1, not {self.decoder_stride}"),
        })


@dataclass
class TeacherOutput:
    """Training outputs. logits: (B, U, V) per target step; ctc_logits: (B, T', V) or None
    over the pooled frames (T' = ceil(T / decoder_stride)), valid up to ``lengths`` (B,);
    alignment: (B, U, T') decoder attention weights."""

    logits: Tensor
    ctc_logits: Tensor | None
    alignment: Tensor
    lengths: Tensor


class _SelfAttention(nn.Module):
    """One head, d_k = dim: y = LayerNorm(x + softmax(Q K^T / sqrt(d)) V), padded keys excluded."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.norm = nn.LayerNorm(dim)
        self.drop = Dropout(dropout)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """x: (B, T, D) -> y: (B, T, D) zero on padding, attention: (B, T, T) zero on padding."""
        mask = length_mask(lengths, x.shape[1])  # (B, T)
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        scores = (q @ k.transpose(1, 2)) * self.scale  # (B, T, T)
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        # rows of padded queries: zero (a length-0 row would be all -inf -> NaN)
        attn = scores.softmax(-1).masked_fill(~mask[:, :, None], 0.0)
        y = self.norm(x + self.drop(attn @ v)) * mask[..., None].to(x.dtype)
        return y, attn


class ASRTeacher(nn.Module):
    """Features (B, T, F), un-normalised -> phoneme tokens; see the module docstring."""

    def __init__(self, input_dim: int, n_tokens: int, cfg: TeacherModelConfig | None = None,
                 *, sos_id: int = 1, eos_id: int = 2):
        super().__init__()
        cfg = cfg or TeacherModelConfig()
        self.cfg, self.input_dim, self.n_tokens = cfg, input_dim, n_tokens
        self.sos_id, self.eos_id = sos_id, eos_id
        self.register_buffer("feature_mean", torch.zeros(input_dim))
        self.register_buffer("feature_std", torch.ones(input_dim))
        self.tcn = TCN(input_dim, cfg.channels, cfg.dilations, cfg.kernel_size, cfg.dropout,
                       cfg.causal, convs_per_block=1)
        self.attention = _SelfAttention(cfg.channels, cfg.dropout)
        self.ctc = nn.Linear(cfg.channels, n_tokens) if cfg.ctc_head else None
        # decoder
        self.embed = nn.Embedding(n_tokens, cfg.embed_dim)
        self.key = nn.Linear(cfg.channels, cfg.attention_dim)
        self.query = nn.Linear(cfg.decoder_units, cfg.attention_dim, bias=False)
        self.energy = nn.Linear(cfg.attention_dim, 1, bias=False)
        self.lstm = nn.LSTMCell(cfg.embed_dim + cfg.channels, cfg.decoder_units)
        self.out = nn.Linear(cfg.decoder_units + cfg.channels, n_tokens)
        self.drop = Dropout(cfg.dropout)

    # ------------------------------------------------------------ encoder
    def set_normalizer(self, mean, std) -> None:
        """Feature statistics of the training side, (F,) each; kept in the state dict."""
        self.feature_mean.copy_(torch.tensor(np.array(mean, dtype=np.float32)).reshape(-1))
        self.feature_std.copy_(torch.tensor(np.array(std, dtype=np.float32)).reshape(-1))

    def encode(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """x: (B, T, F) raw features -> (B, T, C) encoder output and the named maps."""
        mask = length_mask(lengths, x.shape[1])
        fmask = mask.unsqueeze(1).to(x.dtype)  # (B, 1, T)
        x = (x - self.feature_mean) / self.feature_std * mask[..., None].to(x.dtype)
        maps: dict[str, Tensor] = {}
        h = x.transpose(1, 2)  # (B, F, T)
        for i, block in enumerate(self.tcn.blocks):
            h = block(h, fmask)
            maps[f"encoder.layer{i}"] = h.transpose(1, 2)  # (B, T, C)
        y, attn = self.attention(h.transpose(1, 2), lengths)
        maps["encoder.attention"] = attn
        return y, maps

    def memory(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """What the decoder reads: the encoder output pooled by ``decoder_stride``.

        -> (B, T', C) with T' = ceil(T / stride), zero past each pooled length;
        (B,) pooled lengths; the named maps at the full frame rate. Windows start at
        frame 0 and average valid frames only, so padding changes nothing.
        """
        enc, maps = self.encode(x, lengths)
        s = self.cfg.decoder_stride
        if s == 1:
            return enc, lengths, maps
        b, t, c = enc.shape
        pad = (-t) % s
        enc = nn.functional.pad(enc, (0, 0, 0, pad)).view(b, (t + pad) // s, s, c).sum(2)
        valid = length_mask(lengths, t + pad).view(b, -1, s).sum(2).clamp(min=1)  # (B, T')
        return enc / valid[..., None].to(enc.dtype), (lengths + s - 1) // s, maps

    def maps(self, x: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        """Named encoder maps of raw features x: (B, T, F), lengths: (B,).

        ``encoder.layer0`` .. ``encoder.layer{L-1}``: (B, T, C) activations, zero on
        padding; ``encoder.attention``: (B, T, T) self-attention weights, each valid
        row summing to one over valid frames, zero on padded rows and columns.
        Same frame rate as the input.
        """
        return self.encode(x, lengths)[1]

    # ------------------------------------------------------------ decoder
    def _attend(self, keys: Tensor, enc: Tensor, mask: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """keys (N, T, A), enc (N, T, C), mask (N, T), state s (N, H) -> context (N, C), weights (N, T)."""
        e = self.energy(torch.tanh(keys + self.query(s)[:, None, :])).squeeze(-1)  # (N, T)
        a = e.masked_fill(~mask, float("-inf")).softmax(-1)
        return (a[:, :, None] * enc).sum(1), a

    def _step(self, tokens: Tensor, state: tuple[Tensor, Tensor], keys: Tensor, enc: Tensor,
              mask: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor], Tensor]:
        """One decoder step from previous tokens (N,) -> logits (N, V), new state, weights (N, T)."""
        context, a = self._attend(keys, enc, mask, state[0])
        h, c = self.lstm(torch.cat([self.embed(tokens), context], -1), state)
        logits = self.out(self.drop(torch.cat([h, context], -1)))
        return logits, (h, c), a

    def _start(self, n: int, like: Tensor) -> tuple[Tensor, Tensor]:
        z = like.new_zeros(n, self.cfg.decoder_units)
        return z, z.clone()

    def forward(self, x: Tensor, lengths: Tensor, targets: Tensor) -> TeacherOutput:
        """Teacher forcing. x: (B, T, F) raw, lengths: (B,), targets: (B, U) token ids
        ending in ``<eos>``, padded with anything (the loss masks it) -> logits (B, U, V)."""
        enc, lengths, _ = self.memory(x, lengths)
        mask = length_mask(lengths, enc.shape[1])
        keys = self.key(enc)
        prev = torch.cat([targets.new_full((targets.shape[0], 1), self.sos_id), targets[:, :-1]], 1)
        state = self._start(x.shape[0], enc)
        logits, align = [], []
        for u in range(targets.shape[1]):
            out, state, a = self._step(prev[:, u], state, keys, enc, mask)
            logits.append(out)
            align.append(a)
        ctc = self.ctc(enc) if self.ctc is not None else None
        return TeacherOutput(torch.stack(logits, 1), ctc, torch.stack(align, 1), lengths)

    @torch.no_grad()
    def greedy(self, x: Tensor, lengths: Tensor, max_len: int | None = None) -> list[list[int]]:
        """Most likely token at each step, per utterance, without ``<eos>``."""
        limits = [max_len or _max_len(int(n)) for n in lengths]  # per utterance: batch-blind
        enc, lengths, _ = self.memory(x, lengths)
        mask = length_mask(lengths, enc.shape[1])
        keys = self.key(enc)
        b = x.shape[0]
        tokens = torch.full((b,), self.sos_id, dtype=torch.long, device=x.device)
        state = self._start(b, enc)
        out: list[list[int]] = [[] for _ in range(b)]
        done = [False] * b
        for step in range(max(limits)):
            logits, state, _ = self._step(tokens, state, keys, enc, mask)
            tokens = logits.argmax(-1)
            for i, tok in enumerate(tokens.tolist()):
                if done[i]:
                    continue
                if tok == self.eos_id or step >= limits[i]:
                    done[i] = True
                else:
                    out[i].append(tok)
            if all(done):
                break
        return out

    @torch.no_grad()
    def beam(self, x: Tensor, lengths: Tensor, width: int = 4, max_len: int | None = None,
             length_penalty: float = 1.0) -> list[list[int]]:
        """Beam search per utterance; hypotheses ranked by log-probability / length**penalty."""
        enc_all, pooled, _ = self.memory(x, lengths)
        keys_all = self.key(enc_all)
        results = []
        for i in range(x.shape[0]):
            t = int(pooled[i])
            enc, keys = enc_all[i : i + 1, :t], keys_all[i : i + 1, :t]
            results.append(self._beam_one(enc, keys, width, max_len or _max_len(int(lengths[i])),
                                          length_penalty))
        return results

    def _beam_one(self, enc: Tensor, keys: Tensor, width: int, max_len: int,
                  length_penalty: float) -> list[int]:
        mask = torch.ones(1, enc.shape[1], dtype=torch.bool, device=enc.device)
        hyps: list[list[int]] = [[]]
        scores = enc.new_zeros(1)
        state = self._start(1, enc)
        tokens = torch.full((1,), self.sos_id, dtype=torch.long, device=enc.device)
        finished: list[tuple[float, list[int]]] = []
        for step in range(max_len):
            n = len(hyps)
            logits, state, _ = self._step(tokens, state, keys.expand(n, -1, -1),
                                          enc.expand(n, -1, -1), mask.expand(n, -1))
            total = (scores[:, None] + logits.log_softmax(-1)).flatten()  # (n * V,)
            top = total.topk(min(width * 2, total.numel()))
            keep_rows, keep_tok, keep_scores = [], [], []
            for score, flat in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                row, tok = divmod(flat, self.n_tokens)
                if tok == self.eos_id:
                    finished.append((score / max(len(hyps[row]) + 1, 1) ** length_penalty,
                                     hyps[row]))
                elif len(keep_rows) < width:
                    keep_rows.append(row)
                    keep_tok.append(tok)
                    keep_scores.append(score)
            best_open = max(keep_scores, default=-math.inf) / (step + 2) ** length_penalty
            if len(finished) >= width and max(f[0] for f in finished) >= best_open:
                break
            if not keep_rows:
                break
            rows = torch.tensor(keep_rows, device=enc.device)
            hyps = [hyps[r] + [t] for r, t in zip(keep_rows, keep_tok, strict=True)]
            scores = torch.tensor(keep_scores, device=enc.device, dtype=enc.dtype)
            state = (state[0][rows], state[1][rows])
            tokens = torch.tensor(keep_tok, device=enc.device)
        if not finished:  # nothing ended within max_len: the best open hypothesis
            return hyps[int(scores.argmax())]
        return max(finished, key=lambda f: f[0])[1]


def _max_len(frames: int) -> int:
    """Longest output to try: read speech runs ~12 phonemes a second, 100 frames a second."""
    return frames // 3 + 10

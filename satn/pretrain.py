"""Pretrain a VQ-VAE on unlabeled speech: segments in, a versioned artifact out.

Labels are ignored: any corpus satn reads will do (the TACN paper used
EmoV-DB and LibriSpeech; ARCTIC, RAVDESS and the demo corpus serve here). A
share of the utterances (``PretrainConfig.heldout``, drawn by seed) is kept out
and scored every ``eval_every`` steps: reconstruction error (mean squared, on
per-bin normalised segments, so 1.0 is what predicting the bin means gives) and
codebook perplexity (exp of the entropy of code usage; 1 = a single code used).
No Ray or MLflow here: ``on_eval`` lets the caller log progress.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from satn.batching import Normalizer
from satn.config import ConfigError, PretrainConfig, VQVAESettings
from satn.devices import resolve_device
from satn.engine import seed_everything
from satn.models.vqvae import VQVAE, build_vqvae, perplexity


@dataclass(frozen=True)
class PretrainEval:
    step: int
    train_reconstruction: float  # mean over the steps since the last evaluation
    heldout_reconstruction: float
    heldout_perplexity: float
    codes_used: int  # distinct codes on the held-out side
    seconds: float  # since training started


@dataclass
class PretrainResult:
    model: VQVAE  # eval mode, on the CPU
    normalizer: Normalizer
    history: list[PretrainEval]
    train_ids: tuple[str, ...]
    heldout_ids: tuple[str, ...]
    n_train_segments: int
    n_heldout_segments: int
    examples: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (2, n, S, F): in, out

    @property
    def final(self) -> PretrainEval:
        return self.history[-1]


def split_heldout(ids: Sequence[str], share: float, seed: int) -> tuple[list[int], list[int]]:
    """Row indices (train, held out): ``share`` of the utterances, at least one each side."""
    n = len(ids)
    if n < 2:
        raise ConfigError(f"pretraining needs at least 2 utterances (one held out), got {n}")
    order = np.random.default_rng(seed).permutation(n)
    k = min(max(1, int(round(share * n))), n - 1)
    return sorted(order[k:].tolist()), sorted(order[:k].tolist())


def _segments(arrays: Sequence[np.ndarray], norm: Normalizer) -> torch.Tensor:
    """Utterances (T_i, S, F) -> all their normalised segments (N, S, F)."""
    return torch.from_numpy(np.concatenate([norm(a) for a in arrays if len(a)]))


@torch.no_grad()
def evaluate_vqvae(model: VQVAE, segments: torch.Tensor, batch_size: int = 256,
                   device: torch.device | None = None) -> tuple[float, float, int]:
    """(reconstruction MSE, perplexity, distinct codes) of ``segments`` (N, S, F)."""
    model.eval()
    device = device or next(model.parameters()).device
    total, codes = 0.0, []
    for i in range(0, len(segments), batch_size):
        x = segments[i:i + batch_size].to(device)
        out = model(x)
        total += float((out.recon - x).square().sum())
        codes.append(out.codes.reshape(-1).cpu())
    used = torch.cat(codes)
    mse = total / segments.numel()
    return mse, float(perplexity(used, model.codebook_size)), int(used.unique().numel())


def pretrain_vqvae(arrays: Sequence[np.ndarray], ids: Sequence[str], vq: VQVAESettings,
                   cfg: PretrainConfig,
                   on_eval: Callable[[PretrainEval], None] | None = None) -> PretrainResult:
    """Train a VQ-VAE on the segments of ``arrays`` (each (T_i, S, F)), labels unused."""
    if not arrays or np.ndim(arrays[0]) != 3:
        raise ConfigError("pretraining reads spectrogram segments (T, S, F): use "
                         "features.kind=spectrogram_segments")
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    train_rows, held_rows = split_heldout(ids, cfg.heldout, cfg.seed)
    # per-bin statistics from the training side only; stored with the artifact
    norm = Normalizer.fit([arrays[i] for i in train_rows])
    train = _segments([arrays[i] for i in train_rows], norm)
    held = _segments([arrays[i] for i in held_rows], norm)
    model = build_vqvae(vq, tuple(train.shape[1:])).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[PretrainEval] = []
    start, running, n_run = time.perf_counter(), 0.0, 0
    for step in range(1, cfg.steps + 1):
        model.train()
        idx = torch.randint(len(train), (min(cfg.batch_size, len(train)),), generator=gen)
        out = model(train[idx].to(device))
        loss = sum(out.losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running += float(out.losses["vq_reconstruction"].detach())
        n_run += 1
        if step % cfg.eval_every == 0 or step == cfg.steps:
            mse, ppl, used = evaluate_vqvae(model, held, device=device)
            ev = PretrainEval(step, running / n_run, mse, ppl, used, time.perf_counter() - start)
            running, n_run = 0.0, 0
            history.append(ev)
            if on_eval is not None:
                on_eval(ev)
    model = model.cpu().eval()
    with torch.no_grad():  # a few held-out segments and their reconstructions, for a figure
        pick = torch.linspace(0, len(held) - 1, min(4, len(held))).long()
        examples = np.stack([held[pick].numpy(), model(held[pick]).recon.numpy()])
    return PretrainResult(model, norm, history, tuple(ids[i] for i in train_rows),
                          tuple(ids[i] for i in held_rows), len(train), len(held), examples)

"""Training-side augmentation and chunking of padded batches ``(x, lengths)``.

SpecAugment draws its masks with torchaudio (``mask_along_axis_iid``, which uses
torch's global generator: reproducible from the run's seed when folds train one
after another, not when several folds share a process in threads). Mixup takes
its weight and pairing from the caller. Nothing here runs at evaluation: the engine calls
it on training batches only.
"""

from __future__ import annotations

import torch
import torchaudio.functional as AF
from torch import Tensor


def spec_augment(x: Tensor, lengths: Tensor, *, time_masks: int, time_mask_frames: int,
                 freq_masks: int, freq_mask_bands: int, n_bands: int | None = None) -> Tensor:
    """Time and frequency masks inside each item's valid frames; masked values become 0.

    Args:
        x: (B, T, D) log-mel frames (D = C * n_bands: static | delta | delta2) or
            (B, T, *F) with the frequency axis last (spectrogram segments).
        lengths: (B,) valid frames; frames past an item's length stay as they are.
        n_bands: bands per channel of 2-D input (``features.n_mels``): a frequency mask
            covers the same bands of every channel. Default: D (one channel).
    Returns:
        a new tensor of x's shape and dtype.
    """
    out = x.clone()
    if not (time_masks or freq_masks):
        return out
    b, t_max = x.shape[:2]
    if x.dim() == 3:
        bands = n_bands or x.shape[2]
        if x.shape[2] % bands:
            raise ValueError(f"feature width {x.shape[2]} is not a multiple of n_bands={bands}")
        view = out.view(b, t_max, x.shape[2] // bands, bands)  # (B, T, C, bands)
    else:
        view = out.view(b, t_max, -1, x.shape[-1])  # (B, T, rest, F)
    n_freq = view.shape[-1]
    for i, t in enumerate(lengths.tolist()):
        keep = torch.ones(1, 1, n_freq, t, device=x.device, dtype=x.dtype)  # (1, 1, freq, time)
        for _ in range(time_masks):
            keep = AF.mask_along_axis_iid(keep, time_mask_frames, 0.0, axis=3)
        for _ in range(freq_masks):
            keep = AF.mask_along_axis_iid(keep, freq_mask_bands, 0.0, axis=2)
        view[i, :t] *= keep[0, 0].T[:, None, :]  # (t, 1, freq) over every channel
    return out


def mixup(x: Tensor, lengths: Tensor, y: Tensor, lam: float,
          perm: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Mix item i with item ``perm[i]`` of the batch.

    Returns ``(x_mixed, lengths_mixed, y_other)``: ``x_mixed = lam * x + (1 - lam) *
    x[perm]``, lengths the longer of each pair (padding is zero, so the shorter one
    adds silence after its end), ``y_other = y[perm]``; the loss is
    ``lam * CE(y) + (1 - lam) * CE(y_other)``. The caller draws ``lam`` ~ Beta(a, a).
    """
    perm = perm.to(x.device)
    mixed = lam * x + (1 - lam) * x[perm]
    return mixed, torch.maximum(lengths, lengths[perm]), y[perm]


def chunk_starts(length: int, chunk: int, hop: int) -> list[int]:
    """Starts of the chunks covering ``length`` frames: every ``hop`` frames, the last
    ending at the last frame; one chunk (start 0) when ``chunk >= length``."""
    if chunk >= length:
        return [0]
    starts = list(range(0, length - chunk + 1, hop))
    if starts[-1] + chunk < length:
        starts.append(length - chunk)
    return starts

"""Training-side augmentation and chunking of padded batches ``(x, lengths)``.

Gain and noise (:class:`Levels`) work on the log-power values under the normalisation.
SpecAugment draws its masks with torchaudio (``mask_along_axis_iid``, which uses
torch's global generator: reproducible from the run's seed when folds train one
after another, not when several folds share a process in threads). Mixup takes
its weight and pairing from the caller. Nothing here runs at evaluation: the engine calls
it on training batches only.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torchaudio.functional as AF
from torch import Tensor

from satn.features import hold_last


def spec_augment(x: Tensor, lengths: Tensor, *, time_masks: int, time_mask_frames: int,
                 freq_masks: int, freq_mask_bands: int, n_bands: int | None = None,
                 banded: int | None = None) -> Tensor:
    """Time and frequency masks inside each item's valid frames; masked values become 0.

    Args:
        x: (B, T, D) log-mel frames (static | delta | delta2, then any ``lld``
            descriptors) or (B, T, *F) with the frequency axis last (spectrogram segments).
        lengths: (B,) valid frames; frames past an item's length stay as they are.
        n_bands: bands per channel of 2-D input (``features.n_mels``): a frequency mask
            covers the same bands of every channel. Default: the banded width (one channel).
        banded: leading values of a 2-D frame that are bands (``FeatureConfig.banded``);
            the rest (descriptors) are masked in time only. Default: all D.
    Returns:
        a new tensor of x's shape and dtype.
    """
    out = x.clone()
    if not (time_masks or freq_masks):
        return out
    b, t_max = x.shape[:2]
    rest = None
    if x.dim() == 3:
        width = banded or x.shape[2]
        bands = n_bands or width
        if width % bands or width > x.shape[2]:
            raise ValueError(f"banded width {width} of {x.shape[2]} is not a multiple of "
                             f"n_bands={bands}")
        head = out[..., :width].contiguous()
        view = head.view(b, t_max, width // bands, bands)  # (B, T, C, bands)
        rest = out[..., width:]  # (B, T, D - width), a view: masked in place
    else:
        head = out
        view = out.view(b, t_max, -1, x.shape[-1])  # (B, T, rest, F)
    n_freq = view.shape[-1]
    for i, t in enumerate(lengths.tolist()):
        keep = torch.ones(1, 1, n_freq, t, device=x.device, dtype=x.dtype)  # (1, 1, freq, time)
        for _ in range(time_masks):
            keep = AF.mask_along_axis_iid(keep, time_mask_frames, 0.0, axis=3)
        if rest is not None:  # a time mask spans every frequency: any row of keep holds it
            rest[i, :t] *= keep[0, 0, 0][:, None]
        for _ in range(freq_masks):
            keep = AF.mask_along_axis_iid(keep, freq_mask_bands, 0.0, axis=2)
        view[i, :t] *= keep[0, 0].T[:, None, :]  # (t, 1, freq) over every channel
    if rest is not None:
        out[..., :head.shape[-1]] = head
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


DB = math.log(10.0) / 10.0  # a power ratio of 1 dB in natural-log units (features are ln power)


@dataclass(frozen=True, eq=False)
class Levels:
    """Random gain and additive noise on training batches of normalised log-power features.

    The features are natural logs of (mel) power, standardised before they reach the
    model: the model sees ``y = (raw - shift) / scale`` per index of the last axis, with
    ``(shift, scale)`` per utterance (``affine[id]``: the fold's training statistics, and
    with per-speaker normalisation the speaker's too). Both changes are worked out on
    ``raw`` and added to ``y`` as ``change / scale``, so they are exact however the
    normalisation is done, and padding stays zero.

    Gain: a gain of g dB multiplies every power by 10**(g/10), i.e. adds ``g * DB`` to each
    static value (log mel bands, or log spectrogram bins); deltas are differences of
    statics and stay as they are. g ~ U(-gain_db, gain_db) per utterance and epoch.
    (Where a band sits at the extractor's floor a real gain would leave it there; speech
    never does.)

    Noise: stationary white noise at an SNR ~ U(noise_snr_db, noise_snr_db + 10) dB per
    utterance and epoch, added in the power domain, ``log(exp(raw) + n_m)``, with n_m the
    expected power of white noise in band m (``noise_profile``: the mel filters' response
    to a flat spectrum, or 1 per bin for spectrogram segments), scaled so that noise power
    over all bands is the utterance's mean frame power (over the frames served) divided by
    10**(SNR/10). What this leaves out: the frame-to-frame randomness of a real noise
    periodogram (its expectation is added) and the signal x noise cross term (zero in
    expectation); the SNR is one of mel band powers, which weight frequencies as the
    filters do, not of waveform power. Against white noise added to the waveform at the
    same nominal SNR (three RAVDESS utterances, 12-16 dB): statics rose by 4.8-7.3
    natural-log units on average against 4.0-6.4, and the noisy deltas spread less
    (std 0.22-0.24 against 0.33), the missing periodogram fluctuation. The change c = log(1 + n / power) >= 0 lifts quiet bins more than loud
    ones and never lowers one. Deltas are recomputed as stored delta + delta(c) (and
    delta-delta + delta(delta(c))) with the extractor's regression width: exact, since
    deltas are linear, except over the last ``delta_width // 2`` frames at the edges of a
    training crop, where c is held rather than seen.

    Draws come from a generator seeded by ``(seed, epoch, utterance id)``: reproducible
    whatever the batch order and whatever else runs in the process; torch's global
    generator is never touched.
    """

    gain_db: float
    noise_snr_db: float | None
    n_static: int  # static values on the last axis (n_mels of log-mel | all bins of segments)
    deltas: int  # delta channels after the statics (log-mel), 0 for segments
    delta_width: int
    noise_profile: np.ndarray  # (n_static,) expected band power of unit white noise
    affine: Mapping[str, tuple[np.ndarray, np.ndarray]]  # id -> (shift, scale), each (D,)
    seed: int = 0

    @property
    def active(self) -> bool:
        return self.gain_db > 0 or self.noise_snr_db is not None

    def draws(self, uid: str, epoch: int) -> tuple[float, float | None]:
        """(gain in dB, SNR in dB or None) of utterance ``uid`` in ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch, 3, zlib.crc32(uid.encode())])
        gain = float(rng.uniform(-self.gain_db, self.gain_db)) if self.gain_db > 0 else 0.0
        snr = (float(rng.uniform(self.noise_snr_db, self.noise_snr_db + 10))
               if self.noise_snr_db is not None else None)
        return gain, snr

    def __call__(self, x: Tensor, lengths: Tensor, ids: Sequence[str], epoch: int) -> Tensor:
        """(B, T, *rest, D) normalised features, (B,) lengths, B ids -> a new tensor of x's shape."""
        if not self.active:
            return x
        b, t_max = x.shape[:2]
        shape = (b,) + (1,) * (x.dim() - 2) + (x.shape[-1],)  # broadcast over time and rest
        shift = torch.from_numpy(np.stack([self.affine[u][0] for u in ids])).to(x).view(shape)
        scale = torch.from_numpy(np.stack([self.affine[u][1] for u in ids])).to(x).view(shape)
        draws = [self.draws(u, epoch) for u in ids]
        valid = (torch.arange(t_max, device=x.device)[None, :] < lengths[:, None].to(x.device))
        valid = valid.view((b, t_max) + (1,) * (x.dim() - 2)).to(x.dtype)  # (B, T, 1[, 1])
        m = self.n_static
        change = torch.zeros_like(x)
        if self.noise_snr_db is not None:
            raw = x[..., :m] * scale[..., :m] + shift[..., :m]
            power = raw.double().exp() * valid.double()
            frames = valid.flatten(1).sum(1) * int(np.prod(x.shape[2:-1]))  # frame rows
            mean_power = power.flatten(1).sum(1) / frames.double().clamp(min=1)  # (B,)
            snr = torch.tensor([s for _, s in draws], dtype=torch.float64, device=x.device)
            profile = torch.from_numpy(self.noise_profile).to(x.device, torch.float64)
            noise = (mean_power * 10 ** (-snr / 10))[:, None] * profile / profile.sum()  # (B, m)
            noise = noise.view((b,) + (1,) * (x.dim() - 2) + (m,))
            c = (torch.log1p(noise / raw.double().exp())).to(x.dtype)  # >= 0
            change[..., :m] = c
            if x.dim() == 3:  # log-mel: static | delta | delta2 along the last axis
                d = c.transpose(1, 2)  # (B, m, T), as compute_deltas takes it
                for k in range(1, self.deltas + 1):
                    d = AF.compute_deltas(hold_last(d, lengths.to(x.device)),
                                          win_length=self.delta_width)
                    change[..., k * m:(k + 1) * m] = d.transpose(1, 2)
        gain = torch.tensor([g for g, _ in draws], dtype=x.dtype, device=x.device) * DB
        change[..., :m] += gain.view((b,) + (1,) * (x.dim() - 1))
        return x + change / scale * valid


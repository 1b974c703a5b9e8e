"""Waveforms -> feature matrices, in batches on CPU or GPU. No file I/O here.

Two kinds (``FeatureConfig.kind``):

``logmel`` (SATN)
    40-band log-mel power spectrogram, 25 ms Hann window, 10 ms hop, 512-point
    FFT, ``torch.stft(center=True, pad_mode="constant")``, Slaney mel scale and
    Slaney filter norm, ``log(max(power, log_floor))``; then regression deltas
    over ``delta_width`` frames with edge replication (torchaudio's
    ``compute_deltas``, equal to ``librosa.feature.delta(width=5, mode="nearest")``)
    and delta-delta = deltas of the deltas. Output (T, n_mels * (1 + deltas)):
    static | delta | delta2 along the feature axis, T = 1 + N // hop. With
    ``lld = "egemaps"`` each frame then carries openSMILE's 25 eGeMAPSv02
    low-level descriptors (:mod:`satn.lld`): (T, n_mels * (1 + deltas) + 25);
    ``lld = "compare"`` ComParE_2016's 65: (T, n_mels * (1 + deltas) + 65).
    These choices match librosa's ``melspectrogram(htk=False, norm="slaney",
    center=True, pad_mode="constant")``; torchaudio's ``MelSpectrogram``
    defaults (HTK scale, no norm, reflect padding) do not.

``spectrogram_segments`` (TACN's CNN front end, after Satt et al.)
    log power spectrogram (``seg_n_fft`` = 256 -> 129 bins, Hann window of 256,
    hop ``seg_hop`` = 128 = 8 ms, same padding and floor as above), cut into
    segments of ``seg_frames`` = 32 frames (~265 ms) starting every
    ``seg_stride`` frames. Output (n_segments, seg_frames, bins). Frames after
    the last whole segment are dropped; an utterance shorter than one segment
    is zero-padded (as audio, i.e. silence at ``log(log_floor)``) to exactly one.

Batching is exact: each item is zero-padded to the batch's longest, which is
what ``center=True`` constant padding puts there anyway, and deltas replicate
each item's own last frame, so a batch gives each item the values it gets alone
(up to float rounding, ~1e-6).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torchaudio.functional as AF

from satn.config import FeatureConfig, to_dict
from satn.devices import resolve_device
from satn.errors import InputError

# STFT frames computed at a time: a long recording's spectrogram is never whole in
# memory (30 minutes at a 10 ms hop: 180k frames x 257 bins x complex64 = 370 MB).
CHUNK_FRAMES = 4096


class FeatureError(InputError):
    """A waveform that cannot become features (too short, not 1-D, not finite)."""


class FeatureExtractor:
    """Batched feature extraction for one :class:`FeatureConfig`.

    ``extractor(waves)`` takes 1-D float waveforms at ``cfg.sample_rate``
    (numpy arrays or tensors, any lengths) and returns one float32 array per
    wave: (T, dim) for ``logmel``, (n_segments, seg_frames, bins) for
    ``spectrogram_segments``. Pass a batch of similar lengths for speed: the
    whole batch is padded to its longest item.

    ``dtype`` is the compute precision (outputs are float32 either way):
    float32 is the fast default and agrees with librosa to 6.4e-4 in log units
    at worst (quiet bands of frames with a wide dynamic range; median 1e-6);
    float64 is 2-3x slower on CPU and agrees to 2e-6 everywhere.
    """

    def __init__(
        self,
        cfg: FeatureConfig,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        # the config checked its own values (kind, window, bands) when it was made
        self.cfg = cfg
        self.device = resolve_device(device)
        # compute precision; outputs are float32 either way. float64 is 2-3x slower on CPU
        # but matches librosa (which runs its FFT in float64) to ~2e-6 on every frame.
        self.dtype = dtype
        if cfg.kind == "logmel":
            self.n_fft, self.win, self.hop = cfg.n_fft, cfg.win_length, cfg.hop_length
            f_max = cfg.f_max if cfg.f_max is not None else cfg.sample_rate / 2
            fbank = slaney_mel_fbanks(
                self.n_fft // 2 + 1, cfg.f_min, f_max, cfg.n_mels, cfg.sample_rate
            )
            self.fbank = torch.from_numpy(fbank).to(self.device, dtype)  # (n_fft // 2 + 1, n_mels)
        else:
            self.n_fft, self.win, self.hop = cfg.seg_n_fft, cfg.seg_n_fft, cfg.seg_hop
            self.fbank = None
        # periodic Hann, as librosa's get_window("hann", fftbins=True)
        self.window = torch.hann_window(self.win, device=self.device, dtype=dtype)
        self.lld = None
        if cfg.kind == "logmel" and cfg.lld != "none":
            from satn.lld import LldExtractor  # openSMILE, loaded only when asked for

            self.lld = LldExtractor(cfg.lld, cfg.sample_rate)

    # ------------------------------------------------------------ sizes

    @property
    def kind(self) -> str:
        return self.cfg.kind

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    def describe(self) -> dict:
        """The settings that make the features what they are (the store's key)."""
        return feature_settings(self.cfg)

    @property
    def min_samples(self) -> int:
        """Shortest waveform accepted: one analysis window (and openSMILE's pitch window
        with ``lld``)."""
        return max(self.win, self.lld.min_samples) if self.lld is not None else self.win

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """Shape of one output row: (dim,) for logmel, (seg_frames, bins) for segments."""
        return frame_shape(self.cfg)

    def stft_frames(self, n_samples: int) -> int:
        """STFT frames of a waveform of ``n_samples`` (center=True: 1 + N // hop)."""
        return 1 + n_samples // self.hop

    def frames(self, n_samples: int) -> int:
        """Rows of the output for ``n_samples`` samples: frames (logmel) or segments."""
        if n_samples < self.min_samples:
            raise FeatureError(
                f"audio too short: {n_samples} samples < one {self.min_samples}-sample window"
            )
        t = self.stft_frames(n_samples)
        if self.cfg.kind == "logmel":
            return t
        return 1 + max(t - self.cfg.seg_frames, 0) // self.cfg.seg_stride

    # ------------------------------------------------------------ compute

    def __call__(self, waves: Sequence[np.ndarray | torch.Tensor]) -> list[np.ndarray]:
        """Features of each waveform; see the class docstring for shapes."""
        if len(waves) == 0:
            return []
        batch, lengths = self._pad(waves)  # (B, N_max), (B,)
        with torch.no_grad():
            if self.cfg.kind != "logmel":
                return self._segments(batch, lengths)
            feats = self._logmel(batch, lengths)
        if self.lld is None:
            return feats
        # descriptors after the bands: (T, banded) | (T, n_lld) on the same frames
        return [np.concatenate([f, self.lld(batch[i, :n].to("cpu", torch.float32).numpy(),
                                            len(f), self.hop)], axis=1)
                for i, (f, n) in enumerate(zip(feats, lengths, strict=True))]

    def _pad(self, waves: Sequence[np.ndarray | torch.Tensor]) -> tuple[torch.Tensor, list[int]]:
        items = []
        for i, w in enumerate(waves):
            t = torch.as_tensor(w)
            if t.dim() != 1 or not t.is_floating_point():
                raise FeatureError(
                    f"wave {i}: expected 1-D float samples, got {t.dtype} of shape {tuple(t.shape)}"
                )
            n = t.shape[0]
            if n < self.min_samples:
                raise FeatureError(
                    f"wave {i}: audio too short: {n} samples < one {self.min_samples}-sample window"
                )
            if not torch.isfinite(t).all():
                raise FeatureError(f"wave {i}: non-finite samples (NaN or inf)")
            items.append(t)
        lengths = [t.shape[0] for t in items]
        n_max = max(lengths)
        if self.cfg.kind == "spectrogram_segments":
            # enough samples for one whole segment, so short items are zero-padded to one
            n_max = max(n_max, (self.cfg.seg_frames - 1) * self.hop)
        batch = torch.zeros(len(items), n_max, dtype=self.dtype)
        for i, t in enumerate(items):
            batch[i, : t.shape[0]] = t
        return batch.to(self.device), lengths

    def _chunked(self, batch: torch.Tensor, fn) -> torch.Tensor:
        """``fn`` of the power spectrogram (B, F, t), CHUNK_FRAMES frames at a time,
        concatenated along the last axis: (B, ..., T) with T = 1 + N // hop.

        Frame t covers samples [t*hop - n_fft//2, t*hop + n_fft//2) of the wave with
        zeros outside it (center=True, constant padding), so each chunk is cut from
        the wave with that margin, padded where it runs past an end, and framed
        without centring: the same frames as one whole-wave STFT.
        """
        n = batch.shape[1]
        total, half = self.stft_frames(n), self.n_fft // 2
        out = []
        for t0 in range(0, total, CHUNK_FRAMES):
            t1 = min(total, t0 + CHUNK_FRAMES)
            lo, hi = t0 * self.hop - half, (t1 - 1) * self.hop - half + self.n_fft
            seg = batch[:, max(lo, 0) : min(hi, n)]
            seg = torch.nn.functional.pad(seg, (max(0, -lo), max(0, hi - n)))
            spec = torch.stft(seg, self.n_fft, hop_length=self.hop, win_length=self.win,
                              window=self.window, center=False, return_complex=True)
            out.append(fn(spec.real.square() + spec.imag.square()))
        return torch.cat(out, dim=-1)

    def _logmel(self, batch: torch.Tensor, lengths: list[int]) -> list[np.ndarray]:
        def log_mel(power: torch.Tensor) -> torch.Tensor:  # (B, F, t) -> (B, M, t)
            mel = torch.matmul(power.transpose(1, 2), self.fbank)  # (B, t, n_mels)
            return torch.log(torch.clamp(mel, min=self.cfg.log_floor)).transpose(1, 2)

        static = self._chunked(batch, log_mel)  # (B, M, T)
        frames = torch.tensor([self.stft_frames(n) for n in lengths], device=static.device)
        parts = [static]
        x = static
        for _ in range(self.cfg.deltas):
            # replicate each item's own last frame past its end, so deltas near the end
            # see what they would see alone (compute_deltas replicates the batch's edge)
            x = AF.compute_deltas(hold_last(x, frames), win_length=self.cfg.delta_width)
            parts.append(x)
        feats = torch.cat(parts, dim=1).transpose(1, 2).to("cpu", torch.float32)  # (B, T, D)
        feats = feats.contiguous()
        return [feats[i, :t].numpy().copy() for i, t in enumerate(frames.tolist())]

    def _segments(self, batch: torch.Tensor, lengths: list[int]) -> list[np.ndarray]:
        logspec = self._chunked(
            batch, lambda power: torch.log(torch.clamp(power, min=self.cfg.log_floor))
        ).transpose(1, 2)  # (B, T, F)
        size, step = self.cfg.seg_frames, self.cfg.seg_stride
        # (B, n_seg_max, F, size) -> (B, n_seg_max, size, F)
        segs = logspec.unfold(1, size, step).transpose(2, 3).to("cpu", torch.float32).contiguous()
        return [segs[i, : self.frames(n)].numpy().copy() for i, n in enumerate(lengths)]


def feature_settings(cfg: FeatureConfig) -> dict:
    """``cfg`` as it enters a dataset key. ``lld`` is left out while it is "none", so
    the datasets built before it existed keep their keys (and are not built again)."""
    out = to_dict(cfg)
    if out.get("lld") == "none":
        del out["lld"]
    return out


def frame_shape(cfg: FeatureConfig) -> tuple[int, ...]:
    """Shape of one output row of ``cfg``: (dim,) for logmel, (seg_frames, bins) for segments."""
    if cfg.kind == "logmel":
        return (cfg.dim,)
    return (cfg.seg_frames, cfg.seg_n_fft // 2 + 1)


def slaney_mel_fbanks(
    n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int
) -> np.ndarray:
    """Slaney-scale, Slaney-normalised triangular mel filters, (n_freqs, n_mels) float64.

    The same filters as ``torchaudio.functional.melscale_fbanks(norm="slaney",
    mel_scale="slaney")`` and ``librosa.filters.mel(htk=False, norm="slaney")``,
    computed in float64: torchaudio builds them in float32, and the rounding of
    small edge weights alone moves log-mel values by up to 7e-5.
    """

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        # linear below 1 kHz, logarithmic above (Slaney's Auditory Toolbox)
        lin = 3.0 * f / 200.0
        log = 15.0 + 27.0 * np.log(np.maximum(f, 1e-10) / 1000.0) / np.log(6.4)
        return np.where(f >= 1000.0, log, lin)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return np.where(
            m >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (m - 15.0)), 200.0 * m / 3.0
        )

    freqs = np.linspace(0.0, sample_rate / 2, n_freqs)  # (F,)
    edges = mel_to_hz(
        np.linspace(hz_to_mel(np.float64(f_min)), hz_to_mel(np.float64(f_max)), n_mels + 2)
    )
    width = np.diff(edges)  # (M + 1,)
    ramps = freqs[None, :] - edges[:, None]  # (M + 2, F)
    up = ramps[:-2] / width[:-1, None]
    down = -ramps[2:] / width[1:, None]
    weights = np.maximum(0.0, np.minimum(up, down))  # (M, F)
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # Slaney norm: equal area per band
    return np.ascontiguousarray(weights.T)


def hold_last(x: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """(B, C, T) with each item's frames at t >= frames[b] replaced by its frame frames[b]-1."""
    t = torch.arange(x.shape[-1], device=x.device)
    idx = torch.minimum(t.unsqueeze(0), (frames - 1).unsqueeze(1))  # (B, T)
    return torch.gather(x, 2, idx.unsqueeze(1).expand(-1, x.shape[1], -1))


def as_channels(x: np.ndarray | torch.Tensor, n_mels: int) -> np.ndarray | torch.Tensor:
    """Static | delta | delta2 as channels: (..., T, C * n_mels) -> (..., C, T, n_mels).

    Works on numpy arrays and tensors (a view where possible); for the default
    config C = 3 and each channel is (T, 40).
    """
    *lead, t, d = x.shape
    if d % n_mels:
        raise FeatureError(f"feature width {d} is not a multiple of n_mels={n_mels}")
    c = d // n_mels
    y = x.reshape(*lead, t, c, n_mels)
    if isinstance(x, torch.Tensor):
        return y.transpose(-3, -2)
    return np.swapaxes(y, -3, -2)

"""Audio files -> 16 kHz mono float32 waveforms, with one clear error for every bad input.

Any file that soundfile (libsndfile) reads works: WAV, FLAC, OGG, AIFF, ...
Channels are averaged; other sample rates are resampled with soxr (HQ), the
converter used for the development corpora.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from satn.errors import InputError

# Sample rates a real recording has; anything else is a damaged header.
MIN_RATE, MAX_RATE = 1000, 768000


class AudioError(InputError):
    """An audio file that cannot be used: ``path`` says where, ``reason`` says why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def read_audio(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
    """Read an audio file as a mono float32 waveform at ``sample_rate``.

    Returns:
        (N,) float32, N >= 1, every sample finite; integer PCM is scaled to [-1, 1).

    Raises:
        AudioError: the file is missing, is not audio soundfile can decode, holds
            no samples, or holds NaN / inf samples.
    """
    p = Path(path)
    try:
        if not p.exists():
            raise AudioError(p, "file not found")
        if not p.is_file():
            raise AudioError(p, "not a file")
        if p.stat().st_size == 0:
            raise AudioError(p, "empty file (0 bytes)")
        with open(p, "rb") as f:  # permission problems get their own words, not libsndfile's
            # always_2d: (N, channels) whatever the file holds, so mono and stereo share a path
            wave, sr = sf.read(f, dtype="float32", always_2d=True)
    except OSError as e:
        raise AudioError(p, f"cannot open ({e.strerror or e})") from e
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as e:
        raise AudioError(p, f"cannot decode audio ({type(e).__name__}: {e})") from e
    if not MIN_RATE <= sr <= MAX_RATE:  # a corrupt header; resampling it could fill memory
        raise AudioError(p, f"implausible sample rate {sr} Hz (header damaged?)")
    if wave.shape[0] == 0 or wave.shape[1] == 0:
        raise AudioError(p, "no audio samples (empty file)")
    if not np.isfinite(wave).all():
        bad = int((~np.isfinite(wave)).sum())
        raise AudioError(p, f"{bad} non-finite sample(s) (NaN or inf)")
    mono = wave.mean(axis=1, dtype=np.float32) if wave.shape[1] > 1 else wave[:, 0]
    if sr != sample_rate:
        mono = soxr.resample(mono, sr, sample_rate, quality="HQ").astype(np.float32, copy=False)
        if mono.size == 0:
            raise AudioError(p, f"no samples left after resampling {sr} Hz -> {sample_rate} Hz")
    return np.ascontiguousarray(mono, dtype=np.float32)

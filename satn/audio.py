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
# Larger samples are no audio (float files hold [-1, 1]; even raw int16 values stay
# below 2**15), and from ~1e16 on a 512-point power spectrum overflows float32.
MAX_PEAK = 1e6
_BLOCK = 1 << 18  # frames decoded at a time (5.5 s at 48 kHz)


class AudioError(InputError):
    """An audio file that cannot be used: ``path`` says where, ``reason`` says why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def read_audio(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
    """Read an audio file as a mono float32 waveform at ``sample_rate``.

    The file is decoded, averaged to mono and resampled block by block, so memory
    grows with the output only, whatever the file's rate, channels or length (a
    30-minute 48 kHz stereo file needs its 16 kHz mono output, not 1 GB of input).

    Returns:
        (N,) float32, N >= 1, every sample finite; integer PCM is scaled to [-1, 1).

    Raises:
        AudioError: the file is missing, is not audio soundfile can decode, holds
            no samples, or holds NaN / inf or absurdly large samples.
    """
    p = Path(path)
    try:
        if not p.exists():
            raise AudioError(p, "file not found")
        if not p.is_file():
            raise AudioError(p, "not a file")
        if p.stat().st_size == 0:
            raise AudioError(p, "empty file (0 bytes)")
        # permission problems get their own words, not libsndfile's
        with open(p, "rb") as f, sf.SoundFile(f) as snd:
            return _decode(p, snd, sample_rate, p.stat().st_size)
    except AudioError:
        raise
    except OSError as e:
        raise AudioError(p, f"cannot open ({e.strerror or e})") from e
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as e:
        raise AudioError(p, f"cannot decode audio ({type(e).__name__}: {e})") from e


def _decode(p: Path, snd: sf.SoundFile, sample_rate: int, size: int) -> np.ndarray:
    """The body of :func:`read_audio`: blocks -> mono -> resampled, into one array."""
    sr = snd.samplerate
    if not MIN_RATE <= sr <= MAX_RATE:  # a corrupt header; resampling it could fill memory
        raise AudioError(p, f"implausible sample rate {sr} Hz (header damaged?)")
    if snd.channels < 1:
        raise AudioError(p, "no audio samples (empty file)")
    stream = None if sr == sample_rate else soxr.ResampleStream(
        sr, sample_rate, 1, dtype="float32", quality="HQ")  # equal to soxr.resample, in blocks
    # the header's length sizes the output (a header that claims more is trimmed below),
    # but no more than the file's size allows: a damaged count must not claim the memory
    frames = min(max(snd.frames, 0), 16 * size)
    out = np.empty(frames * sample_rate // sr + 64, np.float32)
    n = n_in = bad = 0
    peak = 0.0
    for block in snd.blocks(blocksize=_BLOCK, dtype="float32", always_2d=True):
        n_in += block.shape[0]
        finite = np.isfinite(block)
        if not finite.all():
            bad += int((~finite).sum())
            continue  # keep counting, so the reason says how many
        peak = max(peak, float(np.abs(block).max(initial=0.0)))
        mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
        if stream is not None:
            mono = stream.resample_chunk(mono, last=False)
        out, n = _append(out, n, mono)
    if n_in == 0:
        raise AudioError(p, "no audio samples (empty file)")
    if bad:
        raise AudioError(p, f"{bad} non-finite sample(s) (NaN or inf)")
    if peak > MAX_PEAK:  # its power spectrum would overflow float32 to inf
        raise AudioError(p, f"implausible sample values (peak {peak:.3g}; audio is in [-1, 1])")
    if stream is not None:
        out, n = _append(out, n, stream.resample_chunk(np.zeros(0, np.float32), last=True))
        if n == 0:
            raise AudioError(p, f"no samples left after resampling {sr} Hz -> {sample_rate} Hz")
    return out[:n]


def _append(out: np.ndarray, n: int, x: np.ndarray) -> tuple[np.ndarray, int]:
    if n + x.shape[0] > out.shape[0]:  # the header said less than the file holds
        out = np.concatenate([out[:n], np.empty(max(x.shape[0], n // 4 + 1), np.float32)])
    out[n : n + x.shape[0]] = x
    return out, n + x.shape[0]

"""What satn's features are checked against: a librosa reference and a test signal.

Shared by the feature tests and ``benchmarks/features_vs_librosa.py`` so that
both measure against one definition. librosa is a development dependency
(the ``dev`` extra); it is imported only when the reference is computed.
"""

from __future__ import annotations

import numpy as np


def speechlike(seconds: float = 2.0, seed: int = 0, sample_rate: int = 16000) -> np.ndarray:
    """Gliding harmonic voice in syllables, with pauses and a noise floor: (N,) float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 25))
    env = np.clip(np.sin(2 * np.pi * 2.5 * t), 0, None) ** 2
    return (0.3 * env * voiced + 1e-3 * rng.standard_normal(t.size)).astype(np.float32)


def librosa_logmel(y: np.ndarray, sample_rate: int = 16000, floor: float = 1e-10) -> np.ndarray:
    """SATN's features by librosa: (T, 120) static | delta | delta2.

    40 Slaney mel bands of a 512-point power spectrum (25 ms window, 10 ms hop,
    constant centre padding), natural log floored at ``floor``, regression
    deltas over 5 frames with edge replication.
    """
    import librosa

    mel = librosa.feature.melspectrogram(
        y=y, sr=sample_rate, n_fft=512, win_length=400, hop_length=160, n_mels=40, center=True,
        pad_mode="constant", power=2.0, htk=False, norm="slaney",
    )  # fmt: skip
    static = np.log(np.maximum(mel, floor))
    d1 = librosa.feature.delta(static, width=5, mode="nearest", axis=-1)
    d2 = librosa.feature.delta(d1, width=5, mode="nearest", axis=-1)
    return np.concatenate([static, d1, d2]).T

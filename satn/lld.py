"""Frame-level openSMILE descriptors on satn's log-mel frames (``features.lld``).

A log-mel frame holds band energies; pitch, its perturbation (jitter, shimmer),
the harmonics-to-noise ratio and the formants are in it only implicitly, and a
network trained on a few speakers does not learn to read them out. openSMILE's
eGeMAPSv02 low-level descriptors compute them per 10 ms frame; appended to the
log-mel frame, they give the network what the classical baselines' functionals
summarise. ComParE_2016's 65 descriptors (``lld = "compare"``) are the frames of
the functionals the strongest baseline reads: no formants, but voicing
probability, spectral shape and MFCCs beside pitch, jitter, shimmer and HNR.

openSMILE frames from the start of the wave (descriptor frame i starts at
i * 10 ms), satn's log-mel frames are centred (frame t at t * hop samples). Each
log-mel frame takes the descriptor frame whose centre is nearest its own, the
first or last one beyond the ends (openSMILE reports one window per row, the
pitch window for ComParE: its spectral columns then sit up to 2 frames early,
well inside a TCN's receptive field). Descriptors of unvoiced frames (F0, jitter,
formants) are 0, as openSMILE gives them.
"""

from __future__ import annotations

import numpy as np

from satn.config import LLD_SETS, OPENSMILE_SETS
from satn.features import FeatureError

# openSMILE's pitch window: a shorter wave gets NaN descriptors
MIN_SECONDS = 0.060


class LldExtractor:
    """One waveform -> (frames, n) float32 descriptors on the log-mel frame grid."""

    def __init__(self, name: str, sample_rate: int):
        import opensmile

        if name not in OPENSMILE_SETS:
            raise ValueError(f"features.lld must be one of {sorted(OPENSMILE_SETS)}, not {name!r}")
        self.name = name
        self.sample_rate = sample_rate
        self.smile = opensmile.Smile(
            feature_set=getattr(opensmile.FeatureSet, OPENSMILE_SETS[name]),
            feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
        self.min_samples = int(np.ceil(MIN_SECONDS * sample_rate))
        self.names: list[str] = list(self.smile.feature_names)
        if len(self.names) != LLD_SETS[name]:  # the config's dim counts on this number
            raise RuntimeError(f"openSMILE {OPENSMILE_SETS[name]} gives {len(self.names)} "
                               f"descriptors, satn expects {LLD_SETS[name]}")

    def __call__(self, wave: np.ndarray, frames: int, hop: int) -> np.ndarray:
        """``wave`` (N,) float samples -> (frames, n): descriptor rows for log-mel frames
        centred at ``t * hop`` samples, t = 0 .. frames - 1."""
        if len(wave) < self.min_samples:
            raise FeatureError(f"audio too short for openSMILE {OPENSMILE_SETS[self.name]} "
                               f"descriptors: {len(wave)} samples < {self.min_samples} "
                               f"({MIN_SECONDS * 1000:g} ms)")
        df = self.smile.process_signal(np.asarray(wave, dtype=np.float32), self.sample_rate)
        values = df.to_numpy(np.float32)  # (n_frames, n)
        if values.shape[0] == 0:
            raise FeatureError(f"audio too short for openSMILE {OPENSMILE_SETS[self.name]} "
                               f"descriptors: {len(wave)} samples")
        if not np.isfinite(values).all():
            raise FeatureError(f"openSMILE {OPENSMILE_SETS[self.name]} gave non-finite descriptors")
        starts = df.index.get_level_values("start").total_seconds().to_numpy()
        ends = df.index.get_level_values("end").total_seconds().to_numpy()
        first_centre = (starts[0] + ends[0]) / 2
        step = starts[1] - starts[0] if len(starts) > 1 else 1.0
        times = np.arange(frames) * hop / self.sample_rate
        rows = np.clip(np.rint((times - first_centre) / step), 0, len(values) - 1).astype(int)
        return values[rows]

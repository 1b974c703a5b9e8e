"""Utterance-level feature vectors for the classical baselines.

``egemaps`` / ``compare``: openSMILE's eGeMAPSv02 (88) and ComParE_2016 (6373)
functionals of each waveform, extracted through the feature store (cached and
keyed like log-mel, one row of D values per utterance). ``logmel_stats``: per band
statistics over time of satn's own cached log-mel features (mean, std and
percentiles); cheap, so computed from that dataset on each use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from satn.config import OPENSMILE_SETS, ExperimentConfig, RuntimeConfig
from satn.features import FeatureError

FEATURE_SETS = ("egemaps", "compare", "logmel_stats")
PERCENTILES = (5, 25, 50, 75, 95)


class OpenSmileExtractor:
    """Waveforms -> openSMILE functionals, one (1, D) float32 row each (a store ``Extractor``)."""

    def __init__(self, name: str, sample_rate: int = 16000):
        import opensmile

        if name not in OPENSMILE_SETS:
            raise ValueError(f"openSMILE feature set must be one of {sorted(OPENSMILE_SETS)}, "
                             f"not {name!r}")
        self.kind = name
        self.sample_rate = sample_rate
        self.feature_set = OPENSMILE_SETS[name]
        self.version = opensmile.__version__
        self.smile = opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, self.feature_set),
                                     feature_level=opensmile.FeatureLevel.Functionals)
        self.names: list[str] = list(self.smile.feature_names)
        self.frame_shape = (len(self.names),)
        # one 25 ms frame; openSMILE's pitch and jitter need more, and say so with NaN
        self.min_samples = int(0.025 * sample_rate)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "feature_set": self.feature_set, "level": "Functionals",
                "sample_rate": self.sample_rate, "opensmile": self.version}

    def __call__(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = []
        for i, w in enumerate(waves):
            w = np.asarray(w, dtype=np.float32)
            if w.ndim != 1 or w.shape[0] < self.min_samples:
                raise FeatureError(f"wave {i}: need 1-D audio of at least {self.min_samples} "
                                   f"samples, got shape {w.shape}")
            row = self.smile.process_signal(w, self.sample_rate).to_numpy(np.float32)
            if row.shape != (1, *self.frame_shape) or not np.isfinite(row).all():
                raise FeatureError(f"wave {i}: openSMILE {self.feature_set} gave "
                                   f"{'non-finite values' if row.size else 'no row'}")
            out.append(row)
        return out


def logmel_stats(x: np.ndarray) -> np.ndarray:
    """(T, D) frames -> (D * (2 + len(PERCENTILES)),): mean | std | percentiles, per band."""
    x = np.asarray(x, dtype=np.float64)
    parts = [x.mean(0), x.std(0), *np.percentile(x, PERCENTILES, axis=0)]
    return np.concatenate(parts)


@dataclass(frozen=True)
class UtteranceFeatures:
    """One vector per utterance: ``x`` (N, D) aligned with ``meta`` rows (index 0..N-1)."""

    name: str
    meta: pd.DataFrame
    x: np.ndarray
    uri: str  # the cached dataset they come from
    key: str


def utterance_features(cfg: ExperimentConfig, runtime: RuntimeConfig, name: str, *,
                       progress: bool = True,
                       echo: Callable[[str], None] = print) -> tuple[ExperimentConfig,
                                                                     UtteranceFeatures]:
    """Extract (or find cached) the feature set ``name`` of ``cfg``'s corpus."""
    from satn.prepare import prepare_dataset
    from satn.store import open_dataset

    if name not in FEATURE_SETS:
        raise ValueError(f"feature set must be one of {FEATURE_SETS}, not {name!r}")
    if name == "logmel_stats":
        if cfg.features.kind != "logmel":
            cfg = cfg.override({"features.kind": "logmel"})
        cfg, info = prepare_dataset(cfg, runtime, progress=progress, echo=echo)
        ds = open_dataset(info.uri)
        x = np.stack([logmel_stats(a) for a in ds.arrays()])
    else:
        extractor = OpenSmileExtractor(name, cfg.features.sample_rate)
        cfg, info = prepare_dataset(cfg, runtime, progress=progress, echo=echo,
                                    extractor=extractor)
        ds = open_dataset(info.uri)
        x = np.concatenate(ds.arrays()).astype(np.float64)  # each (1, D)
    return cfg, UtteranceFeatures(name, ds.meta, x, info.uri, info.key)

"""Speed perturbation: the training utterances again at speed factors f, as cached features.

Kaldi's speed perturbation (sox ``speed f``) plays the waveform f times as fast at the
same sample rate: an utterance of N samples becomes N / f samples long and every
frequency (pitch, formants) moves up by f. Here that is
``torchaudio.functional.resample(wave, orig_freq=round(sr * f), new_freq=sr)``: the
wave is read as if it had been sampled at sr * f and resampled to sr (so the factor
used is ``round(sr * f) / sr``, exact for 0.9 and 1.1 at any common rate).

Each factor's features are a feature dataset of their own (:mod:`satn.store`), built
from the rows of the original dataset (the same audio files and metadata) with ids
marked ``<id>@sp<f>``, beside the original in its features folder. The factor is part
of the extractor's description and so of the dataset key: nothing mixes, and a second
build, run or sweep trial finds the variant cached. An audio file that cannot be read
(or is too short once sped up) is reported in that variant's ``report.json`` and left
out, as in the original build. Only :func:`satn.folddata.prepare_folds` decides where the
rows go: the training side, never dev or test.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchaudio.functional as AF

from satn.config import ExperimentConfig, FeatureConfig, from_dict
from satn.corpora.base import CorpusLoad, Utterance
from satn.features import FeatureExtractor
from satn.space import SearchSpace
from satn.store import META_COLUMNS, FeatureDataset, build_dataset, open_dataset

MARK = "@sp"  # <id>@sp0.9: a perturbed copy of utterance <id>


def perturbed_id(uid: str, factor: float) -> str:
    return f"{uid}{MARK}{factor:g}"


def original_id(uid: str) -> str:
    """``<id>@sp0.9`` -> ``<id>``; an unmarked id is its own original."""
    return uid.rsplit(MARK, 1)[0] if MARK in uid else uid


def speed_change(wave: np.ndarray | torch.Tensor, factor: float, sample_rate: int) -> torch.Tensor:
    """(N,) samples at ``sample_rate`` -> (about N / factor,) samples at the same rate that
    play ``factor`` times as fast (tempo and pitch both change, as sox ``speed``)."""
    w = torch.as_tensor(wave, dtype=torch.float32)
    src = int(round(sample_rate * factor))
    if src == sample_rate:
        return w
    return AF.resample(w, orig_freq=src, new_freq=sample_rate)


class SpeedPerturbed:
    """A :class:`~satn.store.Extractor`: ``inner``'s features of each wave sped up by ``factor``."""

    def __init__(self, inner: FeatureExtractor, factor: float):
        self.inner, self.factor = inner, factor
        self.kind = f"{inner.kind}-sp{factor:g}"  # names the dataset folder
        self.sample_rate = inner.sample_rate
        self.min_samples = inner.min_samples  # a wave too short once sped up: FeatureError
        self.frame_shape = inner.frame_shape

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "speed": self.factor}

    def __call__(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self.inner([speed_change(w, self.factor, self.sample_rate) for w in waves])


def speed_variants(dataset: FeatureDataset, speeds: Sequence[float], *, device: str = "cpu",
                   progress: bool = False, echo: Callable[[str], None] = print
                   ) -> list[FeatureDataset]:
    """The perturbed copies of ``dataset``, one per factor other than 1 (built once, then cached).

    Every row of ``dataset`` (an utterance that gave features) is read again from its audio
    file; the variants sit in the same features folder, named
    ``{corpus_tag}-{kind}-sp{f}-{key}``.
    """
    factors = [f for f in dict.fromkeys(speeds) if round(f, 6) != 1.0]
    if not factors:
        return []
    manifest = dataset.manifest
    features = from_dict(FeatureConfig, manifest["feature_config"])
    meta = dataset.meta
    utts = [Utterance(**{c: row[c] for c in META_COLUMNS}) for row in meta.to_dict("records")]
    uri = dataset.uri.rstrip("/")
    out = posixpath.dirname(uri) if "://" in uri else str(Path(uri).parent)
    inner = FeatureExtractor(features, device=device)
    variants = []
    for f in factors:
        load = CorpusLoad(utterances=[_marked(u, f) for u in utts])
        info = build_dataset(load, features, out, corpus_tag=manifest["corpus_tag"],
                             device=device, progress=progress, extractor=SpeedPerturbed(inner, f))
        state = "cached" if info.cached else "written"
        echo(f"speed {f:g}: {info.n_rows} utterances at {info.uri} ({state}); "
             f"{info.n_problems} input problem(s) listed in {info.report_uri}")
        variants.append(open_dataset(info.uri))
    return variants


def sweep_factors(cfg: ExperimentConfig, space: SearchSpace) -> list[float]:
    """Every speed factor a trial of ``space`` around ``cfg`` can ask for (choices and grids of
    ``recipe.speeds``, and the fixed value), so that a sweep builds them all before its trials
    start: trials then find them cached, and no two processes build one dataset at once."""
    base = cfg.override(space.fixed)
    spec = space.params.get("recipe.speeds")
    values = spec.examples() if spec is not None else []
    configs = [base, *(base.override({"recipe.speeds": v}) for v in values)]
    return sorted({f for c in configs for f in c.recipe.speeds if round(f, 6) != 1.0})


def _marked(u: Utterance, factor: float) -> Utterance:
    return replace(u, id=perturbed_id(u.id, factor))

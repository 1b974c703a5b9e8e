"""Frame-level openSMILE descriptors on log-mel frames (``features.lld``)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from test_store import build, good_corpus

from satn.augment import spec_augment
from satn.config import LLD_SETS, ConfigError, FeatureConfig, to_dict
from satn.corpora.base import CorpusLoad, Utterance
from satn.features import FeatureError, FeatureExtractor, feature_settings
from satn.runner import CrossValidation
from satn.store import open_dataset

SR = 16000
# the F0 descriptor of each set, after the 120 log-mel values, in semitones
F0_SEMITONES = {
    "egemaps": (10, lambda v: v),                                      # F0semitoneFrom27.5Hz_sma3nz
    "compare": (0, lambda v: 12 * np.log2(np.maximum(v, 1e-3) / 27.5)),  # F0final_sma, Hz
}


def _glide(seconds: float, f0: float, f0_after: float | None = None, at: float = 0.5,
           seed: int = 0) -> np.ndarray:
    """A voiced-like wave: harmonics of f0 (jumping to ``f0_after`` at ``at`` of its length)."""
    n = int(seconds * SR)
    f = np.full(n, f0)
    if f0_after is not None:
        f[int(at * n):] = f0_after
    phase = 2 * np.pi * np.cumsum(f) / SR
    wave = sum(np.sin(k * phase) / k for k in range(1, 8))
    noise = np.random.default_rng(seed).standard_normal(n) * 1e-3
    return (0.2 * wave / np.abs(wave).max() + noise).astype(np.float32)


@pytest.fixture(scope="module", params=sorted(F0_SEMITONES))
def extractor(request):
    pytest.importorskip("opensmile")
    return FeatureExtractor(FeatureConfig(lld=request.param))


def test_every_descriptor_set_is_tested():
    assert set(F0_SEMITONES) == set(LLD_SETS) - {"none"}


def test_descriptors_follow_the_bands_on_the_log_mel_frames(extractor):
    plain = FeatureExtractor(FeatureConfig())
    for seconds in (0.07, 0.5, 1.33):
        wave = _glide(seconds, 150.0)
        (x,) = extractor([wave])
        (bands,) = plain([wave])
        n = LLD_SETS[extractor.cfg.lld]
        assert x.shape == (len(bands), 120 + n) == (len(bands), extractor.cfg.dim)
        np.testing.assert_array_equal(x[:, :120], bands)  # the bands are untouched
        assert np.isfinite(x).all()


def test_a_pitch_jump_lands_on_the_log_mel_frame_where_it_happens(extractor):
    # 150 Hz, then an octave up (12 semitones) at 1.0 s: log-mel frame 100 (10 ms hop)
    (x,) = extractor([_glide(2.0, 150.0, 300.0)])
    column, semitones = F0_SEMITONES[extractor.cfg.lld]
    f0 = semitones(x[:, 120 + column])
    assert np.median(f0[20:80]) == pytest.approx(np.median(f0[120:180]) - 12, abs=0.5)
    middle = (np.median(f0[20:80]) + np.median(f0[120:180])) / 2
    crossing = int(np.argmax(f0[60:140] > middle)) + 60
    # openSMILE smooths over 3 frames and reads pitch in 60 ms windows: within 2 frames
    assert abs(crossing - 100) <= 2


def test_a_batch_gives_each_wave_what_it_gets_alone(extractor):
    waves = [_glide(0.9, 120.0, seed=1), _glide(0.3, 220.0, seed=2), _glide(0.61, 180.0, seed=3)]
    together = extractor(waves)
    for w, x in zip(waves, together, strict=True):
        np.testing.assert_allclose(x, extractor([w])[0], atol=1e-5)


def test_a_wave_shorter_than_the_pitch_window_is_a_feature_error(extractor):
    assert extractor.min_samples == int(0.06 * SR)
    with pytest.raises(FeatureError, match="too short"):
        extractor([_glide(0.05, 150.0)])


def test_config_checks_and_width():
    cfg = FeatureConfig(lld="egemaps")
    assert (cfg.banded, cfg.dim) == (120, 145)
    assert FeatureConfig(lld="egemaps", n_mels=80, deltas=0).dim == 80 + 25
    assert FeatureConfig(lld="compare").dim == 120 + 65
    with pytest.raises(ConfigError, match="features.lld"):
        FeatureConfig(lld="pitch")
    with pytest.raises(ConfigError, match="features.lld.*spectrogram_segments"):
        FeatureConfig(lld="egemaps", kind="spectrogram_segments")


def test_dataset_keys_made_without_descriptors_stay_as_they_were():
    plain = feature_settings(FeatureConfig())
    assert "lld" not in plain
    assert plain == {k: v for k, v in to_dict(FeatureConfig()).items() if k != "lld"}
    assert feature_settings(FeatureConfig(lld="egemaps"))["lld"] == "egemaps"


def test_frequency_masks_never_touch_the_descriptors():
    torch.manual_seed(3)
    lengths = torch.tensor([40, 25])
    x = torch.rand(2, 40, 3 * 8 + 5) + 1  # 3 channels of 8 bands, then 5 descriptors
    y = spec_augment(x, lengths, time_masks=2, time_mask_frames=5, freq_masks=2,
                     freq_mask_bands=3, n_bands=8, banded=24)
    assert y.shape == x.shape
    freq_only = spec_augment(x, lengths, time_masks=0, time_mask_frames=5, freq_masks=2,
                             freq_mask_bands=3, n_bands=8, banded=24)
    assert torch.equal(freq_only[..., 24:], x[..., 24:])
    assert (freq_only[..., :24] == 0).any()
    for i, t in enumerate(lengths.tolist()):
        tail = y[i, :t, 24:]
        timed = (tail == 0).all(dim=1)  # frames a time mask took
        assert timed.any()
        # a descriptor row is either whole or masked whole, and only where the bands are
        assert torch.equal(tail[~timed], x[i, :t, 24:][~timed])
        assert (y[i, :t, :24][timed] == 0).all()
        assert torch.equal(y[i, t:], x[i, t:])
    with pytest.raises(ValueError, match="n_bands"):
        spec_augment(x, lengths, time_masks=0, time_mask_frames=5, freq_masks=1,
                     freq_mask_bands=3, n_bands=7, banded=24)


def test_training_masks_bands_per_channel_and_leaves_descriptors_to_time_masks():
    def bands(shape, cfg):
        return CrossValidation._bands(SimpleNamespace(frame_shape=shape), cfg)

    assert bands((145,), FeatureConfig(lld="egemaps")) == (40, 120)
    assert bands((120,), FeatureConfig()) == (40, 120)
    assert bands((80,), FeatureConfig()) == (40, None)  # frames of another width
    assert bands((32, 129), FeatureConfig(kind="spectrogram_segments")) == (None, None)


def test_the_store_keeps_good_files_and_reports_one_too_short_for_descriptors(tmp_path):
    corpus = good_corpus(tmp_path / "audio", n=4)
    short = tmp_path / "audio" / "short.wav"  # 40 ms: one log-mel window, no pitch window
    sf.write(short, _glide(0.04, 150.0), SR)
    load = CorpusLoad([*corpus.utterances, Utterance(id="z_short", path=str(short),
                                                     speaker="spk9", session="1", label="neu")], [])
    cfg = FeatureConfig(lld="egemaps")
    info = build(load, tmp_path / "store", cfg)
    assert info.n_problems == 1 and "too short" in info.problems[0].reason
    ds = open_dataset(info.uri)
    assert sorted(ds.meta["id"]) == sorted(u.id for u in corpus.utterances)
    assert tuple(ds.frame_shape) == (cfg.dim,)
    plain = build(load, tmp_path / "store", FeatureConfig())
    assert plain.uri != info.uri and plain.n_problems == 0  # keyed apart; 40 ms is enough

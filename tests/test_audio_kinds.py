"""Audio of every kind a real corpus holds, through read_audio and the feature store:
each file is processed (finite features, the right number of frames) or reported as a
problem naming the file and why; never a crash, and the other files still go through."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import satn.features
from satn.audio import AudioError, read_audio
from satn.config import FeatureConfig
from satn.corpora.base import CorpusLoad, Utterance
from satn.features import FeatureExtractor
from satn.store import build_dataset, open_dataset

SECONDS = 0.5


def tone(sr: int, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * SECONDS)) / sr
    x = amp * np.sin(2 * np.pi * 440 * t)
    return np.stack([x * (c + 1) / channels for c in range(channels)], axis=1)


def good_files(root: Path) -> dict[str, Path]:
    """name -> a file that must give features: every sample format, rate and width."""
    out = {}
    for sub in ("PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"):
        out[f"wav-{sub}"] = root / f"{sub}.wav"
        sf.write(out[f"wav-{sub}"], tone(16000), 16000, subtype=sub)
    for sub in ("PCM_S8", "PCM_16", "PCM_24"):
        out[f"flac-{sub}"] = root / f"{sub}.flac"
        sf.write(out[f"flac-{sub}"], tone(16000), 16000, subtype=sub)
    for sr in (8000, 11025, 22050, 32000, 44100, 48000, 88200, 96000):
        out[f"rate-{sr}"] = root / f"r{sr}.wav"
        sf.write(out[f"rate-{sr}"], tone(sr), sr, subtype="PCM_16")
    for ch in range(2, 9):
        out[f"channels-{ch}"] = root / f"c{ch}.flac"
        sf.write(out[f"channels-{ch}"], tone(48000, ch), 48000, subtype="PCM_24")
    out["all-zero"] = root / "zero.wav"
    sf.write(out["all-zero"], np.zeros(8000), 16000, subtype="PCM_16")
    out["clipped"] = root / "clipped.wav"
    sf.write(out["clipped"], np.clip(tone(16000, amp=4.0), -1, 1), 16000, subtype="PCM_16")
    out["float-over-1"] = root / "hot.wav"  # float files may go past full scale
    sf.write(out["float-over-1"], tone(16000, amp=3.0), 16000, subtype="FLOAT")
    cut = root / "claims_more.wav"  # the header claims twice the frames the file holds
    sf.write(cut, tone(16000), 16000, subtype="PCM_16")
    cut.write_bytes(cut.read_bytes()[: 44 + 2 * 4000])
    out["header-claims-more"] = cut
    return out


def bad_files(root: Path) -> dict[Path, str]:
    """file -> the words its problem must hold."""
    out = {}
    nan = tone(16000)
    nan[10] = np.nan
    sf.write(root / "nan.wav", nan, 16000, subtype="FLOAT")
    out[root / "nan.wav"] = "non-finite"
    inf = tone(16000).astype(np.float64)
    inf[20] = np.inf
    sf.write(root / "inf.wav", inf, 16000, subtype="DOUBLE")
    out[root / "inf.wav"] = "non-finite"
    sf.write(root / "huge.wav", tone(16000) * 1e30, 16000, subtype="DOUBLE")
    out[root / "huge.wav"] = "implausible sample values"
    good = root / "PCM_16.wav"
    (root / "header_cut.wav").write_bytes(good.read_bytes()[:30])
    out[root / "header_cut.wav"] = "cannot decode"
    (root / "header_only.wav").write_bytes(good.read_bytes()[:44])
    out[root / "header_only.wav"] = "no audio samples"
    (root / "zero_bytes.flac").write_bytes(b"")
    out[root / "zero_bytes.flac"] = "empty file (0 bytes)"
    sf.write(root / "zero_length.wav", np.zeros(0), 16000, subtype="PCM_16")
    out[root / "zero_length.wav"] = "no audio samples"
    (root / "noise.flac").write_bytes(np.random.default_rng(0).bytes(4000))
    out[root / "noise.flac"] = "cannot decode"
    sf.write(root / "too_short.wav", tone(16000)[:100], 16000, subtype="PCM_16")
    out[root / "too_short.wav"] = "too short"
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinds")
    return good_files(root), bad_files(root)


def test_every_kind_reads_as_mono_16k_or_says_why(files):
    good, bad = files
    for name, path in good.items():
        y = read_audio(path)
        expected = 4000 if name == "header-claims-more" else SECONDS * 16000
        assert y.dtype == np.float32 and y.ndim == 1 and np.isfinite(y).all(), name
        assert abs(y.size - expected) <= 1, (name, y.size)
        if name != "all-zero":
            assert 0.1 < np.abs(y).max() < 4, name
    for path, words in bad.items():
        if words == "too short":
            continue  # readable; too short for one window, the store's check
        with pytest.raises(AudioError) as e:
            read_audio(path)
        assert e.value.path == str(path) and words in e.value.reason, (path, e.value.reason)


def test_the_store_extracts_every_good_file_and_reports_every_bad_one(files, tmp_path):
    good, bad = files
    paths = [*good.values(), *bad]
    load = CorpusLoad([Utterance(f"u{i:02d}", str(p), "s", "1", "neu")
                       for i, p in enumerate(paths)])
    info = build_dataset(load, FeatureConfig(), str(tmp_path / "store"), corpus_tag="kinds",
                         progress=False, batch_size=4, shard_size=8)
    ds = open_dataset(info.uri)
    assert sorted(ds.meta["path"]) == sorted(map(str, good.values()))
    for i, row in ds.meta.iterrows():
        f = ds.features(i)
        assert np.isfinite(f).all() and f.shape == (row["n_frames"], 120)
        assert row["n_frames"] == 1 + read_audio(row["path"]).size // 160
    reasons = json.loads(Path(info.report_uri).read_text())
    assert {r["where"] for r in reasons} == set(map(str, bad))
    for r in reasons:
        assert bad[Path(r["where"])] in r["reason"], r


@pytest.mark.parametrize("kind", ["logmel", "spectrogram_segments"])
def test_long_audio_in_chunks_equals_the_whole(monkeypatch, kind):
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (16000, 9000, 4100)]
    ex = FeatureExtractor(FeatureConfig(kind=kind))
    whole = ex(waves)
    monkeypatch.setattr(satn.features, "CHUNK_FRAMES", 7)  # 101 frames -> 15 chunks
    chunked = ex(waves)
    for a, b in zip(whole, chunked, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_a_long_recording_is_batched_alone(tmp_path, monkeypatch):
    sizes = []
    real = FeatureExtractor.__call__
    monkeypatch.setattr(FeatureExtractor, "__call__",
                        lambda self, w: sizes.append([x.size for x in w]) or real(self, w))
    monkeypatch.setattr("satn.store.build.BATCH_SECONDS", 3)
    utts = []
    for i, seconds in enumerate([0.5, 0.5, 0.6, 0.6, 2.5]):
        path = tmp_path / f"{i}.wav"
        sf.write(path, 0.3 * np.sin(np.arange(int(seconds * 16000)) / 10), 16000)
        utts.append(Utterance(f"u{i}", str(path), "s", "1", "neu"))
    build_dataset(CorpusLoad(utts), FeatureConfig(), str(tmp_path / "store"), corpus_tag="b",
                  progress=False, batch_size=16)
    assert max(len(b) * max(b) for b in sizes) <= 3 * 16000  # padded audio per batch
    assert [len(b) for b in sizes] == [4, 1]


LONG_SCRIPT = """
import resource, sys
import numpy as np, soundfile as sf
from satn.audio import read_audio
from satn.config import FeatureConfig
from satn.features import FeatureExtractor
path = sys.argv[1]
ex = FeatureExtractor(FeatureConfig())
ex([np.zeros(16000, np.float32)])  # imports and first allocations before the baseline
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
base = rss()
wave = read_audio(path)
read = rss()
feats = ex([wave])[0]
print(base, read - base, rss() - base, wave.size, feats.shape[0], bool(np.isfinite(feats).all()))
"""


STORE_SCRIPT = """
import os, resource, sys
import numpy as np, soundfile as sf
from satn.config import FeatureConfig
from satn.corpora.base import CorpusLoad, Utterance
from satn.features import FeatureExtractor
from satn.store import build_dataset, open_dataset
path, tmp = sys.argv[1], sys.argv[2]
FeatureExtractor(FeatureConfig())([np.zeros(16000, np.float32)])
utts = [Utterance("long", path, "s", "1", "neu")]
for i in range(3):
    p = os.path.join(tmp, f"s{i}.wav")
    sf.write(p, 0.3 * np.sin(np.arange(16000) / (3 + i)), 16000)
    utts.append(Utterance(f"short{i}", p, "s", "1", "hap"))
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
base = rss()
info = build_dataset(CorpusLoad(utts), FeatureConfig(), os.path.join(tmp, "store"),
                     corpus_tag="l", progress=False)
ds = open_dataset(info.uri)
print(rss() - base, *(f"{i}={n}" for i, n in zip(ds.meta["id"], ds.meta["n_frames"])))
"""


@pytest.mark.slow
def test_a_30_minute_48k_stereo_file_reads_and_extracts_with_flat_memory(tmp_path):
    path = tmp_path / "long.wav"
    sr, minutes = 48000, 30
    with sf.SoundFile(path, "w", sr, 2, subtype="PCM_16") as f:
        for k in range(minutes * 6):  # 10 s at a time
            t = (np.arange(sr * 10) + k * sr * 10) / sr
            f.write(np.stack([0.3 * np.sin(2 * np.pi * 220 * t)] * 2, axis=1))
    out = subprocess.run([sys.executable, "-c", LONG_SCRIPT, str(path)], check=True,
                         capture_output=True, text=True).stdout.split()
    _, read_mb, total_mb = map(float, out[:3])
    n, frames, finite = int(out[3]), int(out[4]), out[5] == "True"
    assert n == minutes * 60 * 16000 and frames == 1 + n // 160 and finite
    output_mb = n * 4 / 2**20  # the 16 kHz mono float32 wave itself: 110 MB
    # decoding 330 MB of 48 kHz stereo took 1100 MB whole; block by block it is the output
    assert read_mb < 1.5 * output_mb, read_mb
    # features: the wave, its padded copy and ~5 copies of (180k x 120) float32 (86 MB)
    assert total_mb < 7 * output_mb, total_mb

    # the store, with short files beside it: all extracted; before blocks, chunks and
    # batch caps this took +4080 MB, the long file padding its batch neighbours
    out = subprocess.run([sys.executable, "-c", STORE_SCRIPT, str(path), str(tmp_path)],
                         check=True, capture_output=True, text=True).stdout.split()
    assert out[1:] == [f"long={frames}", "short0=101", "short1=101", "short2=101"]
    assert float(out[0]) < 10 * output_mb, out[0]


def test_a_file_name_that_is_no_utf8_is_a_problem_not_a_crash(tmp_path, caplog):
    good = tmp_path / "good.wav"
    sf.write(good, tone(16000), 16000)
    odd_dir = os.fsdecode(bytes(tmp_path) + b"/d\xe9")  # Latin-1 e-acute: no UTF-8
    os.mkdir(odd_dir)
    odd = os.path.join(odd_dir, "a.wav")
    Path(odd).write_bytes(good.read_bytes())
    from satn.corpora.base import Problem

    load = CorpusLoad([Utterance("a", odd, "s", "1", "neu"), Utterance("b", str(good), "s", "1",
                                                                      "neu")],
                      [Problem(os.fsdecode(b"/c/03-01-\xff.wav"), "name is not MM-...")])
    info = build_dataset(load, FeatureConfig(), str(tmp_path / "store"), corpus_tag="u",
                         progress=False)  # was: UnicodeEncodeError writing Parquet / report.csv
    assert info.n_rows == 1 and open_dataset(info.uri).meta["id"].tolist() == ["b"]
    assert [p.where for p in info.problems] == [os.fsdecode(b"/c/03-01-\xff.wav"), odd]
    assert "not UTF-8 text" in info.problems[1].reason
    csv_text = (Path(info.uri) / "report.csv").read_text()
    assert "\\udce9" in csv_text and "\\udcff" in csv_text
    # the warning names both, in text any UTF-8 log handler (a file, a worker's pipe) can write
    warned = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert len(warned) == 1 and "\\udce9" in warned[0] and "\\udcff" in warned[0]
    warned[0].encode("utf-8")

"""The Arrow feature dataset: round trip, plain readers, cache, atomicity, resume, bad inputs."""

import csv
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pds
import pytest
import soundfile as sf

from satn.config import FeatureConfig
from satn.corpora.base import CorpusLoad, Problem, Utterance
from satn.features import FeatureExtractor
from satn.store import (
    DatasetError,
    build_dataset,
    dataset_key,
    dataset_name,
    open_dataset,
)

SR = 16000


def write_wav(path: Path, seconds: float, seed: int, sr: int = SR, channels: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.05 * rng.standard_normal(t.size)
    data = np.stack([x, -x], axis=1) if channels == 2 else x
    sf.write(path, data.astype(np.float32), sr)
    return path


def good_corpus(root: Path, n: int = 7) -> CorpusLoad:
    """n short utterances with every kind of metadata value, one stereo 22.05 kHz file."""
    root.mkdir(parents=True, exist_ok=True)
    utts = []
    for i in range(n):
        sr, ch = (22050, 2) if i == 3 else (SR, 1)
        path = write_wav(root / f"u{i}.wav", 0.2 + 0.07 * i, seed=i, sr=sr, channels=ch)
        utts.append(
            Utterance(
                id=f"s{i % 2}_u{i:02d}",
                path=str(path),
                speaker=f"spk{i % 3}",
                session=f"{i % 2 + 1}",
                label=("neu", "hap", "sad", "ang")[i % 4],
                gender=(None, "F", "M")[i % 3],
                transcript=None if i % 2 else f"words {i}",
                improvised=(None, True, False)[i % 3],
                raw_label=("neu", "exc", "sad", "ang")[i % 4],
                corpus="toy",
            )
        )
    return CorpusLoad(utts[::-1], [])  # unsorted on purpose: the store sorts by id


@pytest.fixture
def corpus(tmp_path) -> CorpusLoad:
    return good_corpus(tmp_path / "audio")


@pytest.fixture
def calls(monkeypatch) -> list[int]:
    """Batch sizes passed to FeatureExtractor.__call__ (monkeypatched to count)."""
    seen: list[int] = []
    original = FeatureExtractor.__call__

    def counting(self, waves):
        seen.append(len(waves))
        return original(self, waves)

    monkeypatch.setattr(FeatureExtractor, "__call__", counting)
    return seen


def build(load, out, cfg=None, **kw):
    kw = {"corpus_tag": "toy", "progress": False, "batch_size": 3, "shard_size": 4, **kw}
    return build_dataset(load, cfg or FeatureConfig(), str(out), **kw)


def by_id(load: CorpusLoad) -> dict[str, Utterance]:
    return {u.id: u for u in load.utterances}


# ---------------------------------------------------------------- round trip


@pytest.mark.parametrize("kind", ["logmel", "spectrogram_segments"])
def test_round_trip(tmp_path, corpus, kind):
    cfg = FeatureConfig(kind=kind)
    info = build(corpus, tmp_path / "store", cfg)
    assert not info.cached and info.n_rows == 7 and info.n_problems == 0
    assert Path(info.uri).name == f"toy-{kind}-{info.key}"
    ds = open_dataset(info.uri)
    assert len(ds) == 7 and list(ds.meta.index) == list(range(7))
    assert ds.meta["id"].tolist() == sorted(by_id(corpus))  # shard order: sorted ids
    ex = FeatureExtractor(cfg)
    assert ds.frame_shape == ex.frame_shape
    from satn.audio import read_audio

    utts = by_id(corpus)
    for i, row in ds.meta.iterrows():
        u = utts[row["id"]]
        for field in ("path", "speaker", "session", "gender", "label", "raw_label", "corpus",
                      "transcript", "improvised"):  # fmt: skip
            # equal, and None stays None (not "None", not NaN)
            assert row[field] == getattr(u, field), field
            assert (row[field] is None) == (getattr(u, field) is None), field
        expected = ex([read_audio(u.path)])[0]
        got = ds.features(i)
        assert got.dtype == np.float32 and got.shape == expected.shape
        assert row["n_frames"] == expected.shape[0]
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    arrays = ds.arrays()
    assert len(arrays) == 7
    for i in (6, 0, 3):
        np.testing.assert_array_equal(ds.arrays([i])[0], arrays[i])
    np.testing.assert_array_equal(ds.arrays([-1])[0], arrays[6])
    with pytest.raises(IndexError):
        ds.arrays([7])


def test_metadata_none_values(tmp_path, corpus):
    meta = open_dataset(build(corpus, tmp_path / "store").uri).meta
    assert meta["transcript"].isna().sum() == sum(u.transcript is None for u in corpus.utterances)
    assert meta["gender"].isna().sum() == sum(u.gender is None for u in corpus.utterances)
    assert meta["improvised"].isna().sum() == sum(u.improvised is None for u in corpus.utterances)
    assert meta["n_frames"].dtype == np.int32


def test_manifest(tmp_path, corpus):
    info = build(corpus, tmp_path / "store")
    m = open_dataset(info.uri).manifest
    assert m["key"] == info.key and m["corpus_tag"] == "toy" and m["n_rows"] == 7
    assert m["feature_config"] == {**m["feature_config"], "kind": "logmel", "n_mels": 40}
    assert m["frame_shape"] == [120] and m["classes"] == ["ang", "hap", "neu", "sad"]
    assert set(m["versions"]) == {"satn", "torch", "torchaudio", "pyarrow", "numpy"}
    assert len(m["content_hash"]) == 64 and m["created"]
    assert sum(s["rows"] for s in m["shards"]) == 7 and len(m["shards"]) == 2


def test_pandas_and_pyarrow_read_the_data(tmp_path, corpus):
    ds = open_dataset(build(corpus, tmp_path / "store").uri)
    df = pd.read_parquet(ds.data_uri)
    assert len(df) == 7 and set(df.columns) >= {"id", "label", "n_frames", "features"}
    row = df.set_index("id").loc[ds.meta["id"][2]]
    np.testing.assert_array_equal(np.stack(row["features"]), ds.features(2))
    table = pds.dataset(ds.data_uri, format="parquet").to_table()
    assert table.num_rows == 7
    assert str(table.schema.field("features").type) == (
        "list<element: fixed_size_list<element: float>[120]>"
    )
    assert str(table.schema.field("improvised").type) == "bool"


def test_file_uri_and_relative_path(tmp_path, corpus, calls, monkeypatch):
    uri = (tmp_path / "store").as_uri()  # file:///...
    info = build(corpus, uri)
    assert info.uri.startswith("file://") and info.n_rows == 7
    assert len(open_dataset(info.uri)) == 7
    # the same dataset through a plain relative path: found, not rebuilt
    monkeypatch.chdir(tmp_path)
    n = len(calls)
    again = build(corpus, "store")
    assert again.cached and len(calls) == n and again.key == info.key
    assert len(open_dataset(again.uri)) == 7 and os.path.isabs(again.uri)


# ---------------------------------------------------------------- cache


def test_cache_hit_does_no_extraction(tmp_path, corpus, calls):
    first = build(corpus, tmp_path / "store")
    assert sum(calls) == 7
    second = build(corpus, tmp_path / "store")
    assert second.cached and second.uri == first.uri and second.n_rows == 7
    assert sum(calls) == 7  # nothing extracted


def test_changed_config_writes_a_new_dataset(tmp_path, corpus):
    a = build(corpus, tmp_path / "store")
    b = build(corpus, tmp_path / "store", FeatureConfig(n_mels=20))
    assert not b.cached and b.key != a.key and b.uri != a.uri
    assert open_dataset(a.uri).frame_shape == (120,)
    assert open_dataset(b.uri).frame_shape == (60,)
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == sorted(
        [Path(a.uri).name, Path(b.uri).name]
    )


def test_key_follows_listing_and_files(tmp_path, corpus):
    cfg = FeatureConfig()
    key = dataset_key(corpus, cfg)
    assert dataset_key(CorpusLoad(corpus.utterances[::-1]), cfg) == key  # order does not matter
    relabelled = [*corpus.utterances[:-1], _replace(corpus.utterances[-1], label="sad")]
    assert dataset_key(CorpusLoad(relabelled), cfg) != key
    assert dataset_key(corpus, FeatureConfig(deltas=1)) != key
    # an edited audio file (new size and mtime) changes the key
    path = Path(corpus.utterances[0].path)
    write_wav(path, 0.9, seed=99)
    assert dataset_key(corpus, cfg) != key


def _replace(u: Utterance, **kw) -> Utterance:
    import dataclasses

    return dataclasses.replace(u, **kw)


# ---------------------------------------------------------------- atomicity and resume


def test_interrupted_build_leaves_no_complete_dataset_and_resumes(tmp_path, corpus, monkeypatch):
    out = tmp_path / "store"
    cfg = FeatureConfig()
    # batch_size = shard_size = 2: one call per shard; 7 utterances -> 4 shards
    kw = {"batch_size": 2, "shard_size": 2}
    original = FeatureExtractor.__call__
    seen: list[int] = []

    def failing(self, waves):
        if len(seen) == 2:
            raise KeyboardInterrupt("stopped by the user")
        seen.append(len(waves))
        return original(self, waves)

    monkeypatch.setattr(FeatureExtractor, "__call__", failing)
    with pytest.raises(KeyboardInterrupt):
        build(corpus, out, cfg, **kw)
    name = dataset_name("toy", cfg, dataset_key(corpus, cfg))
    assert not (out / name).exists()
    assert not list(out.glob("*/manifest.json"))
    # plain readers of the store folder see no dataset (the work folder is hidden)
    assert [p.name for p in out.iterdir()] == [f".partial-{name}"]
    with pytest.raises(DatasetError, match="no manifest.json: the dataset at .* is incomplete"):
        open_dataset(str(out / name))

    seen.clear()

    def counting(self, waves):
        seen.append(len(waves))
        return original(self, waves)

    monkeypatch.setattr(FeatureExtractor, "__call__", counting)
    info = build(corpus, out, cfg, **kw)
    assert sum(seen) == 7 - 4  # the two finished shards were kept
    assert info.n_rows == 7 and not info.cached
    assert [p.name for p in out.iterdir()] == [name]

    # the resumed dataset is the same as one built in one go
    fresh = build(corpus, tmp_path / "fresh", cfg, **kw)
    a, b = open_dataset(info.uri), open_dataset(fresh.uri)
    assert a.manifest["content_hash"] == b.manifest["content_hash"]
    for x, y in zip(a.arrays(), b.arrays(), strict=True):
        np.testing.assert_array_equal(x, y)


def test_changed_shard_size_discards_the_partial_work(tmp_path, corpus, monkeypatch):
    out = tmp_path / "store"
    original = FeatureExtractor.__call__
    n = {"calls": 0}

    def failing(self, waves):
        n["calls"] += 1
        if n["calls"] == 2:
            raise RuntimeError("disk full")
        return original(self, waves)

    monkeypatch.setattr(FeatureExtractor, "__call__", failing)
    with pytest.raises(RuntimeError):
        build(corpus, out, batch_size=2, shard_size=2)
    monkeypatch.setattr(FeatureExtractor, "__call__", original)
    info = build(corpus, out, batch_size=2, shard_size=3)
    ds = open_dataset(info.uri)
    assert len(ds) == 7 and [s["rows"] for s in ds.manifest["shards"]] == [3, 3, 1]


def test_open_dataset_errors(tmp_path, corpus):
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(str(tmp_path / "nothing"))
    info = build(corpus, tmp_path / "store")
    (Path(info.uri) / "manifest.json").unlink()
    with pytest.raises(DatasetError, match="no manifest.json: the dataset at .* is incomplete"):
        open_dataset(info.uri)
    assert isinstance(DatasetError("x"), FileNotFoundError)


# ---------------------------------------------------------------- bad inputs


def test_bad_inputs_are_reported_and_skipped(tmp_path, corpus):
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    corrupt = bad_dir / "corrupt.wav"
    corrupt.write_bytes(np.random.default_rng(1).bytes(3000))
    empty = bad_dir / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), SR)
    nan = bad_dir / "nan.wav"
    x = np.full(SR // 2, 0.1, np.float32)
    x[123] = np.nan
    sf.write(nan, x, SR, subtype="FLOAT")
    short = bad_dir / "short.wav"
    sf.write(short, np.full(100, 0.1, np.float32), SR)
    missing = bad_dir / "missing.wav"
    bad = {
        corrupt: "cannot decode",
        empty: "no audio samples",
        nan: "non-finite",
        short: "too short",
        missing: "file not found",
    }
    utts = [
        Utterance(id=f"bad_{p.stem}", path=str(p), speaker="x", session="1", label="neu")
        for p in bad
    ]
    loader_problem = Problem("corpus/labels.txt:12", "no label for utterance q7")
    load = CorpusLoad(corpus.utterances + utts, [loader_problem])

    info = build(load, tmp_path / "store")
    assert info.n_rows == 7 and info.n_problems == 6 and len(info.problems) == 6
    ds = open_dataset(info.uri)
    assert sorted(ds.meta["id"]) == sorted(by_id(corpus))  # every good one, no bad one

    report = json.loads(Path(info.report_uri).read_text())
    reasons = {r["where"]: r["reason"] for r in report}
    assert reasons[loader_problem.where] == loader_problem.reason
    for path, reason in bad.items():
        assert reason in reasons[str(path)], (path, reasons.get(str(path)))
    with open(Path(info.uri) / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["where"]: r["reason"] for r in rows} == reasons

    again = build(load, tmp_path / "store")
    assert again.cached and again.n_problems == 6 and set(again.problems) == set(info.problems)


def test_duplicate_ids_are_reported(tmp_path, corpus):
    u = corpus.utterances[0]
    dup = _replace(u, path=str(write_wav(tmp_path / "zz_dup.wav", 0.3, seed=5)))
    info = build(CorpusLoad([*corpus.utterances, dup]), tmp_path / "store")
    assert info.n_rows == 7 and info.n_problems == 1
    assert "duplicate utterance id" in info.problems[0].reason


def test_all_inputs_bad_gives_an_empty_readable_dataset(tmp_path):
    load = CorpusLoad([Utterance("a", str(tmp_path / "no.wav"), "s", "1", "neu")])
    info = build(load, tmp_path / "store")
    assert info.n_rows == 0 and info.n_problems == 1
    ds = open_dataset(info.uri)
    assert len(ds) == 0 and ds.arrays() == [] and list(ds.meta.columns)[:2] == ["id", "path"]
    assert len(pd.read_parquet(ds.data_uri)) == 0


# ---------------------------------------------------------------- object storage


def test_store_without_directory_rename(tmp_path, corpus):
    """Object stores cannot rename a directory: the store copies file by file, manifest last."""
    fsspec = pytest.importorskip("fsspec")
    from fsspec.implementations.local import LocalFileSystem
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    class NoDirRename(LocalFileSystem):
        def mv(self, path1, path2, **kw):
            if self.isdir(path1):
                raise NotImplementedError("directories cannot be renamed here")
            return super().mv(path1, path2, **kw)

    assert fsspec  # imported for the skip above
    fs = PyFileSystem(FSSpecHandler(NoDirRename()))
    out = str(tmp_path / "bucket" / "features")
    info = build_dataset(
        corpus, FeatureConfig(), out, corpus_tag="toy", progress=False, filesystem=fs
    )
    ds = open_dataset(info.uri, filesystem=fs)
    assert len(ds) == 7 and ds.features(0).shape[1] == 120
    assert sorted(p.name for p in Path(out).iterdir()) == [Path(info.uri).name]
    again = build_dataset(
        corpus, FeatureConfig(), out, corpus_tag="toy", progress=False, filesystem=fs
    )
    assert again.cached


def test_item_the_extractor_rejects_is_reported_alone(tmp_path, corpus, monkeypatch):
    import satn.store.build

    target = sorted(u.path for u in corpus.utterances)[2]
    real = satn.store.build.read_audio

    def read(path, sample_rate):
        wave = real(path, sample_rate)
        if path == target:  # slipped past the reader: the extractor says no
            wave[5] = np.inf
        return wave

    monkeypatch.setattr(satn.store.build, "read_audio", read)
    info = build(corpus, tmp_path / "store", batch_size=7)
    assert info.n_rows == 6 and [p.where for p in info.problems] == [target]
    assert "non-finite" in info.problems[0].reason
    assert target not in set(open_dataset(info.uri).meta["path"])

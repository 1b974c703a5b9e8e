"""A full disk or an unwritable features folder during extraction: one clear error,
earlier datasets intact and readable, the partial work cleaned or resumable."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from pyarrow.fs import FSSpecHandler, PyFileSystem

from satn.config import DataConfig, FeatureConfig
from satn.corpora import load_corpus
from satn.corpora.base import CorpusLoad, Utterance
from satn.features import FeatureExtractor
from satn.store import StoreError, build_dataset, dataset_key, dataset_name, open_dataset

fsspec_local = pytest.importorskip("fsspec.implementations.local")


class FullAfter(fsspec_local.LocalFileSystem):
    """Local files, except that writing a file whose name holds ``full_at`` fails with
    ENOSPC (or ``error``) once some bytes are in: a disk that fills up mid-shard."""

    def __init__(self, full_at: str, error: int = errno.ENOSPC):
        super().__init__()
        self.full_at, self.error = full_at, error

    def _open(self, path, mode="rb", **kw):
        f = super()._open(path, mode, **kw)
        if "w" in mode and self.full_at in str(path):
            real_write, error = f.write, self.error

            def write(data):
                real_write(bytes(data)[:10])
                raise OSError(error, os.strerror(error), str(path))

            f.write = write
        return f

    def makedirs(self, path, exist_ok=False):  # every directory fsspec makes comes here
        if self.error == errno.EACCES:  # root may write anywhere, so the denial is simulated
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return super().makedirs(path, exist_ok=exist_ok)


def corpus(root: Path, n: int = 6) -> CorpusLoad:
    root.mkdir(parents=True, exist_ok=True)
    utts = []
    for i in range(n):
        path = root / f"u{i}.wav"
        sf.write(path, 0.3 * np.sin(np.arange(4000 + 500 * i) / (5 + i)), 16000)
        utts.append(Utterance(f"u{i}", str(path), f"s{i % 2}", "1", "neu"))
    return CorpusLoad(utts)


def build(load, out, cfg=None, fs=None):
    return build_dataset(load, cfg or FeatureConfig(), str(out), corpus_tag="t", progress=False,
                         shard_size=2, batch_size=2, filesystem=fs)


@pytest.fixture
def earlier(tmp_path):
    """A complete dataset already in the features folder, and its content."""
    load = corpus(tmp_path / "audio")
    info = build(load, tmp_path / "features", FeatureConfig(n_mels=20))
    return load, info, open_dataset(info.uri).arrays()


def assert_intact(info, arrays):
    ds = open_dataset(info.uri)
    assert len(ds) == len(arrays)
    for a, b in zip(ds.arrays(), arrays, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_full_disk_mid_build_is_one_clear_error_and_a_rerun_resumes(tmp_path, earlier):
    load, before, arrays = earlier
    out = tmp_path / "features"
    with pytest.raises(StoreError) as e:
        build(load, out, fs=PyFileSystem(FSSpecHandler(FullAfter("part-00001"))))
    msg = str(e.value)
    assert "\n" not in msg and f"cannot write features to {out}" in msg
    assert "No space left on device" in msg and "part-00001" in msg
    assert "1 finished shard(s) kept" in msg and "a rerun resumes" in msg
    assert_intact(before, arrays)
    partial = next(out.glob(".partial-*"))
    assert sorted(p.name for p in (partial / "data").iterdir()) == ["part-00000.parquet"]
    info = build(load, out)  # the disk has room again: shard 0 is kept, the rest done
    assert info.n_rows == 6 and not list(out.glob(".partial-*"))
    assert_intact(before, arrays)
    clean = build(load, tmp_path / "clean")
    for a, b in zip(open_dataset(info.uri).arrays(), open_dataset(clean.uri).arrays(),
                    strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_disk_full_before_any_shard_leaves_no_work_folder(tmp_path, earlier):
    load, before, arrays = earlier
    out = tmp_path / "features"
    with pytest.raises(StoreError, match="No space left on device") as e:
        build(load, out, fs=PyFileSystem(FSSpecHandler(FullAfter("plan.json"))))
    assert "kept" not in str(e.value)
    assert not list(out.glob(".partial-*"))
    assert_intact(before, arrays)


class FullWhileCopying(fsspec_local.LocalFileSystem):
    """An object store (no directory rename) whose disk fills while the finished
    dataset is copied into place."""

    def mv(self, path1, path2, **kw):
        if self.isdir(path1):
            raise NotImplementedError("directories cannot be renamed here")
        return super().mv(path1, path2, **kw)

    def cp_file(self, path1, path2, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path2))


def test_a_full_disk_while_moving_keeps_the_finished_dataset(tmp_path, earlier, monkeypatch):
    load, before, arrays = earlier
    out = tmp_path / "features"
    with pytest.raises(StoreError, match="the complete dataset is kept in .*a rerun moves it"):
        build(load, out, fs=PyFileSystem(FSSpecHandler(FullWhileCopying())))
    partial = next(out.glob(".partial-*"))
    assert (partial / "manifest.json").is_file()
    def no_extraction(self, waves):
        raise AssertionError("features extracted again")

    monkeypatch.setattr(FeatureExtractor, "__call__", no_extraction)
    info = build(load, out)  # the finished dataset is moved, nothing extracted again
    assert info.n_rows == 6 and not list(out.glob(".partial-*"))
    assert_intact(before, arrays)


def test_a_folder_without_write_permission_is_one_clear_error(tmp_path, earlier):
    load, before, arrays = earlier
    out = tmp_path / "features"
    fs = PyFileSystem(FSSpecHandler(FullAfter("plan.json", errno.EACCES)))
    with pytest.raises(StoreError, match=f"cannot write features to {out}: Permission denied"):
        build(load, out, fs=fs)
    assert_intact(before, arrays)


def test_a_features_path_through_a_file_is_one_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match=f"cannot write features to {tmp_path / 'file'}/sub"):
        build(corpus(tmp_path / "audio", 2), tmp_path / "file" / "sub")


# ---------------------------------------------------------------- the installed CLI

SATN = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "satn"


def cli(args, home: Path) -> subprocess.CompletedProcess:
    """The installed command in a user's bare environment (no test settings)."""
    env = {"PATH": f"{SATN.parent}:/usr/bin:/bin", "HOME": str(home)}
    return subprocess.run([str(SATN), *map(str, args)], cwd=home, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def manifest(tmp_path):
    for i in range(4):
        sf.write(tmp_path / f"{i}.wav", 0.3 * np.sin(np.arange(8000) / (4 + i)), 16000)
    m = tmp_path / "m.csv"
    m.write_text("path,speaker,label\n" + "".join(
        f"{i}.wav,s{i % 2},{lab}\n" for i, lab in enumerate(["neu", "hap", "neu", "hap"])))
    return m


ARGS = ["features", "--corpus", "manifest", "--no-progress", "--set", "data.classes=[neu, hap]"]


@pytest.mark.skipif(not SATN.exists(), reason="needs the installed CLI (.venv/bin/satn)")
def test_cli_a_full_disk_is_one_line_and_the_earlier_dataset_stays(tmp_path, manifest):
    load = load_corpus(DataConfig(corpus="manifest", root=str(manifest), classes=("neu", "hap")))
    out = tmp_path / "features"
    earlier = build_dataset(load, FeatureConfig(n_mels=20), str(out), corpus_tag="manifest",
                            progress=False)
    arrays = open_dataset(earlier.uri).arrays()
    # a real ENOSPC from the kernel: the first shard's temporary file is /dev/full
    name = dataset_name("manifest", FeatureConfig(), dataset_key(load, FeatureConfig()))
    partial = out / f".partial-{name}"
    (partial / "data").mkdir(parents=True)
    (partial / "progress").mkdir()
    plan = {"key": name.rsplit("-", 1)[1], "shard_size": 256, "n_shards": 1, "n_utts": 4}
    (partial / "plan.json").write_text(json.dumps(plan))
    (partial / "data" / ".tmp-part-00000.parquet").symlink_to("/dev/full")

    full = cli([*ARGS, "--root", manifest, "--out", out], tmp_path)
    assert full.returncode == 1 and "Traceback" not in full.stderr
    (line,) = full.stderr.strip().splitlines()
    assert line.startswith(f"Error: cannot write features to {out}: ") and "No space left" in line
    assert Path("/dev/full").is_char_device()
    assert not partial.exists()  # nothing finished: the work folder is gone
    assert_intact(earlier, arrays)


@pytest.mark.slow
@pytest.mark.skipif(not SATN.exists(), reason="needs the installed CLI (.venv/bin/satn)")
def test_cli_an_unwritable_features_folder_is_one_line(tmp_path, manifest):
    (tmp_path / "a-file").write_text("x")
    out = tmp_path / "a-file" / "features"
    bad = cli([*ARGS, "--root", manifest, "--out", out], tmp_path)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    (line,) = bad.stderr.strip().splitlines()
    assert line.startswith(f"Error: cannot write features to {out}: ")

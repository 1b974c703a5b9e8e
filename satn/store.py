"""The feature dataset: Parquet shards + manifest, on a local disk or object storage.

Layout of one dataset, ``{out}/{corpus_tag}-{kind}-{key}/``::

    manifest.json        written last: the dataset is complete iff it exists
    report.json          every input that was left out: where, reason
    report.csv           the same, for a spreadsheet
    data/part-00000.parquet, data/part-00001.parquet, ...

One Parquet row per utterance: the :class:`~satn.corpora.base.Utterance`
metadata, ``n_frames`` (int32) and ``features``, a
``list<fixed_size_list<float32, D>>`` of ``n_frames`` rows of
D = prod(frame_shape) values ((120,) for log-mel, (32, 129) flattened for
spectrogram segments). ``data/`` is plain Parquet: ``pd.read_parquet(uri +
"/data")`` and ``pyarrow.dataset.dataset(uri + "/data")`` read it without satn.

The key hashes the corpus listing (every utterance field plus each audio
file's size and mtime), the feature config and :data:`FEATURE_VERSION`, so a
rerun with the same inputs returns at once and any change writes a new
dataset. A build works in ``{out}/.partial-{name}/``: each shard is written to
a hidden temporary name and renamed, then its progress note; a rerun after an
interruption keeps the finished shards (shards are deterministic: utterances
sorted by id, ``shard_size`` per shard) and does the rest. Within a shard,
audio is read one shard ahead in a thread and featurised in batches of similar
length; rows keep id order. Two builds of the same dataset must not run at once.

All I/O goes through ``pyarrow.fs``: ``out`` may be a local path, a
``file://`` URI, or an ``s3://`` / ``gs://`` URI that cluster workers share.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as dt
import hashlib
import io
import json
import logging
import os
import posixpath
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from tqdm.auto import tqdm

import satn
from satn.audio import AudioError, read_audio
from satn.config import FeatureConfig, to_dict
from satn.corpora.base import CorpusLoad, Problem, Utterance
from satn.errors import InputError
from satn.features import FeatureError, FeatureExtractor

log = logging.getLogger(__name__)

# Bump when the features computed for the same config change (a bug fix, a new
# default inside the extractor): it is part of every dataset key.
FEATURE_VERSION = 1

MANIFEST = "manifest.json"
REPORT_JSON = "report.json"
REPORT_CSV = "report.csv"
DATA = "data"
_PROGRESS = "progress"  # in .partial-* only: one note per finished shard
_PLAN = "plan.json"  # in .partial-* only: how the shards were cut
BATCH_SECONDS = 320  # padded audio per feature batch (16 utterances of 20 s)

META_COLUMNS = (
    "id",
    "path",
    "speaker",
    "session",
    "gender",
    "label",
    "raw_label",
    "transcript",
    "improvised",
    "corpus",
)


class Extractor(Protocol):
    """What the store needs of a feature extractor (:class:`~satn.features.FeatureExtractor`,
    or another kind such as openSMILE functionals): waveforms at ``sample_rate`` -> one
    float32 array of shape (n_rows, *frame_shape) each, raising ``FeatureError`` for a
    wave it cannot use; ``describe()`` is the JSON-able settings that enter the key."""

    kind: str
    sample_rate: int
    min_samples: int
    frame_shape: tuple[int, ...]

    def describe(self) -> dict[str, Any]: ...

    def __call__(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]: ...


class DatasetError(FileNotFoundError):
    """A feature dataset that is missing or incomplete."""


class StoreError(InputError):
    """The features folder cannot take the dataset: a full disk, no permission to write,
    a path through a file. Other datasets in the folder are untouched."""


@dataclass(frozen=True)
class DatasetInfo:
    """What :func:`build_dataset` made (or found): where, how many rows, what was left out."""

    uri: str
    key: str
    n_rows: int
    n_problems: int
    cached: bool
    report_uri: str
    problems: tuple[Problem, ...] = ()


# ---------------------------------------------------------------- keys and schema


def dataset_key(load: CorpusLoad, cfg: FeatureConfig | dict[str, Any]) -> str:
    """Hash of the corpus listing, the loader's problems, the feature config and FEATURE_VERSION.

    ``cfg`` is a :class:`FeatureConfig` or another extractor's ``describe()``. The listing holds every :class:`Utterance` field and each audio file's size
    and mtime (None when missing), so an edited or replaced file changes the key.
    """
    listing = []
    for u in sorted(load.utterances, key=lambda u: (u.id, u.path)):
        try:
            st = os.stat(u.path)
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size, mtime = None, None
        listing.append({**dataclasses.asdict(u), "size": size, "mtime_ns": mtime})
    payload = {
        "listing": listing,
        "problems": sorted((p.where, p.reason) for p in load.problems),
        "features": to_dict(cfg) if isinstance(cfg, FeatureConfig) else cfg,
        "feature_version": FEATURE_VERSION,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def dataset_name(corpus_tag: str, cfg: FeatureConfig | str, key: str) -> str:
    """Directory name of a dataset: ``{corpus_tag}-{kind}-{key}`` (``cfg``: a config or a kind)."""
    kind = cfg if isinstance(cfg, str) else cfg.kind
    if not corpus_tag or any(c in corpus_tag for c in "/\\:") or corpus_tag.startswith("."):
        raise ValueError(f"corpus_tag must be a plain name, got {corpus_tag!r}")
    return f"{corpus_tag}-{kind}-{key}"


def schema(width: int) -> pa.Schema:
    """The Parquet schema; ``width`` = prod(frame_shape) values per feature row."""
    types = {name: pa.string() for name in META_COLUMNS} | {"improvised": pa.bool_()}
    return pa.schema(
        [(name, types[name]) for name in META_COLUMNS]
        + [("n_frames", pa.int32()), ("features", pa.list_(pa.list_(pa.float32(), width)))]
    )


# ---------------------------------------------------------------- build


def build_dataset(
    load: CorpusLoad,
    cfg: FeatureConfig,
    out: str,
    *,
    corpus_tag: str,
    device: str = "cpu",
    batch_size: int = 16,
    shard_size: int = 256,
    progress: bool = True,
    filesystem: pafs.FileSystem | None = None,
    extractor: Extractor | None = None,
) -> DatasetInfo:
    """Extract features of every utterance in ``load`` into a dataset under ``out``.

    Returns at once with ``cached=True`` when the complete dataset exists. Bad
    inputs (missing, unreadable or empty audio, NaN samples, too short for one
    frame) are skipped and reported, with the loader's own problems, in
    ``report.json`` / ``report.csv``; they never stop the build. Other errors
    (an interruption, a full disk) stop it; a rerun keeps the finished shards.
    A store that cannot be written (full disk, no permission) raises
    :class:`StoreError`: half-written files are removed, finished shards kept.

    Args:
        out: a local folder or URI (``file://``, ``s3://``, ``gs://``) holding datasets.
        corpus_tag: short corpus name that starts the dataset's directory name.
        filesystem: a configured ``pyarrow.fs`` filesystem (then ``out`` is a path in it);
            default: ``FileSystem.from_uri(out)``.
        extractor: another kind of features (e.g. openSMILE functionals) in place of
            ``FeatureExtractor(cfg, device)``; its ``kind`` names the dataset and its
            ``describe()`` replaces ``cfg`` in the key, so ``cfg`` is then unused.
    """
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be >= 1, got {batch_size}, {shard_size}")
    fs, root = _resolve(out, filesystem)
    described = extractor.describe() if extractor is not None else to_dict(cfg)
    key = dataset_key(load, described)
    name = dataset_name(corpus_tag, extractor.kind if extractor is not None else cfg, key)
    uri = _join_uri(out, name, filesystem)
    report_uri = _join_uri(uri, REPORT_JSON, None)
    partial = _join(root, f".partial-{name}")
    try:
        return _build(load, cfg, fs, root, name, key, uri, report_uri, partial, device,
                      batch_size, shard_size, progress, corpus_tag, extractor)
    except DatasetError:
        raise
    except OSError as e:  # audio errors became problems; this is the store itself
        raise StoreError(f"cannot write features to {out}: {_os_reason(e)}"
                         f"{_after_failure(fs, partial)}") from e


def _build(load, cfg, fs, root, name, key, uri, report_uri, partial, device, batch_size,
           shard_size, progress, corpus_tag, extractor=None) -> DatasetInfo:
    """The body of :func:`build_dataset` from the cache check on (its I/O may raise OSError)."""
    final = _join(root, name)
    if _exists(fs, _join(final, MANIFEST)):
        manifest = _read_json(fs, _join(final, MANIFEST))
        report = _join(final, REPORT_JSON)
        problems = (
            tuple(Problem(**p) for p in _read_json(fs, report)) if _exists(fs, report) else ()
        )
        log.info("features: %s is up to date (%d rows)", uri, manifest["n_rows"])
        return DatasetInfo(
            uri, key, manifest["n_rows"], manifest["n_problems"], True, report_uri, problems
        )
    if _is_dir(fs, final):  # no manifest: the leftover of an interrupted move
        fs.delete_dir(final)

    # before any work directory exists: a bad device or config leaves nothing behind
    if extractor is None:
        extractor = FeatureExtractor(cfg, device=device)

    utts, dup_problems = _unique_sorted(load.utterances)
    shards = [utts[i : i + shard_size] for i in range(0, len(utts), shard_size)] or [[]]
    plan = {"key": key, "shard_size": shard_size, "n_shards": len(shards), "n_utts": len(utts)}
    if not _exists(fs, _join(partial, MANIFEST)):
        _prepare_partial(fs, partial, plan)
        notes = _extract_shards(fs, partial, shards, extractor, batch_size, progress, name)
        problems = [*load.problems, *dup_problems]
        problems += [Problem(**p) for n in notes for p in n["problems"]]
        _write_report(fs, partial, problems)
        manifest = _manifest(name, corpus_tag, key, extractor, notes, len(problems))
        _write_bytes(fs, _join(partial, MANIFEST), _json_bytes(manifest))  # last: now complete
    else:  # finished, but interrupted before the move
        manifest = _read_json(fs, _join(partial, MANIFEST))
        problems = [Problem(**p) for p in _read_json(fs, _join(partial, REPORT_JSON))]
    for leftover in (_join(partial, _PROGRESS), _join(partial, _PLAN)):
        _delete(fs, leftover)
    _move_dir(fs, partial, final)

    n_rows = manifest["n_rows"]
    log.info("features: wrote %d utterances to %s", n_rows, uri)
    if problems:
        # a file name that is no UTF-8 holds surrogates, which a UTF-8 log handler cannot write
        shown = "; ".join(f"{p.where}: {p.reason}" for p in problems[:5]).encode(
            "utf-8", "backslashreplace").decode("utf-8")
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        log.warning(
            "features: %d input(s) left out, see %s: %s%s", len(problems), report_uri, shown, more
        )
    return DatasetInfo(uri, key, n_rows, len(problems), False, report_uri, tuple(problems))


def _os_reason(e: OSError) -> str:
    """One line: the system's words and the file (pyarrow puts both in its message)."""
    if e.strerror:
        return f"{e.strerror} ({e.filename})" if e.filename else e.strerror
    return " ".join(str(e).split()) or type(e).__name__


def _after_failure(fs: pafs.FileSystem, partial: str) -> str:
    """Clean up after a failed write: a note of what is kept for a rerun, or ''."""
    try:
        if not _is_dir(fs, partial):
            return ""
        if _exists(fs, _join(partial, MANIFEST)):  # failed while moving a finished build
            return f"; the complete dataset is kept in {partial}, a rerun moves it"
        progress = _join(partial, _PROGRESS)
        done = list(_files(fs, progress)) if _is_dir(fs, progress) else []
        if not done:
            fs.delete_dir(partial)  # nothing worth keeping
            return ""
        for path in _files(fs, partial):  # half-written files hold space and nothing else
            if posixpath.basename(path).startswith(".tmp-"):
                fs.delete_file(path)
        return f"; {len(done)} finished shard(s) kept in {partial}, a rerun resumes"
    except OSError:
        return ""


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # os.listdir's stand-ins for undecodable bytes
        return False
    return True


def _unique_sorted(utts: Sequence[Utterance]) -> tuple[list[Utterance], list[Problem]]:
    """Utterances sorted by id (the shard order), the second of a repeated id dropped, and
    those whose text Parquet cannot hold (a file name with a byte that is no UTF-8)."""
    kept: dict[str, Utterance] = {}
    problems = []
    for u in sorted(utts, key=lambda u: (u.id, u.path)):
        bad = [f for f in META_COLUMNS if isinstance(v := getattr(u, f), str) and not _utf8(v)]
        if bad:
            problems.append(Problem(u.path, f"{', '.join(bad)} not UTF-8 text (rename the file)"))
        elif u.id in kept:
            problems.append(
                Problem(u.path, f"duplicate utterance id {u.id!r} (kept {kept[u.id].path})")
            )
        else:
            kept[u.id] = u
    return list(kept.values()), problems


def _prepare_partial(fs: pafs.FileSystem, partial: str, plan: dict) -> None:
    """Reuse the work directory of an interrupted build of the same plan, else start it anew."""
    plan_path = _join(partial, _PLAN)
    if _is_dir(fs, partial):
        old = _read_json(fs, plan_path) if _exists(fs, plan_path) else None
        if old == plan:
            return
        log.info("features: discarding %s (made with another plan: %s)", partial, old)
        fs.delete_dir(partial)
    fs.create_dir(_join(partial, DATA), recursive=True)
    fs.create_dir(_join(partial, _PROGRESS), recursive=True)
    _write_bytes(fs, plan_path, _json_bytes(plan))


def _extract_shards(
    fs: pafs.FileSystem,
    partial: str,
    shards: list[list[Utterance]],
    extractor: Extractor,
    batch_size: int,
    progress: bool,
    name: str,
) -> list[dict]:
    """Write every shard not yet finished; return the progress note of every shard."""
    notes: list[dict | None] = []
    for k in range(len(shards)):
        note_path = _join(partial, _PROGRESS, f"part-{k:05d}.json")
        notes.append(_read_json(fs, note_path) if _exists(fs, note_path) else None)
    todo = [k for k, n in enumerate(notes) if n is None]
    if todo and len(todo) < len(shards):
        log.info(
            "features: resuming %s, %d of %d shards done",
            name,
            len(shards) - len(todo),
            len(shards),
        )
    min_samples = extractor.min_samples
    total = sum(len(shards[k]) for k in todo)
    desc = f"features {name}"
    with tqdm(total=total, disable=not progress, unit="utt", desc=desc) as bar:
        read = _read_ahead([shards[k] for k in todo], extractor.sample_rate, min_samples)
        with contextlib.closing(read):  # an interruption also stops the reader thread
            for k, (good, waves, problems) in zip(todo, read, strict=True):
                bar.update(len(problems))
                good, feats = _featurise(extractor, good, waves, problems, batch_size, bar)
                notes[k] = _write_shard(
                    fs, partial, k, good, feats, problems, tuple(extractor.frame_shape)
                )
    return notes  # type: ignore[return-value]


def _read_ahead(
    shards: list[list[Utterance]], sample_rate: int, min_samples: int
) -> Iterator[tuple[list[Utterance], list[np.ndarray], list[Problem]]]:
    """Read each shard's audio in a worker thread, one shard ahead of the extractor.

    Decoding and resampling release the GIL, so reading overlaps feature extraction.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="satn-read") as pool:
        ahead = None
        for i in range(len(shards)):
            current = ahead or pool.submit(_read_shard, shards[i], sample_rate, min_samples)
            ahead = None
            if i + 1 < len(shards):
                ahead = pool.submit(_read_shard, shards[i + 1], sample_rate, min_samples)
            yield current.result()


def _read_shard(
    utts: list[Utterance], sample_rate: int, min_samples: int
) -> tuple[list[Utterance], list[np.ndarray], list[Problem]]:
    """Waveforms of the usable utterances; the others become problems."""
    good, waves, problems = [], [], []
    for u in utts:
        try:
            wave = read_audio(u.path, sample_rate)
        except AudioError as e:
            problems.append(Problem(e.path, e.reason))
            continue
        if wave.shape[0] < min_samples:
            problems.append(
                Problem(
                    u.path,
                    f"audio too short: {wave.shape[0]} samples at {sample_rate} Hz "
                    f"< one {min_samples}-sample window",
                )
            )
            continue
        good.append(u)
        waves.append(wave)
    return good, waves, problems


def _featurise(
    extractor: Extractor,
    utts: list[Utterance],
    waves: list[np.ndarray],
    problems: list[Problem],
    batch_size: int,
    bar: tqdm,
) -> tuple[list[Utterance], list[np.ndarray]]:
    """Features of one shard, batched by length; what the extractor rejects joins ``problems``.

    Batches hold waves of similar length (little padding), at most ``batch_size``
    of them and at most BATCH_SECONDS of padded audio, so a long recording goes
    alone instead of padding its neighbours to its length; results come back in
    the order of ``utts``.
    """
    order = sorted(range(len(waves)), key=lambda i: (waves[i].shape[0], i))
    budget = BATCH_SECONDS * extractor.sample_rate
    batches: list[list[int]] = []
    for i in order:  # ascending lengths: the newest wave is the batch's longest
        if batches and len(batches[-1]) < batch_size \
                and (len(batches[-1]) + 1) * waves[i].shape[0] <= budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    feats: dict[int, np.ndarray] = {}
    for chunk in batches:
        try:
            feats.update(zip(chunk, extractor([waves[i] for i in chunk]), strict=True))
        except FeatureError:  # find the culprit(s) one by one; the rest of the batch is fine
            for i in chunk:
                try:
                    feats[i] = extractor([waves[i]])[0]
                except FeatureError as e:
                    problems.append(Problem(utts[i].path, str(e).removeprefix("wave 0: ")))
        bar.update(len(chunk))
    kept = [i for i in range(len(utts)) if i in feats]
    return [utts[i] for i in kept], [feats[i] for i in kept]


def _write_shard(
    fs: pafs.FileSystem,
    partial: str,
    k: int,
    utts: list[Utterance],
    feats: list[np.ndarray],
    problems: list[Problem],
    shape: tuple[int, ...],
) -> dict:
    """Write shard ``k`` (temp name, then rename), then its progress note; return the note."""
    width = int(np.prod(shape))
    table, digest = _shard_table(utts, feats, width)
    rel = f"{DATA}/part-{k:05d}.parquet"
    final = _join(partial, rel)
    tmp = _join(partial, DATA, f".tmp-part-{k:05d}.parquet")  # hidden from Parquet readers
    with fs.open_output_stream(tmp) as sink:
        # float features gain nothing from dictionaries or min/max statistics; split
        # float bytes + zstd: ~20% smaller than snappy (log-mel), reads as fast
        pq.write_table(
            table,
            sink,
            compression="zstd",
            compression_level=1,
            use_dictionary=list(META_COLUMNS),
            write_statistics=["id", "speaker", "session", "label", "n_frames"],
            use_byte_stream_split=["features.list.element.list.element"],
        )
    fs.move(tmp, final)
    note = {
        "file": rel,
        "rows": table.num_rows,
        "sha256": digest,
        "labels": sorted({u.label for u in utts if u.label is not None}),  # None: unlabelled
        "problems": [dataclasses.asdict(p) for p in problems],
    }
    _write_bytes(fs, _join(partial, _PROGRESS, f"part-{k:05d}.json"), _json_bytes(note))
    return note


def _shard_table(
    utts: list[Utterance], feats: list[np.ndarray], width: int
) -> tuple[pa.Table, str]:
    """Rows -> Arrow table, and a SHA-256 of its content (metadata, lengths, values)."""
    n_frames = np.array([f.shape[0] for f in feats], dtype=np.int32)
    flat = [np.ascontiguousarray(f, dtype=np.float32).reshape(-1) for f in feats]
    values = np.concatenate(flat) if flat else np.zeros(0, np.float32)
    offsets = np.zeros(len(feats) + 1, dtype=np.int32)
    np.cumsum(n_frames, out=offsets[1:])
    rows = pa.FixedSizeListArray.from_arrays(pa.array(values, pa.float32()), width)
    features = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), rows)
    columns = {name: [getattr(u, name) for u in utts] for name in META_COLUMNS}
    arrays = [pa.array(columns[f.name], f.type) for f in schema(width) if f.name in columns]
    table = pa.Table.from_arrays(
        [*arrays, pa.array(n_frames, pa.int32()), features], schema=schema(width)
    )
    h = hashlib.sha256(json.dumps(columns, sort_keys=True).encode())
    h.update(n_frames.tobytes())
    h.update(values.tobytes())
    return table, h.hexdigest()


def _write_report(fs: pafs.FileSystem, partial: str, problems: list[Problem]) -> None:
    rows = [dataclasses.asdict(p) for p in problems]
    _write_bytes(fs, _join(partial, REPORT_JSON), _json_bytes(rows))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["where", "reason"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    # a file name with a byte that is no UTF-8 is written as \xNN, not a crash
    _write_bytes(fs, _join(partial, REPORT_CSV), text.getvalue().encode(errors="backslashreplace"))


def _manifest(
    name: str, corpus_tag: str, key: str, extractor: Extractor, notes: list[dict], n_problems: int
) -> dict[str, Any]:
    import torch
    import torchaudio

    shards = [{k: n[k] for k in ("file", "rows", "sha256")} for n in notes]
    content = hashlib.sha256("".join(s["sha256"] for s in shards).encode()).hexdigest()
    return {
        "format": "satn-features",
        "feature_version": FEATURE_VERSION,
        "name": name,
        "corpus_tag": corpus_tag,
        "key": key,
        "kind": extractor.kind,
        "feature_config": extractor.describe(),
        "frame_shape": list(extractor.frame_shape),
        "classes": sorted({c for n in notes for c in n["labels"]}),
        "n_rows": sum(s["rows"] for s in shards),
        "n_problems": n_problems,
        "shards": shards,
        "content_hash": content,
        "report": REPORT_JSON,
        "versions": {
            "satn": satn.__version__,
            "torch": torch.__version__,
            "torchaudio": torchaudio.__version__,
            "pyarrow": pa.__version__,
            "numpy": np.__version__,
        },
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


# ---------------------------------------------------------------- read


class FeatureDataset:
    """A complete feature dataset, read through ``pyarrow.fs``.

    ``meta`` holds one row per utterance (index 0..n-1, no features);
    ``features(i)`` and ``arrays(rows)`` give float32 arrays of shape
    (n_frames, *frame_shape). Feature arrays are read-only views of the
    shard's Arrow buffer; each shard is read once, on first use, and kept.
    """

    def __init__(self, fs: pafs.FileSystem, path: str, uri: str, manifest: dict[str, Any]):
        self.fs, self.path, self.uri, self.manifest = fs, path, uri, manifest
        self.frame_shape: tuple[int, ...] = tuple(manifest["frame_shape"])
        self.data_uri = _join_uri(uri, DATA, None)
        rows = np.array([s["rows"] for s in manifest["shards"]], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(rows)])  # (n_shards + 1,)
        self._shards: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._meta: pd.DataFrame | None = None

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __repr__(self) -> str:
        return f"FeatureDataset({self.uri!r}, rows={len(self)}, frame_shape={self.frame_shape})"

    @property
    def meta(self) -> pd.DataFrame:
        """Metadata columns and ``n_frames``, one row per utterance, index 0..n-1.

        Text and ``improvised`` columns are object columns with None for missing
        values, as in the :class:`Utterance`; ``n_frames`` is int32.
        """
        if self._meta is None:
            cols = [*META_COLUMNS, "n_frames"]
            table = pa.concat_tables(self._read(s["file"], cols) for s in self.manifest["shards"])
            # object columns holding None where the Utterance had None (pandas' str dtype
            # would turn it into NaN), so `row.transcript is None` still reads right
            self._meta = pd.DataFrame(
                {
                    c: table.column(c).to_numpy()
                    if c == "n_frames"
                    else pd.Series(table.column(c).to_numpy(zero_copy_only=False), dtype=object)
                    for c in cols
                }
            )
        return self._meta

    def features(self, i: int) -> np.ndarray:
        """Features of row ``i``: (n_frames, *frame_shape) float32, read-only."""
        return self.arrays([i])[0]

    def arrays(self, rows: Sequence[int] | np.ndarray | None = None) -> list[np.ndarray]:
        """Features of ``rows`` (default: all), in that order: list of (n_frames, *frame_shape)."""
        n = len(self)
        idx = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"row index out of range for a dataset of {n} rows")
        idx = np.where(idx < 0, idx + n, idx)
        shard_of = np.searchsorted(self._starts, idx, side="right") - 1
        out = []
        for i, k in zip(idx.tolist(), shard_of.tolist(), strict=True):
            values, offsets = self._shard(k)
            j = i - int(self._starts[k])
            out.append(values[offsets[j] : offsets[j + 1]])
        return out

    def _shard(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Shard ``k``'s features as (total_frames, *frame_shape) values and (rows + 1,) offsets."""
        if k not in self._shards:
            col = self._read(self.manifest["shards"][k]["file"], ["features"]).column(0)
            arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
            offsets = arr.offsets.to_numpy()
            offsets = (offsets - offsets[0]).astype(np.int64)
            # list -> fixed_size_list -> float32: flatten() honours slices, .values would not
            flat = arr.flatten().flatten().to_numpy(zero_copy_only=False)
            self._shards[k] = (flat.reshape(-1, *self.frame_shape), offsets)
        return self._shards[k]

    def _read(self, rel: str, columns: list[str]) -> pa.Table:
        return pq.read_table(_join(self.path, rel), columns=columns, filesystem=self.fs)


def open_dataset(uri: str, filesystem: pafs.FileSystem | None = None) -> FeatureDataset:
    """Open the complete dataset at ``uri`` (a path or URI as returned in DatasetInfo.uri).

    Raises:
        DatasetError: the directory does not exist, or has no manifest.json (an
            interrupted or still-running build).
    """
    fs, path = _resolve(uri, filesystem)
    manifest_path = _join(path, MANIFEST)
    head, name = posixpath.split(path)
    partial = _join(head, f".partial-{name}")
    if not _is_dir(fs, path) and not _is_dir(fs, partial):
        raise DatasetError(f"no feature dataset at {uri}: the directory does not exist")
    if not _exists(fs, manifest_path):
        where = f" (an interrupted build left {partial})" if _is_dir(fs, partial) else ""
        raise DatasetError(
            f"no {MANIFEST}: the dataset at {uri} is incomplete{where}; rerun `satn features`"
        )
    manifest = _read_json(fs, manifest_path)
    if manifest.get("format") != "satn-features":
        raise DatasetError(f"{uri}/{MANIFEST} is not a satn feature manifest")
    missing = [s["file"] for s in manifest["shards"] if not _exists(fs, _join(path, s["file"]))]
    if missing:
        raise DatasetError(
            f"the dataset at {uri} lacks {len(missing)} shard(s) its manifest lists "
            f"(first: {missing[0]}); delete it and rerun `satn features`"
        )
    return FeatureDataset(fs, path, uri, manifest)


# ---------------------------------------------------------------- filesystem helpers


def _resolve(uri: str, filesystem: pafs.FileSystem | None) -> tuple[pafs.FileSystem, str]:
    if filesystem is not None:
        return filesystem, uri.rstrip("/")
    if "://" not in uri:  # a plain local path; from_uri wants it absolute
        uri = os.path.abspath(os.path.expanduser(uri))
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs, path.rstrip("/")


def _join(*parts: str) -> str:
    return posixpath.join(*parts)


def _join_uri(base: str, name: str, filesystem: pafs.FileSystem | None) -> str:
    if "://" in base or filesystem is not None:
        return base.rstrip("/") + "/" + name
    return os.path.join(os.path.abspath(os.path.expanduser(base)), name)


def _info(fs: pafs.FileSystem, path: str) -> pafs.FileInfo:
    return fs.get_file_info(path)


def _exists(fs: pafs.FileSystem, path: str) -> bool:
    return _info(fs, path).type != pafs.FileType.NotFound


def _is_dir(fs: pafs.FileSystem, path: str) -> bool:
    return _info(fs, path).type == pafs.FileType.Directory


def _delete(fs: pafs.FileSystem, path: str) -> None:
    kind = _info(fs, path).type
    if kind == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif kind == pafs.FileType.File:
        fs.delete_file(path)


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=False).encode()


def _read_json(fs: pafs.FileSystem, path: str) -> Any:
    with fs.open_input_stream(path) as f:
        return json.loads(f.read().decode())


def _write_bytes(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write to a hidden temporary name, then rename: readers never see half a file."""
    head, tail = posixpath.split(path)
    tmp = _join(head, f".tmp-{tail}")
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    fs.move(tmp, path)


def _files(fs: pafs.FileSystem, root: str) -> Iterator[str]:
    selector = pafs.FileSelector(root, recursive=True)
    for info in fs.get_file_info(selector):
        if info.type == pafs.FileType.File:
            yield info.path


def _move_dir(fs: pafs.FileSystem, src: str, dst: str) -> None:
    """Rename a directory; where the store cannot (object storage), copy file by file.

    The copy puts manifest.json last, so ``dst`` looks complete only when it is.
    """
    try:
        fs.move(src, dst)
        return
    except (NotImplementedError, OSError) as e:
        log.debug("features: directory rename failed (%s); copying file by file", e)
    files = sorted(_files(fs, src), key=lambda p: posixpath.basename(p) == MANIFEST)
    for path in files:
        target = _join(dst, posixpath.relpath(path, src))
        fs.create_dir(posixpath.dirname(target), recursive=True)
        fs.copy_file(path, target)
    fs.delete_dir(src)

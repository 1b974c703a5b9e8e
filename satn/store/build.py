"""Audio -> a feature dataset: the key, the shards, resuming an interrupted build, the
report of what was left out. Any :class:`Extractor` plugs in (log-mel, spectrogram
segments, openSMILE functionals, speed-perturbed copies)."""

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
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from tqdm.auto import tqdm

import satn
from satn.audio import AudioError, read_audio
from satn.config import FeatureConfig
from satn.corpora.base import CorpusLoad, Problem, Utterance
from satn.errors import InputError
from satn.features import FeatureError, FeatureExtractor, feature_settings
from satn.store.layout import (
    DATA,
    FEATURE_VERSION,
    MANIFEST,
    META_COLUMNS,
    REPORT_CSV,
    REPORT_JSON,
    DatasetError,
    delete,
    exists,
    is_dir,
    join,
    join_uri,
    json_bytes,
    move_dir,
    read_json,
    resolve,
    schema,
    walk_files,
    write_bytes,
)

log = logging.getLogger(__name__)

_PROGRESS = "progress"  # in .partial-* only: one note per finished shard
_PLAN = "plan.json"  # in .partial-* only: how the shards were cut
BATCH_SECONDS = 320  # padded audio per feature batch (16 utterances of 20 s)


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
        "features": feature_settings(cfg) if isinstance(cfg, FeatureConfig) else cfg,
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
    fs, root = resolve(out, filesystem)
    described = extractor.describe() if extractor is not None else feature_settings(cfg)
    key = dataset_key(load, described)
    name = dataset_name(corpus_tag, extractor.kind if extractor is not None else cfg, key)
    uri = join_uri(out, name, filesystem)
    report_uri = join_uri(uri, REPORT_JSON, None)
    partial = join(root, f".partial-{name}")
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
    final = join(root, name)
    if exists(fs, join(final, MANIFEST)):
        manifest = read_json(fs, join(final, MANIFEST))
        report = join(final, REPORT_JSON)
        problems = (
            tuple(Problem(**p) for p in read_json(fs, report)) if exists(fs, report) else ()
        )
        log.info("features: %s is up to date (%d rows)", uri, manifest["n_rows"])
        return DatasetInfo(
            uri, key, manifest["n_rows"], manifest["n_problems"], True, report_uri, problems
        )
    if is_dir(fs, final):  # no manifest: the leftover of an interrupted move
        fs.delete_dir(final)

    # before any work directory exists: a bad device or config leaves nothing behind
    if extractor is None:
        extractor = FeatureExtractor(cfg, device=device)

    utts, dup_problems = _unique_sorted(load.utterances)
    shards = [utts[i : i + shard_size] for i in range(0, len(utts), shard_size)] or [[]]
    plan = {"key": key, "shard_size": shard_size, "n_shards": len(shards), "n_utts": len(utts)}
    if not exists(fs, join(partial, MANIFEST)):
        _prepare_partial(fs, partial, plan)
        notes = _extract_shards(fs, partial, shards, extractor, batch_size, progress, name)
        problems = [*load.problems, *dup_problems]
        problems += [Problem(**p) for n in notes for p in n["problems"]]
        _write_report(fs, partial, problems)
        manifest = _manifest(name, corpus_tag, key, extractor, notes, len(problems))
        write_bytes(fs, join(partial, MANIFEST), json_bytes(manifest))  # last: now complete
    else:  # finished, but interrupted before the move
        manifest = read_json(fs, join(partial, MANIFEST))
        problems = [Problem(**p) for p in read_json(fs, join(partial, REPORT_JSON))]
    for leftover in (join(partial, _PROGRESS), join(partial, _PLAN)):
        delete(fs, leftover)
    move_dir(fs, partial, final)

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
        if not is_dir(fs, partial):
            return ""
        if exists(fs, join(partial, MANIFEST)):  # failed while moving a finished build
            return f"; the complete dataset is kept in {partial}, a rerun moves it"
        progress = join(partial, _PROGRESS)
        done = list(walk_files(fs, progress)) if is_dir(fs, progress) else []
        if not done:
            fs.delete_dir(partial)  # nothing worth keeping
            return ""
        for path in walk_files(fs, partial):  # half-written files hold space and nothing else
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
    plan_path = join(partial, _PLAN)
    if is_dir(fs, partial):
        old = read_json(fs, plan_path) if exists(fs, plan_path) else None
        if old == plan:
            return
        log.info("features: discarding %s (made with another plan: %s)", partial, old)
        fs.delete_dir(partial)
    fs.create_dir(join(partial, DATA), recursive=True)
    fs.create_dir(join(partial, _PROGRESS), recursive=True)
    write_bytes(fs, plan_path, json_bytes(plan))


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
        note_path = join(partial, _PROGRESS, f"part-{k:05d}.json")
        notes.append(read_json(fs, note_path) if exists(fs, note_path) else None)
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
    final = join(partial, rel)
    tmp = join(partial, DATA, f".tmp-part-{k:05d}.parquet")  # hidden from Parquet readers
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
    write_bytes(fs, join(partial, _PROGRESS, f"part-{k:05d}.json"), json_bytes(note))
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
    write_bytes(fs, join(partial, REPORT_JSON), json_bytes(rows))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["where", "reason"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    # a file name with a byte that is no UTF-8 is written as \xNN, not a crash
    write_bytes(fs, join(partial, REPORT_CSV), text.getvalue().encode(errors="backslashreplace"))


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

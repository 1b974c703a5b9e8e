"""A CSV or TSV manifest -> :class:`Utterance` records: any corpus, one row per file.

Columns (header names are matched without regard to case or surrounding spaces):

- required: ``path`` (relative paths are taken from the manifest's folder),
  ``speaker``, ``label`` (the raw label; :func:`map_label` gives the class);
- optional: ``id`` (default: the file stem; ids must be unique), ``session``
  (default: the speaker), ``gender`` (``F``/``M``/``female``/``male`` or empty),
  ``transcript``.

The delimiter follows the extension (``.tsv`` tab, ``.csv`` comma), else it is
sniffed. The text is UTF-8, or UTF-16 where a byte-order mark says so (a
spreadsheet's "Unicode text"). Rows keep the manifest's order; blank rows are
skipped. Problems and errors name ``<manifest>:<line>``.

A label that maps to no class is counted per label: as left out on purpose when
IEMOCAP or RAVDESS has it (``fru``, ``xxx``, ``cal``, ...) or the label map names it
(e.g. ``other: none``), else as unknown, and the first row of each unknown label
is a problem.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from satn.config import DEFAULT_CLASSES, ConfigError
from satn.corpora.base import CorpusLoad, Problem, Utterance, known_labels, map_label
from satn.corpora.iemocap import IEMOCAP_LABELS
from satn.corpora.ravdess import EMOTIONS

REQUIRED = ("path", "speaker", "label")
OPTIONAL = ("id", "session", "gender", "transcript")
_GENDERS = MappingProxyType({"f": "F", "female": "F", "m": "M", "male": "M", "": None})
_NO_MAP: Mapping[str, str] = MappingProxyType({})
_EXTRA = "\0extra"  # DictReader's key for values past the header's columns


def load_manifest(
    path: str | Path,
    *,
    classes: tuple[str, ...] = DEFAULT_CLASSES,
    label_map: Mapping[str, str] = _NO_MAP,
    corpus: str = "manifest",
) -> CorpusLoad:
    """Load the rows of the manifest at ``path`` whose label maps to a class.

    Raises :class:`ConfigError` when the file is missing, is not text, has no
    header or a required column is absent, or ids repeat. Rows with a missing file,
    an empty required value, values past the header's columns or an unknown gender
    become problems and are left out.
    """
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise ConfigError(f"{corpus} manifest {path} is not a file")
    label_map = dict(label_map)
    out = CorpusLoad()
    id_lines: dict[str, list[int]] = defaultdict(list)
    _read_rows(path, classes, label_map, corpus, out, id_lines)
    dups = {uid: lines for uid, lines in id_lines.items() if len(lines) > 1}
    if dups:
        listed = "; ".join(f"{uid} (lines {', '.join(map(str, ls))})" for uid, ls in dups.items())
        raise ConfigError(f"{path}: ids must be unique; repeated: {listed}")
    return out


def _read_rows(path: Path, classes: tuple[str, ...], label_map: dict[str, str], corpus: str,
               out: CorpusLoad, id_lines: dict[str, list[int]]) -> None:
    """Append the manifest's usable rows to ``out`` and its bad rows to ``out.problems``."""
    base = path.parent
    known = known_labels((*IEMOCAP_LABELS, *EMOTIONS.values()), label_map)
    fh = io.StringIO(_decode(path), newline="")  # newline="": csv sees \r\n, \n and \r as written
    reader = csv.DictReader(fh, delimiter=_delimiter(path, fh), restkey=_EXTRA)
    rows = _rows(path, reader)
    if reader.fieldnames is None:
        raise ConfigError(f"{path}: empty manifest (no header row)")
    header = [(c or "").strip().lower() for c in reader.fieldnames]
    repeated = sorted({c for c in header if c and header.count(c) > 1})
    if repeated:
        raise ConfigError(f"{path}:1: column(s) {repeated} appear more than once in the header")
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise ConfigError(f"{path}:1: missing required column(s) {missing}; found {header}")
    reader.fieldnames = header
    for line, row in rows:
        where = f"{path}:{line}"
        extra = row.pop(_EXTRA, [])
        values = {k: (row.get(k) or "").strip() for k in REQUIRED + OPTIONAL}
        if any(v.strip() for v in extra):  # empty ones are trailing delimiters: harmless
            out.problems.append(Problem(where, f"{len(header) + len(extra)} values for "
                                               f"{len(header)} columns (an unquoted delimiter?)"))
            continue
        if not any((v or "").strip() for v in row.values()):
            continue  # a blank row (only spaces or delimiters)
        empty = [k for k in REQUIRED if not values[k]]
        if empty:
            out.problems.append(Problem(where, f"empty {', '.join(empty)}"))
            continue
        audio = base / values["path"]  # an absolute path stays as it is
        uid = values["id"] or audio.stem
        id_lines[uid].append(line)
        label = map_label(values["label"], classes, label_map)
        if label is None:
            out.skip_label(values["label"], known, where)
            continue
        gender = values["gender"].lower()
        if gender not in _GENDERS:
            out.problems.append(Problem(where, f"unknown gender {values['gender']!r}"))
            continue
        try:
            found = audio.is_file()
        except OSError as e:  # e.g. a folder the user may not enter
            out.problems.append(Problem(where, f"cannot reach audio file {audio} "
                                               f"({e.strerror or e})"))
            continue
        if not found:
            out.problems.append(Problem(where, f"missing audio file {audio}"))
            continue
        out.utterances.append(
            Utterance(
                id=uid,
                path=str(audio),
                speaker=values["speaker"],
                session=values["session"] or values["speaker"],
                label=label,
                gender=_GENDERS[gender],
                transcript=values["transcript"] or None,
                raw_label=values["label"].lower(),
                corpus=corpus,
            )
        )


def _decode(path: Path) -> str:
    """The manifest's text; bytes that are not text name their line."""
    raw = path.read_bytes()
    utf16 = raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    encoding = "utf-16" if utf16 else "utf-8-sig"
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        before = raw[: e.start].decode(encoding, errors="replace")
        line = len(io.StringIO(before, newline="").readlines()) + before.endswith(("\n", "\r"))
        raise ConfigError(f"{path}:{line}: not {'UTF-16' if utf16 else 'UTF-8'} text "
                          f"({e.reason} at byte {e.start}); save the manifest as UTF-8") from e


def _rows(path: Path, reader: csv.DictReader):
    """(line, row) pairs; a row that csv cannot read is an error naming its line.

    ``line`` is where the row starts (a quoted value may span lines).
    """
    try:
        reader.fieldnames  # noqa: B018 - reads the header row, so errors there name line 1
    except csv.Error as e:
        raise ConfigError(f"{path}:1: unreadable header row ({e})") from e
    return _row_iter(path, reader)


def _row_iter(path: Path, reader: csv.DictReader):
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise ConfigError(f"{path}:{start}: unreadable row ({e})") from e
        yield start, row
        start = reader.line_num + 1


def _delimiter(path: Path, fh) -> str:
    """Tab for .tsv, comma for .csv, else sniffed from the start of the file."""
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".csv"):
        return "\t" if suffix == ".tsv" else ","
    sample = fh.read(8192)
    fh.seek(0)
    try:
        return csv.Sniffer().sniff(sample, delimiters=",\t;").delimiter
    except csv.Error as e:
        raise ConfigError(f"{path}: cannot tell the delimiter (use .csv or .tsv)") from e


AUDIO_SUFFIXES = (".wav", ".flac")


def write_folder_manifest(folder: str | Path, out: str | Path, label: str = "speech") -> Path:
    """A manifest of every audio file under ``folder``, all with one ``label``.

    For unlabeled speech (VQ-VAE pretraining): the speaker is the first folder
    below ``folder`` (``arctic/bdl/...`` -> ``bdl``), or the folder's own name for
    files at its top. Paths are absolute; ids are paths below ``folder`` with
    ``/`` as ``_`` so that two speakers' ``a0001.wav`` stay apart.
    """
    folder = Path(folder).expanduser().absolute()
    if not folder.is_dir():
        raise ConfigError(f"audio folder {folder} is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES
                   and p.is_file())
    if not files:
        raise ConfigError(f"audio folder {folder} holds no {'/'.join(AUDIO_SUFFIXES)} files")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "path", "speaker", "label"])
        for p in files:
            rel = p.relative_to(folder)
            speaker = rel.parts[0] if len(rel.parts) > 1 else folder.name
            w.writerow([rel.with_suffix("").as_posix().replace("/", "_"), str(p), speaker, label])
    return out
